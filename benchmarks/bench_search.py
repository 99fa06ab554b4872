"""Regularised evolution against random sampling, at the same budget of evaluated candidates.

For each dataset and seed, both strategies run a full ``einnas search`` (same
grammar, limits, trainer and budget; RE starts from random samples, einspace's
RE(Scratch)). Printed: the best validation accuracy after a quarter, half and all
of the budget for each, their means over seeds, and the evaluations RE needs to
reach random sampling's final best (as a fraction of the budget; ``>1`` = never).
Runs alternate between strategies so machine load hits both alike.

    python benchmarks/bench_search.py                                 # digits + mnist1d, 30 trials, seeds 0,1,2
    python benchmarks/bench_search.py --trials 24 --seeds 0,1 --epochs 4 --seconds 6
    python benchmarks/bench_search.py --out runs/bench                # keep (and resume) the studies
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna

from einnas.search import Search, SearchConfig


def best_so_far(view) -> list[float]:
    """Best validation accuracy after each evaluated candidate (failures score 0)."""
    best, out = 0.0, []
    for record in view.records:
        if record.counted:
            best = max(best, record.value or 0.0)
            out.append(best)
    return out


def evaluations_to_reach(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v >= target), None)


def run_one(args, dataset: str, strategy: str, seed: int, folder: Path) -> tuple[list[float], int, float]:
    name = f"{dataset}-{strategy}-s{seed}"
    config = SearchConfig(
        dataset=dataset, trials=args.trials, seed=seed, strategy=strategy, epochs=args.epochs,
        seconds=args.seconds, threads=args.threads, storage=str(folder / f"{name}.journal"), study_name=name,
        out=str(folder / name), final=False,
    )
    start = time.monotonic()
    outcome = Search(config).run(finish=False)
    curve = best_so_far(outcome.view)
    return curve, outcome.view.failed, time.monotonic() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist1d")
    parser.add_argument("--trials", type=int, default=30, help="evaluated candidates per search (default 30)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget per candidate")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per candidate (default 1)")
    parser.add_argument("--out", help="folder for the studies (default: a temporary folder)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    marks = sorted({max(1, args.trials // 4), max(1, args.trials // 2), args.trials})
    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="einnas-bench-search-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"budget {args.trials} evaluated candidates, {args.epochs} epochs, {args.seconds:g} s each; "
          f"seeds {seeds}; studies in {folder}", flush=True)
    header = f"{'dataset':<8} {'strategy':<8} {'seed':>4} " + " ".join(f"{'best@' + str(m):>8}" for m in marks)
    print(header + f" {'failed':>6} {'seconds':>8}", flush=True)
    results: dict = {}
    for dataset in args.datasets.split(","):
        for seed in seeds:
            for strategy in (("re", "random") if seed % 2 == 0 else ("random", "re")):
                curve, failed, seconds = run_one(args, dataset, strategy, seed, folder)
                results[dataset, strategy, seed] = curve
                cells = " ".join(f"{100 * curve[m - 1]:>7.2f}%" for m in marks)
                print(f"{dataset:<8} {strategy:<8} {seed:>4} {cells} {failed:>6} {seconds:>8.1f}", flush=True)
    print("\nmean over seeds (best validation accuracy after N evaluations)")
    for dataset in args.datasets.split(","):
        for strategy in ("re", "random"):
            cells = " ".join(
                f"{100 * statistics.mean(results[dataset, strategy, s][m - 1] for s in seeds):>7.2f}%" for m in marks
            )
            print(f"{dataset:<8} {strategy:<8} {'':>4} {cells}")
    print("\nevaluations RE needs to reach random sampling's final best (fraction of the budget)")
    for dataset in args.datasets.split(","):
        ratios = []
        for seed in seeds:
            target = results[dataset, "random", seed][-1]
            needed = evaluations_to_reach(results[dataset, "re", seed], target)
            ratios.append(math.inf if needed is None else needed / args.trials)
        shown = ", ".join(">1" if math.isinf(r) else f"{r:.2f}" for r in ratios)
        finite = [r for r in ratios if not math.isinf(r)]
        summary = f"median {statistics.median(ratios):.2f}" if len(finite) > len(ratios) / 2 else "median >1"
        print(f"{dataset:<8} per seed: {shown}; {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
