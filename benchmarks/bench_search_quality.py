"""Search quality against wall clock: random, RE, RE + surrogate, RE(Mix) (+ surrogate), with and without
multi-fidelity, beside a hand-designed reference trained with the same final protocol.

Each run is one ``einnas search`` (the CLI, as a user runs it: default workers, budget
and rungs) with ``--timeout T`` on a fresh study; printed per (dataset, strategy,
multi-fidelity): the best validation accuracy of a full-budget candidate after T/4,
T/2 and T (wall clock since the study's first trial), the final test accuracy (the
best retrained on train + valid for 4 x epochs, or the epochs of those that fit in what
``--timeout`` leaves, since it covers the whole command), trials evaluated (pruned), the wall
clock — means over ``--seeds``. The reference row trains the reference architecture
with ``einnas train ARCH --final --epochs 4xE`` (the same final protocol).

References: ``--reference DATASET=ARCH`` (repeatable; ARCH as ``einnas train`` takes it:
a string, ``@file`` or a seed name). Without one, ``grammar/references/DATASET_*.arch``
files are used (the 6-layer CNN of issue 14 for mnist5k).

    python benchmarks/bench_search_quality.py --datasets mnist5k --strategies re-mix+surrogate --timeout 900 --seeds 0
    python benchmarks/bench_search_quality.py --datasets digits --timeout 180 --seeds 0,1,2
    python benchmarks/bench_search_quality.py --datasets mnist1d --reference mnist1d=@my_cnn.arch --mf on
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
STRATEGIES = {  # name -> einnas search options (search's default --init is the scaled seeds, as mix)
    "random": ["--strategy", "random"],
    "re": ["--strategy", "re", "--init", "random"],
    "re+surrogate": ["--strategy", "re", "--init", "random", "--surrogate", "default"],
    "re-mix": ["--strategy", "re", "--init", "mix"],
    "re-mix+surrogate": ["--strategy", "re", "--init", "mix", "--surrogate", "default"],  # the README main job
}
FINAL_FACTOR = 4  # the search's final retrain: 4 x the search epochs


def _einnas(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "einnas.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def best_at(journal: Path, fractions: list[float], total: float) -> list[float | None]:
    """Best validation accuracy of a full-budget candidate completed by each fraction of ``total``
    seconds after the study's first trial started."""
    import optuna

    from einnas.search import open_storage

    storage = open_storage(str(journal), create=False)
    name = storage.get_all_studies()[0].study_name
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    if not starts:
        return [None for _ in fractions]
    t0 = min(starts)
    out = []
    for f in fractions:
        best = None
        for t in trials:
            if t.state.name == "COMPLETE" and t.datetime_complete and (t.datetime_complete - t0).total_seconds() <= f * total:
                best = t.value if best is None else max(best, t.value)
        out.append(best)
    return out


def run_search(dataset: str, strategy: str, mf: bool, seed: int, timeout: float, folder: Path,
               extra: list[str], epochs: int = 8) -> dict:
    out = folder / f"{dataset}-{strategy}-{'mf' if mf else 'full'}-s{seed}"
    args = ["search", "--dataset", dataset, "--timeout", str(timeout), "--seed", str(seed), "--out", str(out),
            "--epochs", str(epochs), "-q", "-f", "json", *STRATEGIES[strategy], *([] if mf else ["--no-prune"]), *extra]
    proc = _einnas(args, folder, timeout * 3 + 1800)
    if proc.returncode not in (0, 1):
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    report = json.loads(proc.stdout)
    final = report.get("final") or {}
    curve = best_at(out / "study.journal", [0.25, 0.5, 1.0], timeout)
    return {"val": curve, "test": final.get("test_acc"), "trials": report["trials"]["counted"],
            "pruned": report["trials"].get("pruned", 0), "wall": report.get("seconds"),
            "final_seconds": final.get("seconds"), "final_epochs": final.get("epochs"), "command": "einnas " + " ".join(args)}


def run_reference(dataset: str, arch: str, epochs: int, seed: int, folder: Path) -> dict:
    proc = _einnas(["train", arch, "--dataset", dataset, "--final", "--epochs", str(FINAL_FACTOR * epochs),
                    "--seed", str(seed), "-q", "-f", "json"], folder, 7200)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    data = json.loads(proc.stdout)
    return {"test": data.get("test_acc"), "wall": data.get("seconds")}


