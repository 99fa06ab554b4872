"""RE(Mix) against its seeds trained alone (issue 14: "RE(Mix) with scaled seeds is never
worse than its best seed trained alone").

Reads finished searches (the ``-f json`` output of ``einnas search``, which names the
study, its seeds as they were scaled and the final retrain), trains every seed of each
alone with the search's final protocol (``einnas train LABEL --dataset D --final
--epochs E --seed S --shift P``: train + valid, the final retrain's epochs, seed and shift) and
prints, per search, the final test accuracy of the search beside each seed's.

    einnas search --dataset mnist5k --timeout 900 --seed 0 --surrogate default -f json > s0.json
    python benchmarks/bench_seeds_alone.py s0.json s1.json s2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def train_alone(label: str, dataset: str, epochs: int, seed: int, grammar: str | None, shift: int = 0) -> float | None:
    """Final test accuracy of seed ``label`` trained alone with the final protocol."""
    args = [sys.executable, "-m", "einnas.cli", "train", label, "--dataset", dataset, "--final",
            "--epochs", str(epochs), "--seed", str(seed), "--shift", str(shift), "-q", "-f", "json"]
    if grammar:
        args += ["--grammar", grammar]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {label}: einnas train failed ({proc.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    out = json.loads(proc.stdout)
    return out.get("test_acc")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="einnas search -f json outputs")
    args = parser.parse_args(argv)
    rows, wins = [], []
    for path in args.reports:
        report = json.loads(path.read_text())
        settings, final = report["settings"], report.get("final") or {}
        labels = settings.get("init")
        if not isinstance(labels, list) or not final.get("ok"):
            print(f"{path}: no seeds or no final retrain, skipped", file=sys.stderr)
            continue
        grammar = settings.get("grammar_path")
        grammar = None if not grammar or "built-in" in grammar else grammar
        alone = {label: train_alone(label, settings["dataset"], final["epochs"], settings["seed"], grammar,
                                    final.get("shift", 0))
                 for label in labels}
        best_label = max((k for k in alone if alone[k] is not None), key=lambda k: alone[k], default=None)
        best = alone.get(best_label) if best_label else None
        search = final["test_acc"]
        wins.append(best is None or search >= best)
        rows.append((settings["dataset"], settings["seed"], search, alone, best_label, best))
    if not rows:
        print("no finished search with seeds given", file=sys.stderr)
        return 2
    print(f"{'dataset':<10} {'seed':>4} {'search':>7}  seeds trained alone (final test)")
    for dataset, seed, search, alone, best_label, best in rows:
        cells = ", ".join(f"{k} {'-' if v is None else f'{100 * v:.1f}%'}" for k, v in alone.items())
        margin = "" if best is None else f"  (search - best seed: {100 * (search - best):+.1f} points)"
        print(f"{dataset:<10} {seed:>4} {100 * search:6.1f}%  {cells}{margin}")
    margins = [s - b for _, _, s, _, _, b in rows if b is not None]
    if margins:
        print(f"search >= its best seed alone in {sum(wins)}/{len(wins)} searches; "
              f"mean margin {100 * statistics.mean(margins):+.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
