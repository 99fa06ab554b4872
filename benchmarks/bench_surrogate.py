"""Surrogate quality on held-out benchmark records, against the baselines a reviewer asks for.

Prints Kendall τ and Spearman ρ on the held-out (``test``) split of each dataset —
rows never used for fitting or model selection — for:

* ``params``      parameter count alone (no fitting);
* ``bag-of-ops``  the same ensemble head on the numeric graph features only
                  (summary figures, shape statistics, op-type histogram), no text;
* ``full``        numeric features + the MiniLM vector of the description (the shipped model);

each fitted on one dataset (in-domain and zero-shot to the other) and on all
datasets together. ``τ>chance`` is τ among held-out records above chance + 5
points: the ranking a search cares about once the collapsed networks are out.

Run (about 5–10 minutes on 2 CPU cores, most of it describing the records once;
descriptions and segment vectors are cached)::

    python benchmarks/bench_surrogate.py --records benchmarks/data/bench_digits.jsonl \\
        benchmarks/data/bench_mnist1d.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", nargs="+", required=True, help="JSON Lines files from einnas bench build")
    parser.add_argument("--cache", default=None, help="cache folder (default: the einnas cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    from einnas.surrogate.bench import read_records
    from einnas.surrogate.encoder import TextEncoder, cache_dir
    from einnas.surrogate.features import NUMERIC_NAMES, DescriptionCache
    from einnas.surrogate.predictor import FitConfig, evaluate, featurize, fit, rank_metrics

    folder = args.cache or cache_dir()
    t0 = time.perf_counter()
    records = read_records(*args.records)
    encoder = TextEncoder(store=folder)
    log = lambda line: print(f"  [{time.perf_counter() - t0:6.0f}s] {line}", file=sys.stderr, flush=True)  # noqa: E731
    data = featurize(records, encoder, DescriptionCache(folder), log=log)
    names = sorted(set(data.groups))
    print(f"records: {len(records)}; usable: {len(data.y)}; "
          + "; ".join(f"{n}: " + ", ".join(f"{s} {int(((data.groups == n) & (data.splits == s)).sum())}"
                                          for s in ("train", "val", "test")) for n in names))
    test = data.rows(data.splits == "test")
    rows = []

    def report(model: str, fitted_on: str, scores: dict) -> None:
        for name in names:
            if name in scores:
                s = scores[name]
                rows.append({"model": model, "fit on": fitted_on, "eval on": name,
                             "zero-shot": fitted_on not in (name, "all", "-"), **s})

    # Baseline 1: parameter count alone (more parameters = better), no fitting.
    params = test.numeric[:, list(NUMERIC_NAMES).index("log_params")]
    report("params", "-", {n: rank_metrics(params[test.groups == n], test.y[test.groups == n],
                                           float(test.chance[test.groups == n][0])) for n in names})
    for model, use_text in (("bag-of-ops", False), ("full", True)):
        for fitted_on in [*names, "all"] if len(names) > 1 else names:
            subset = data if fitted_on == "all" else data.rows(data.groups == fitted_on)
            t = time.perf_counter()
            base = FitConfig(use_text=use_text, members=args.members, seed=args.seed)
            predictor = fit(subset, base)
            report(model, fitted_on, evaluate(predictor, test))
            log(f"{model} on {fitted_on}: {time.perf_counter() - t:.0f}s, chose {predictor.meta['selection']}")

    header = f"{'model':<11} {'fit on':<9} {'eval on (test split)':<21} {'n':>5} {'tau':>7} {'rho':>7} {'tau>chance':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        label = r["eval on"] + (" (zero-shot)" if r["zero-shot"] else "")
        print(f"{r['model']:<11} {r['fit on']:<9} {label:<21} {r['n']:>5} {fmt(r['kendall_tau']):>7} "
              f"{fmt(r['spearman_rho']):>7} {fmt(r.get('kendall_tau_above_chance')):>10}")
    print(f"encoder: {encoder.stats}; total {time.perf_counter() - t0:.0f}s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
