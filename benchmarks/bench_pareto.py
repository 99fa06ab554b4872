"""Deployment search: hypervolume of the accuracy/latency front after N trained candidates.

Strategies (each ``--seeds`` seeds, on each dataset, every candidate trained to the full
budget: no multi-fidelity pruning, so "N candidates" means N trained networks):

* ``random``     random sampling, objectives accuracy,latency;
* ``re``         single-objective regularised evolution on accuracy (the default search;
                 its candidates' latencies are measured afterwards, the same way);
* ``pareto``     regularised evolution with NSGA-II selection, objectives accuracy,latency;
* ``pareto+s``   the same, surrogate-assisted: the shipped predictor ranks accuracy,
                 candidates are chosen by expected hypervolume improvement (search/ehvi.py).

Hypervolume: of the points (validation accuracy, latency ms) of each run's COMPLETE
trials, maximising accuracy and minimising latency, reference point (accuracy 0,
1.1 x the largest latency of any run on that dataset), divided by that latency (so 1 is
a perfect network at 0 ms). Also printed: the cost of measuring latency (export +
onnxruntime timing) as a share of a candidate's evaluation time, in these runs and at
the default budget (8 epochs, the default seconds), and the candidates the surrogate
needs to reach random search's final hypervolume (mean curves over the seeds).

    nice -n 10 python benchmarks/bench_pareto.py                 # the figures in docs/search.md
    python benchmarks/bench_pareto.py --trials 6 --seeds 1 --datasets digits   # a smoke run
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna

STRATEGIES = ("random", "re", "pareto", "pareto+s")


def run_one(dataset: str, strategy: str, seed: int, args, folder: Path):
    from einnas.search import Search, SearchConfig

    multi = strategy != "re"
    config = SearchConfig(
        dataset=dataset, trials=args.trials, seed=seed, strategy="random" if strategy == "random" else "re",
        init="random" if strategy != "random" else None, epochs=args.epochs, prune=False, final=False, workers=1,
        objectives="accuracy,latency" if multi else "accuracy", surrogate="default" if strategy == "pareto+s" else "none",
        out=str(folder / f"{dataset}-{strategy}-{seed}"), max_params=args.max_params,
    )
    start = time.monotonic()
    search = Search(config)
    outcome = search.run(finish=False)
    return search, outcome.view, time.monotonic() - start


def points_of(view, search, latency_cache: dict) -> list[tuple[int, float, float]]:
    """(trial number, accuracy, latency ms) of the COMPLETE trials; latency measured now when the run did not."""
    from einnas.evaluate.latency import arch_latency
    from einnas.search.records import LATENCY_MS

    out = []
    for r in view.completed:
        latency = r.attrs.get(LATENCY_MS)
        if latency is None:
            if r.archid not in latency_cache:
                arch = search.space.parse(r.arch)
                latency_cache[r.archid] = arch_latency(arch, search.space.input_shape, search.space.num_classes).ms
            latency = latency_cache[r.archid]
        out.append((r.number, r.value, latency))
    return out


def hv_curve(points, counted_numbers, ref_latency: float) -> list[float]:
    """Normalised hypervolume after each of the run's counted trials (in trial-number order)."""
    from einnas.search.pareto import hypervolume

    by_number = {n: (-a, lat / ref_latency) for n, a, lat in points}
    curve, front = [], []
    for number in counted_numbers:
        if number in by_number:
            front.append(by_number[number])
        curve.append(hypervolume(front, (0.0, 1.0)) if front else 0.0)
    return curve


