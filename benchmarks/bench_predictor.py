"""Predictor quality and speed, side by side with its baselines: the one benchmark of issue 10.

Prints Kendall τ of each model on three evaluations:

* **in-distribution**: fit on the ``train + val`` architectures, rank the held-out
  ``test`` ones, per dataset;
* **leave-one-family-out (LOFO)**: fit on every other family (the grammar a record
  was sampled from), rank every record of the held-out family (per dataset, then
  the mean over its datasets);
* **leave-one-dataset-out (LODO)**: fit on the other datasets, rank the held-out one;

beside each: the parameter count alone, every zero-cost proxy alone (no fitting;
the sign that ranks best on the *training* rows is used), ``bag-of-ops`` (graph +
task features, no proxies, no text), ``+proxies`` and ``+text`` (the learned text
head's score as one more feature) and ``+blend`` (the ``+proxies`` trees blended with
a committee of proxies, the weight chosen by inner leave-one-family-out CV on the
fitted rows: the shipped default, ``surrogate/blend.py``). Then the warm ``score`` latency per einspace
architecture at 3x32x32 (ONNX file → prediction) without and with proxies.

Run (2 CPU cores; descriptions and proxies are cached under ``--cache``)::

    python benchmarks/bench_predictor.py --records benchmarks/data/bench_digits.jsonl \\
        benchmarks/data/bench_mnist1d.jsonl benchmarks/data/corpus/*.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

MIN_ROWS = 30  # a held-out family or dataset with fewer usable records is not reported


def _baselines(data, train_mask, names):
    """Single-feature rankers: column name -> sign chosen on the training rows."""
    from einnas.surrogate.features import NUMERIC_NAMES
    from einnas.surrogate.metrics import rank_metrics

    out = {}
    for name in names:
        if name not in NUMERIC_NAMES:
            continue
        col = data.numeric[:, list(NUMERIC_NAMES).index(name)]
        if name.startswith("proxy_") and (col <= -900).all():
            continue
        tau = rank_metrics(col[train_mask], data.y[train_mask])["kendall_tau"] or 0.0
        out[name] = 1.0 if tau >= 0 else -1.0
    return out


def _taus(score, data, mask) -> float | None:
    """Mean over datasets of τ on the masked rows (datasets with < MIN_ROWS rows are skipped)."""
    from einnas.surrogate.metrics import rank_metrics

    taus = []
    for name in sorted(set(data.groups[mask])):
        m = mask & (data.groups == name)
        if m.sum() >= MIN_ROWS:
            t = rank_metrics(score[m], data.y[m])["kendall_tau"]
            if t is not None:
                taus.append(t)
    return float(np.mean(taus)) if taus else None


def evaluate(data, fit_mask, tests: dict, configs, single) -> dict:
    """τ of every model fitted once on ``fit_mask`` rows, and of every single-feature baseline, per test mask."""
    from einnas.surrogate.features import NUMERIC_NAMES
    from einnas.surrogate.predictor import Predictor, fit_predictor

    rows_out = {label: {} for label in tests}
    for name, sign in _baselines(data, fit_mask, single).items():
        col = sign * data.numeric[:, list(NUMERIC_NAMES).index(name)]
        for label, mask in tests.items():
            rows_out[label][name] = _taus(col, data, mask)
    texts = data.texts()
    for model, config in configs.items():
        if model == "+proxies" and "+blend" in configs:
            continue  # the same trees as +blend's (same config and seed): scored there, without the blend
        rows = np.flatnonzero(fit_mask)
        p = fit_predictor(data.numeric[rows], None, data.y[rows], data.groups[rows], config,
                          texts=[texts[i] for i in rows] if config.use_text else None,
                          families=data.families[rows])
        variants = {model: p}
        if config.blend is None:
            chosen = p.meta.get("blend_selection", {})
            print(f"  {model}: blend weight {chosen.get('weight')} (inner LOFO tau by weight "
                  f"{chosen.get('inner_lofo_tau')})", file=sys.stderr, flush=True)
            if "+proxies" in configs:
                variants["+proxies"] = Predictor(p.tensors, {**p.meta, "blend": None})
        test = np.flatnonzero(np.logical_or.reduce(list(tests.values())))
        for name, predictor in variants.items():
            pred = predictor.predict_rows(data.numeric[test], [texts[i] for i in test] if config.use_text else None)
            score = np.zeros(len(data.y))
            score[test] = pred.mean  # as `surrogate fit` reports: networks gated to chance tie
            for label, mask in tests.items():
                rows_out[label][name] = _taus(score, data, mask)
    return rows_out


def latency(predictor_dir, n: int, seed: int, proxies: bool) -> dict:
    """Median and p90 ms per file of a warm ``Scorer.score_files`` on einspace architectures at 3x32x32."""
    from einnas.grammar import Limits, load_grammar, sample
    from einnas.grammar.export import export_onnx
    from einnas.surrogate.score import Scorer, load_predictor

    archs = sample(load_grammar(), n, seed=seed, input_shape=(3, 32, 32), num_classes=10,
                   limits=Limits(max_params=1_000_000, max_activations=1_000_000))
    scorer = Scorer(load_predictor(predictor_dir), proxies=proxies).warm_up()
    scorer.use_proxies = proxies  # time the proxies even if this predictor does not read them
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for a in archs:
            path = Path(tmp) / f"{a.archid}.onnx"
            export_onnx(a, (3, 32, 32), 10, path)
            paths.append(path)
        scorer.score_files(paths[:3])  # warm: imports, first conversions
        times = []
        for path in paths:
            t = time.perf_counter()
            scorer.score_files([path])
            times.append(1000 * (time.perf_counter() - t))
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))], "n": len(times)}


def _cached(records, folder: Path, proxies):
    """The records whose description (and data-free proxies) are in the cache already."""
    from einnas.surrogate.features import DESCRIPTION_CACHE_VERSION, arch_key

    out = []
    for r in records:
        if "arch" not in r or not r.get("ok"):
            continue
        key = arch_key(r["archid"], r["input_shape"], r["num_classes"])
        if not (folder / f"descriptions-v{DESCRIPTION_CACHE_VERSION}" / f"{key}.json").is_file():
            continue
        if proxies is not None and not (proxies.folder / f"{proxies._key(r['archid'], r['input_shape'], r['num_classes'])}.json").is_file():
            continue
        out.append(r)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", nargs="+", required=True, help="JSON Lines files / studies / ONNX folders")
    parser.add_argument("--cache", default=None, help="cache folder (default: the einnas cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--members", type=int, default=3, help="ensemble members per fit (default 3)")
    parser.add_argument("--trees", type=int, default=None,
                        help="boosting rounds per regressor (default: the fit's, FitConfig.trees)")
    parser.add_argument("--no-text", action="store_true", help="skip the +text model (the slowest fit)")
    parser.add_argument("--no-proxies", action="store_true", help="do not compute proxies for the records")
    parser.add_argument("--models", default=None,
                        help="comma list of the models fitted (bag-of-ops, +proxies, +blend, +text; default all)")
    parser.add_argument("--latency", type=int, default=40, metavar="N", help="architectures timed (0: skip)")
    parser.add_argument("--predictor", default="default", help="predictor timed for latency (default: shipped)")
    parser.add_argument("--cached-only", action="store_true",
                        help="only records whose description (and proxies) are already cached (a quick look on a "
                             "busy machine; the count says how many)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    from einnas.surrogate.encoder import cache_dir
    from einnas.surrogate.features import PROXY_FEATURES, DescriptionCache
    from einnas.surrogate.predictor import FitConfig, featurize, load_records
    from einnas.surrogate.proxyfeatures import ProxyCache, available

    t0 = time.perf_counter()
    log = lambda line: print(f"  [{time.perf_counter() - t0:6.0f}s] {line}", file=sys.stderr, flush=True)  # noqa: E731
    folder = args.cache or cache_dir()
    proxies = None if args.no_proxies or available() else ProxyCache(folder, seed=0)
    records = load_records(args.records)
    if args.cached_only:
        records = _cached(records, Path(folder), proxies)
    data = featurize(records, None, DescriptionCache(folder), log=log, proxies=proxies)
    print(f"usable records: {len(data.y)}; proxies: {'computed' if proxies else (available() or 'off')}")
    for fam in sorted(set(data.families)):
        m = data.families == fam
        print(f"  family {fam:<16} " + ", ".join(f"{d} {int((m & (data.groups == d)).sum())}"
                                                 for d in sorted(set(data.groups[m]))))
    # every row here has proxies (or none has): the fallback twins would never be used
    base = dict(members=args.members, seed=args.seed, fallback=False)
    if args.trees:
        base.update(trees=args.trees, gate_trees=args.trees // 2)
    configs = {"bag-of-ops": FitConfig(use_proxies=False, use_text=False, blend=1.0, **base)}
    if proxies:
        configs["+proxies"] = FitConfig(use_proxies=True, use_text=False, blend=1.0, **base)
        # the shipped default: the trees blended with the proxy committee, the weight chosen by
        # inner leave-one-family-out CV on the fitted rows only (surrogate/blend.py)
        configs["+blend"] = FitConfig(use_proxies=True, use_text=False, blend=None, **base)
    if not args.no_text:
        configs["+text"] = FitConfig(use_proxies=bool(proxies), use_text=True, blend=1.0, **base)
    if args.models:
        wanted = args.models.split(",")
        unknown = [m for m in wanted if m not in configs]
        if unknown:
            parser.error(f"--models: unknown model {unknown[0]!r} (have {', '.join(configs)})")
        configs = {m: configs[m] for m in wanted}
    single = ["log_params", *[p for p in PROXY_FEATURES if p != "proxy_available"]]

    table = []
    train, test = data.splits != "test", data.splits == "test"
    names = sorted(set(data.groups))
    tests = {f"in-dist {name}": test & (data.groups == name) for name in names}
    for label, row in evaluate(data, train, tests, configs, single).items():
        table.append((label, int(tests[label].sum()), row))
    log("in-distribution done")
    for fam in sorted(set(data.families)):
        m = data.families == fam
        if m.sum() >= MIN_ROWS and (~m).sum() >= MIN_ROWS:
            table.append((f"LOFO {fam}", int(m.sum()), evaluate(data, ~m, {"x": m}, configs, single)["x"]))
            log(f"LOFO {fam} done")
    for name in names:
        m = data.groups == name
        if len(names) > 1 and m.sum() >= MIN_ROWS:
            table.append((f"LODO {name}", int(m.sum()), evaluate(data, ~m, {"x": m}, configs, single)["x"]))
            log(f"LODO {name} done")

    columns = [c for c in [*single, *configs] if any(c in row for _, _, row in table)]
    short = {c: c.replace("proxy_", "zc:").replace("log_params", "params") for c in columns}
    header = f"{'evaluation (Kendall tau)':<28} {'n':>6} " + " ".join(f"{short[c]:>10}" for c in columns)
    print(header)
    print("-" * len(header))
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for label, n, row in table:
        print(f"{label:<28} {n:>6} " + " ".join(f"{fmt(row.get(c)):>10}" for c in columns))
    lofo = [row for label, _, row in table if label.startswith("LOFO")]
    for c in configs:
        vals = [r[c] for r in lofo if r.get(c) is not None]
        if vals:
            best = [max((v for k, v in r.items() if k in single and v is not None), default=None) for r in lofo]
            beats = sum(1 for r, b in zip(lofo, best) if b is None or (r.get(c) or -1) > b)
            print(f"LOFO mean {c}: {np.mean(vals):.3f} (above the best single baseline on {beats}/{len(lofo)} families)")
    if args.latency:
        for with_proxies in (False, True):
            if with_proxies and available():
                print(f"latency with proxies: not measured ({available()})")
                continue
            r = latency(args.predictor, args.latency, args.seed, with_proxies)
            print(f"warm score latency {'with' if with_proxies else 'without'} proxies (3x32x32 einspace, "
                  f"n {r['n']}): median {r['median_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms")
    print(f"total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
