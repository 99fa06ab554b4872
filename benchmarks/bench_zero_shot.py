"""Zero-shot surrogate-assisted search: a predictor that never saw the dataset, against random search.

1. Fits a predictor on every record *except* those of ``--dataset`` (the same
   fit as ``einnas surrogate fit``, no model selection, nothing held out);
2. on ``--dataset``, for each seed, runs at an equal budget of trained candidates
   (``--trials``):

   * ``random``   random sampling from the PCFG,
   * ``re+surr``  regularised evolution, each trial training the best-predicted of
     ``--candidates`` proposals ranked by that predictor (``einnas search
     --surrogate DIR``: the same strategy, its refit on the study's own trials
     included), and optionally ``re`` (plain regularised evolution);

3. prints the best validation accuracy after N/3, 2N/3 and N trained candidates,
   how many trained candidates each method needed to reach random search's final
   best of the same seed, and how many times ``re+surr`` still improved its best
   after its first N/3 picks.

Target (issue 10): ``re+surr`` reaches random's final best within N/3 trained
candidates and keeps improving after its first picks.

    nice -n 10 python benchmarks/bench_zero_shot.py --dataset mnist1d --trials 30 --seeds 2 \\
        --records benchmarks/data/bench_digits.jsonl benchmarks/data/bench_mnist1d.jsonl \\
        benchmarks/data/corpus/*.jsonl benchmarks/data/corpus/late/*.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path


def best_curve(view) -> list[float]:
    """Best validation accuracy after each evaluated (counted) trial, in trial order."""
    best, out = 0.0, []
    for r in view.records:
        if not r.counted:
            continue
        if r.value is not None:
            best = max(best, r.value)
        out.append(best)
    return out


def fit_without(records, dataset: str, folder: Path, cache, members: int, seed: int, log) -> Path:
    """Fit a predictor on the records of every dataset but ``dataset``; write it to ``folder``."""
    from einnas.surrogate.features import DescriptionCache
    from einnas.surrogate.predictor import FitConfig, featurize, fit, save_atomic
    from einnas.surrogate.proxyfeatures import ProxyCache

    kept = [r for r in records if r.get("dataset") != dataset]
    if len(kept) == len(records):
        log(f"note: no record of {dataset} among the records given")
    data = featurize(kept, None, DescriptionCache(cache), holdout=0.0, log=log, proxies=ProxyCache(cache, seed=0))
    log(f"fitting on {len(data.y)} records of {', '.join(sorted(set(data.groups)))} (none of {dataset})")
    predictor = fit(data, FitConfig(members=members, seed=seed), grid=(), log=log)
    save_atomic(predictor, folder)
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", nargs="+", required=True, help="JSON Lines files / studies (any datasets)")
    parser.add_argument("--dataset", default="mnist1d", help="the held-out dataset searched on (default mnist1d)")
    parser.add_argument("--trials", type=int, default=30, help="trained candidates per run (default 30)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=16, help="proposals ranked per trained candidate")
    parser.add_argument("--methods", default="random,re+surr", help="comma list of random, re, re+surr")
    parser.add_argument("--members", type=int, default=3, help="ensemble members of the zero-shot predictor")
    parser.add_argument("--cache", default=None, help="description / proxy cache (default: the einnas cache)")
    parser.add_argument("--predictor", default=None, help="use this predictor folder instead of fitting one")
    parser.add_argument("--save", default=None, metavar="DIR",
                        help="keep the fitted zero-shot predictor in DIR (reuse it with --predictor DIR)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="time budget per candidate (default: the search's, 10 s on mnist1d; a busy machine "
                             "fails large candidates by timeout)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    import optuna

    from einnas.evaluate import TrainConfig, load_dataset
    from einnas.grammar import Limits, load_grammar
    from einnas.search import RandomSampling, RegularisedEvolution, SearchSpace, StudyView, TrainingEvaluator, run_worker
    from einnas.search import population_sizes
    from einnas.search.assisted import make_strategy, time_budget
    from einnas.search.run import DEFAULT_EPOCHS, DEFAULT_MAX_ACTIVATIONS, DEFAULT_MAX_PARAMS, default_seconds
    from einnas.surrogate.encoder import cache_dir
    from einnas.surrogate.predictor import load_records

    t0 = time.perf_counter()
    log = lambda line: print(f"  [{time.perf_counter() - t0:5.0f}s] {line}", file=sys.stderr, flush=True)  # noqa: E731
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = tempfile.TemporaryDirectory()
    predictor = args.predictor or str(fit_without(load_records(args.records), args.dataset,
                                                  Path(args.save) if args.save else Path(tmp.name) / "p",
                                                  args.cache or cache_dir(), args.members, 0, log))
    dataset = load_dataset(args.dataset, view="auto")
    space = SearchSpace(load_grammar(), tuple(dataset.input_shape), dataset.num_classes,
                        Limits(max_params=DEFAULT_MAX_PARAMS, max_activations=DEFAULT_MAX_ACTIVATIONS))
    config = TrainConfig(epochs=DEFAULT_EPOCHS, seconds=args.seconds or default_seconds(dataset, DEFAULT_EPOCHS),
                         max_params=DEFAULT_MAX_PARAMS, threads=1)
    evaluator = TrainingEvaluator(dataset, config, device="cpu")
    population, tournament = population_sizes(args.trials)
    print(f"{dataset.name} {'x'.join(map(str, dataset.input_shape))}: {args.trials} trained candidates per run, "
          f"seeds 0..{args.seeds - 1}, RE population {population} / tournament {tournament}, {args.candidates} "
          f"ranked proposals per trial (re+surr, predictor "
          f"{args.predictor if args.predictor else 'fitted without ' + args.dataset}), training "
          f"{config.epochs} epochs / {config.seconds:g} s")

    def strategy_for(method: str, seed: int):
        if method == "random":
            return RandomSampling(space)
        re = RegularisedEvolution(space, population, tournament)
        if method == "re":
            return re
        # as `einnas search` does: proposals too slow for the time budget rank last
        return make_strategy(re, predictor, space=space, seed=seed, candidates=args.candidates,
                             budget=time_budget(dataset, config))

    methods = args.methods.split(",")
    curves: dict[tuple[str, int], list[float]] = {}
    failed: dict[tuple[str, int], int] = {}
    for seed in range(args.seeds):
        for method in methods:
            t = time.perf_counter()
            study = optuna.create_study(direction="maximize")
            run_worker(study, strategy_for(method, seed), evaluator, seed=seed, trials=args.trials)
            view = StudyView.of(study)
            curves[method, seed] = best_curve(view)
            failed[method, seed] = sum(1 for r in view.records if r.counted and r.value is None)
            log(f"seed {seed} {method:<8} best {curves[method, seed][-1]:.4f}  ({time.perf_counter() - t:.0f} s)")

    n = args.trials
    marks = [max(1, n // 3), max(1, 2 * n // 3), n]
    print(f"\n{'method':<9} {'seed':>4} " + " ".join(f"{'best@' + str(m):>9}" for m in marks)
          + f" {'to random best':>15} {'new bests after ' + str(marks[0]):>20} {'failed':>7}")
    reach: dict[str, list[float]] = {m: [] for m in methods}
    for method in methods:
        for seed in range(args.seeds):
            c = curves[method, seed]
            target = curves["random", seed][-1] if "random" in methods else c[-1]
            hit = next((i + 1 for i, v in enumerate(c) if v >= target), None)
            reach[method].append(hit if hit is not None else float("inf"))
            later = sum(1 for i in range(marks[0], len(c)) if c[i] > c[i - 1])
            print(f"{method:<9} {seed:>4} " + " ".join(f"{c[min(m, len(c)) - 1]:>9.4f}" for m in marks)
                  + f" {hit if hit is not None else 'never':>15} {later:>20} {failed[method, seed]:>7}")
    print()
    for method in methods:
        mean = [statistics.fmean(curves[method, s][min(m, len(curves[method, s])) - 1] for s in range(args.seeds))
                for m in marks]
        finite = [r for r in reach[method] if r != float("inf")]
        print(f"{method:<9} mean " + " ".join(f"{v:>9.4f}" for v in mean)
              + f"   median trained candidates to random's final best: {statistics.median(reach[method])} "
                f"({len(finite)}/{args.seeds} runs reach it)")
    if "re+surr" in reach and "random" in methods:
        ok = statistics.median(reach["re+surr"]) <= n / 3
        print(f"target (re+surr reaches random's final best within {n / 3:.0f} trained candidates, median over "
              f"seeds): {'met' if ok else 'NOT met'}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
