"""The seeds a search starts from on each built-in dataset: their scale, size and cost.

For every dataset (in its default ``--view``), prints the scale :func:`seeds_for`
picks at the search's default budget (``--max-params`` 1M, ``--max-activations``
250k, 8 epochs in 10 s) with the analytic parameters, activations, MACs per sample
and the estimated seconds per epoch (one thread); with ``--train`` it also trains each scaled seed
(``einnas train LABEL --dataset D`` with the same epochs, one thread) and prints
validation / test accuracy, wall seconds and measured training seconds per epoch, beside the reference architectures of
``grammar/references`` for that dataset.

    python benchmarks/bench_seeds.py                           # the table, no training
    nice -n 10 python benchmarks/bench_seeds.py --train --datasets digits,mnist1d
"""

from __future__ import annotations

import argparse
from pathlib import Path

from einnas.evaluate import TrainConfig, load_dataset, train
from einnas.grammar import build_network, resolve_arch
from einnas.grammar.scaling import epoch_seconds, estimate
from einnas.grammar.seeds import budget_for_training, seeds_for
from einnas.search.run import DEFAULT_EPOCHS, DEFAULT_MAX_ACTIVATIONS, DEFAULT_MAX_PARAMS, DEFAULT_SECONDS

REFERENCES = Path(__file__).parents[1] / "grammar" / "references"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="digits,mnist1d,mnist5k")
    parser.add_argument("--train", action="store_true", help="train each seed (and reference) once")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="the per-candidate budget")
    args = parser.parse_args()
    print(f"{'dataset':9} {'seed':20} {'params':>9} {'activ.':>9} {'MACs':>11} {'est s/ep':>8}"
          + (f" {'val':>7} {'test':>7} {'wall s':>7} {'s/ep':>6}" if args.train else ""))
    for name in args.datasets.split(","):
        dataset = load_dataset(name, view="auto")
        shape, train_size = dataset.input_shape, dataset.sizes()["train"]
        budget = budget_for_training(train_size, args.epochs, args.seconds, max_params=DEFAULT_MAX_PARAMS,
                                     max_activations=DEFAULT_MAX_ACTIVATIONS)
        rows = seeds_for(shape, dataset.num_classes, budget)
        rows += [(f"ref:{p.stem.split('_', 1)[1]}", resolve_arch(f"@{p}")) for p in sorted(REFERENCES.glob(f"{name}_*.arch"))]
        for label, arch in rows:
            figures = estimate(arch, shape, dataset.num_classes)
            per_epoch = epoch_seconds(figures, train_size)
            line = (f"{name:9} {label:20} {figures.params:>9,} {figures.activations:>9,} {figures.macs:>11,} "
                    f"{per_epoch:>8.2f}")
            if args.train:
                result = train(lambda: build_network(arch, shape, dataset.num_classes), dataset,
                               TrainConfig(epochs=args.epochs, threads=1), seed=0, test=True)
                measured = result.train_seconds / max(1, result.epochs_run)
                line += (f" {result.val_acc or 0:>7.2%} {result.test_acc or 0:>7.2%} {result.seconds:>7.1f}"
                         f" {measured:>6.2f}")
            print(line, flush=True)
        print(f"{'':9} budget: {budget.max_epoch_seconds:.2f} estimated s/epoch ({args.epochs} epochs of "
              f"{train_size} in {args.seconds:g} s)", flush=True)


if __name__ == "__main__":
    main()
