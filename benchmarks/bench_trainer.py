"""Training throughput of the einnas trainer against a minimal hand-written PyTorch loop.

Both train the same module (rebuilt from the same factory and seed) on the same
tensors with the same optimiser, batch size, precision and number of epochs; runs are
interleaved (alternating which goes first) so machine load hits both alike, and each
side's best repeat is reported. einnas's figure is training samples per second of
training-step time (its per-epoch validation is included only in the end-to-end
median). Target: einnas within 10% of the plain loop. On a busy two-core machine, two
torch threads make timings swing by tens of percent; ``--threads 1`` is steadier.

    python benchmarks/bench_trainer.py                       # digits, a small CNN and resnet18, CPU
    python benchmarks/bench_trainer.py --models cnn --dataset mnist5k --device cuda
    python benchmarks/bench_trainer.py --models cnn,vit --budget-hooks --threads 1 --epochs 1

``--budget-hooks`` also trains with a time budget that never runs out, so the forward
hooks that check the budget inside a step are on, and prints their cost
(throughput with hooks / without; 100% means no measurable cost).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from einnas.evaluate import TrainConfig, load_dataset, resolve_device, train


def small_cnn(channels: int, classes: int):
    return lambda: nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
    )


def factory_for(name: str, dataset):
    """``(label, factory)`` for ``cnn`` or an ARCH (seed name or architecture string)."""
    if name == "cnn":
        if len(dataset.input_shape) != 3:
            raise SystemExit("the cnn model needs an image dataset")
        return "cnn", small_cnn(dataset.input_shape[0], dataset.num_classes)
    from einnas.grammar import build_network, resolve_arch

    arch = resolve_arch(name)
    label = name if len(name) <= 12 else arch.archid
    return label, lambda: build_network(arch, dataset.input_shape, dataset.num_classes)


def plain_loop(factory, dataset, config: TrainConfig, seed: int, device) -> float:
    """The reference: the shortest correct loop we would write by hand. Returns samples/s."""
    torch.manual_seed(seed)
    model = factory().to(device)
    x, y = (t.to(device) for t in dataset.train)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    amp = device.type == "cuda" and config.amp
    n, bs, seen, spent = len(y), config.batch_size, 0, 0.0
    for _ in range(config.epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, device=device)
        for i in range(0, n - 1, bs):  # like einnas, skip a last batch of one sample
            idx = perm[i:i + bs]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                out = model(x[idx])
            loss = F.cross_entropy(out.float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
        sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        spent += time.perf_counter() - t0
    return seen / spent


def _split_models(text: str) -> list[str]:
    """Split on commas outside brackets, so architecture strings can be listed."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return [p for p in parts + [current.strip()] if p]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--models", default="cnn,resnet18",
                        help="comma-separated: cnn and/or ARCH (seed name or architecture string)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--budget-hooks", action="store_true",
                        help="also measure the per-step cost of the in-step time-budget hooks")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.dataset)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    print(f"dataset {dataset.describe()}; device {device}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.epochs} epochs x {args.repeats} repeats, batch {args.batch_size}")
    print(f"{'model':<12} {'params':>11} {'plain samples/s':>16} {'einnas samples/s':>17} {'einnas/plain':>13} "
          f"{'einnas end-to-end s':>20}" + (f" {'with budget hooks':>18}" if args.budget_hooks else ""))
    for name in _split_models(args.models):
        label, factory = factory_for(name, dataset)
        params = sum(p.numel() for p in factory().parameters())
        warm = TrainConfig(epochs=1, batch_size=args.batch_size)
        plain_loop(factory, dataset, warm, 0, device)
        train(factory, dataset, warm, seed=0, device=device)
        plain, ours, total, hooked = [], [], [], []
        budget = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seconds=1e9)  # never runs out
        for r in range(args.repeats):
            if args.budget_hooks:
                hooked.append(train(factory, dataset, budget, seed=r, device=device).throughput)
            if r % 2:  # alternate the order so neither side always runs on a warmer machine
                plain.append(plain_loop(factory, dataset, config, r, device))
            result = train(factory, dataset, config, seed=r, device=device)
            if not result.ok:
                raise SystemExit(f"einnas training failed: {result.reason}: {result.detail}")
            ours.append(result.throughput)
            total.append(result.seconds)
            if not r % 2:
                plain.append(plain_loop(factory, dataset, config, r, device))
        # Best of the repeats, as timeit does: other processes only ever slow a run down.
        p, o = max(plain), max(ours)
        print(f"{label:<12} {params:>11,} {p:>16,.0f} {o:>17,.0f} {o / p:>12.1%} {statistics.median(total):>20.2f}"
              + (f" {max(hooked) / o:>17.1%}" if hooked else ""))
        assert math.isfinite(o)


if __name__ == "__main__":
    main()