def references(dataset: str, given: dict[str, list[str]]) -> list[tuple[str, str]]:
    if dataset in given:
        return [(arch if len(arch) < 40 else arch[:37] + "...", arch) for arch in given[dataset]]
    return [(path.stem, f"@{path}") for path in sorted((HERE.parent / "grammar" / "references").glob(f"{dataset}_*.arch"))]


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist1d,mnist5k", help="comma-separated (addnist if present)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma-separated of {', '.join(STRATEGIES)}")
    parser.add_argument("--mf", choices=["both", "on", "off"], default="both", help="with / without multi-fidelity")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--timeout", type=float, default=900, help="seconds of search per run (default 900)")
    parser.add_argument("--epochs", type=int, default=8, help="search epochs (the final retrain: 4x)")
    parser.add_argument("--reference", action="append", default=[], metavar="DATASET=ARCH")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--extra", default="", help="more einnas search options, e.g. '--workers 2'")
    args = parser.parse_args(argv)
    given: dict[str, list[str]] = {}
    for item in args.reference:
        dataset, _, arch = item.partition("=")
        if not arch:
            parser.error(f"--reference {item!r}: expected DATASET=ARCH")
        given.setdefault(dataset, []).append(arch)
    strategies = [s for s in args.strategies.split(",") if s]
    for s in strategies:
        if s not in STRATEGIES:
            parser.error(f"--strategies: unknown {s!r} (expected {', '.join(STRATEGIES)})")
    seeds = [int(s) for s in args.seeds.split(",")]
    mfs = {"both": [True, False], "on": [True], "off": [False]}[args.mf]
    folder = (Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="einnas-quality-"))).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in [d for d in args.datasets.split(",") if d]:
        for strategy in strategies:
            for mf in mfs:
                runs = [run_search(dataset, strategy, mf, seed, args.timeout, folder, args.extra.split(), args.epochs)
                        for seed in seeds]
                for seed, run in zip(seeds, runs):
                    print(f"# {dataset} {strategy} {'mf' if mf else 'full'} seed {seed}: {json.dumps(run)}",
                          file=sys.stderr, flush=True)
                ok = [r for r in runs if "error" not in r]
                rows.append({
                    "dataset": dataset, "method": strategy, "mf": "yes" if mf else "no",
                    "val": [_mean([r["val"][i] for r in ok]) for i in range(3)],
                    "test": _mean([r["test"] for r in ok]), "trials": _mean([r["trials"] for r in ok]),
                    "pruned": _mean([r["pruned"] for r in ok]), "wall": _mean([r["wall"] for r in ok]),
                    "errors": len(runs) - len(ok),
                })
        if not args.no_reference:
            for label, arch in references(dataset, given):
                runs = [run_reference(dataset, arch, args.epochs, seed, folder) for seed in seeds]
                ok = [r for r in runs if "error" not in r]
                for r in runs:
                    if "error" in r:
                        print(f"# reference {label}: {r['error']}", file=sys.stderr)
                rows.append({"dataset": dataset, "method": f"reference {label}", "mf": "-", "val": [None] * 3,
                             "test": _mean([r["test"] for r in ok]), "trials": None, "pruned": None,
                             "wall": _mean([r["wall"] for r in ok]), "errors": len(runs) - len(ok)})
    t = args.timeout
    print(f"\nbest validation accuracy (full-budget candidates) after T/4, T/2, T = {t / 4:g}, {t / 2:g}, {t:g} s; "
          f"final test after up to {FINAL_FACTOR * args.epochs} epochs on train + valid (those that fit in the time "
          f"--timeout leaves; the reference: all); mean of seeds {args.seeds}\n")
    print("| dataset | method | multi-fidelity | val @T/4 | val @T/2 | val @T | final test | trials (pruned) | wall s |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        trials = "-" if r["trials"] is None else f"{r['trials']:.0f} ({r['pruned']:.0f})"
        wall = "-" if r["wall"] is None else f"{r['wall']:.0f}"
        errors = f" ({r['errors']} failed runs)" if r["errors"] else ""
        print(f"| {r['dataset']} | {r['method']}{errors} | {r['mf']} | {_pct(r['val'][0])} | {_pct(r['val'][1])} | "
              f"{_pct(r['val'][2])} | {_pct(r['test'])} | {trials} | {wall} |")
    print(f"\nrun folders: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