def latency_share_default(dataset: str, n: int = 4) -> list[float]:
    """Latency measurement / evaluation time for ``n`` sampled candidates at the default budget."""
    from einnas.evaluate import TrainConfig, load_dataset
    from einnas.grammar import Limits, load_grammar
    from einnas.search.evaluators import TrainingEvaluator
    from einnas.search.objectives import ObjectiveEvaluator, Objectives
    from einnas.search.records import LATENCY_SECONDS
    from einnas.search.run import DEFAULT_EPOCHS, DEFAULT_MAX_ACTIVATIONS, DEFAULT_MAX_PARAMS, default_seconds
    from einnas.search.space import SearchSpace

    data = load_dataset(dataset)
    space = SearchSpace(load_grammar(), tuple(data.input_shape), data.num_classes,
                        Limits(max_params=DEFAULT_MAX_PARAMS, max_activations=DEFAULT_MAX_ACTIVATIONS))
    config = TrainConfig(epochs=DEFAULT_EPOCHS, seconds=default_seconds(data, DEFAULT_EPOCHS), threads=1)
    evaluator = ObjectiveEvaluator(TrainingEvaluator(data, config, device="cpu"), Objectives(("accuracy", "latency")),
                                   data.input_shape, data.num_classes)
    rng, shares = random.Random(0), []
    for i in range(n):
        e = evaluator.evaluate(space.sample(rng), i)
        if LATENCY_SECONDS in e.extra and e.seconds > 0:
            shares.append(e.extra[LATENCY_SECONDS] / e.seconds)
    return shares


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,mnist1d")
    parser.add_argument("--trials", type=int, default=12, help="trained candidates per run (default 12)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per candidate (default 2)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-params", type=int, default=200_000, help="largest candidate (default 200,000)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from einnas.search import assisted
    from einnas.search.records import LATENCY_SECONDS

    assisted._load = functools.lru_cache(maxsize=None)(assisted._load)  # load the predictor once, not per run
    strategies = args.strategies.split(",")
    began = time.monotonic()
    print(f"bench_pareto: {args.trials} trained candidates per run, {args.epochs} epochs, seeds 0..{args.seeds - 1}, "
          f"max params {args.max_params:,}, no pruning", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            runs, latency_cache, shares = {}, {}, []
            for strategy in strategies:
                for seed in range(args.seeds):
                    search, view, seconds = run_one(dataset, strategy, seed, args, Path(tmp))
                    pts = points_of(view, search, latency_cache)
                    counted = [r.number for r in view.records if r.counted]
                    runs[strategy, seed] = (pts, counted, seconds)
                    shares += [r.attrs[LATENCY_SECONDS] / r.seconds for r in view.completed
                               if r.attrs.get(LATENCY_SECONDS) and r.seconds]
                    print(f"  {dataset} {strategy:9s} seed {seed}: {len(pts)} complete of {len(counted)}, "
                          f"{seconds:.0f} s", file=sys.stderr, flush=True)
            ref = 1.1 * max(lat for pts, _, _ in runs.values() for _, _, lat in pts)
            curves = {key: hv_curve(pts, counted, ref) for key, (pts, counted, _) in runs.items()}
            print(f"\n{dataset}: hypervolume (accuracy x latency, reference latency {ref:.3f} ms) after N candidates")
            print(f"{'strategy':10s} {'N/2':>14s} {'N':>14s}  per seed at N          s/run")
            mean_curves = {}
            for strategy in strategies:
                finals = [curves[strategy, s][-1] for s in range(args.seeds)]
                halves = [curves[strategy, s][len(curves[strategy, s]) // 2 - 1] for s in range(args.seeds)]
                length = min(len(curves[strategy, s]) for s in range(args.seeds))
                mean_curves[strategy] = [statistics.mean(curves[strategy, s][k] for s in range(args.seeds))
                                         for k in range(length)]
                sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
                secs = statistics.mean(runs[strategy, s][2] for s in range(args.seeds))
                print(f"{strategy:10s} {statistics.mean(halves):14.4f} {statistics.mean(finals):8.4f} ±{sd:.3f}  "
                      f"{' '.join(f'{f:.3f}' for f in finals):22s} {secs:5.0f}")
            if "random" in mean_curves:
                target = mean_curves["random"][-1]
                for strategy in strategies:
                    reach = next((k + 1 for k, v in enumerate(mean_curves[strategy]) if v >= target), None)
                    print(f"  {strategy} reaches random's final hypervolume {target:.4f} after "
                          f"{reach if reach else 'more than ' + str(len(mean_curves[strategy]))} candidates")
            if shares:
                print(f"  latency measurement share of a candidate's evaluation ({args.epochs} epochs): "
                      f"median {statistics.median(shares):.1%}, max {max(shares):.1%} ({len(shares)} candidates)")
            default = latency_share_default(dataset)
            if default:
                print(f"  at the default budget (8 epochs): median {statistics.median(default):.1%}, "
                      f"max {max(default):.1%} ({len(default)} sampled candidates)")
    print(f"\ntotal {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
