"""report.html for a large study: how long rendering takes and how fast the page loads.

Builds a synthetic multi-objective study by hand (``--trials`` trials, accuracy and
latency, about 6% failed and 4% pruned, made as in ``tests/search/report_studies.py``),
each trial a distinct architecture sampled from the built-in grammar, then prints

* the page size,
* the render time of :func:`einnas.search.html_report.render_html` without the graph
  drawing and with it (building the best's ONNX graph, torch already imported),
* the load time in headless Chromium: navigation until the load event *and* the page's
  script has drawn every plot (its ``data-rendered`` mark), median of ``--loads``
  loads in one browser, plus the browser's start-up,
* the plotted points, checked against the study (history = evaluated trials, front =
  ``study.best_trials``).

Target (issue 13): the page loads in under 2 s for a 500-trial study.

    python benchmarks/bench_report.py [--trials 500] [--loads 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests" / "search"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"einnas_bench_{name}", TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="FILE", help="also write the page here, to look at")
    args = parser.parse_args(argv)

    import optuna

    from einnas.search.html_report import render_html

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies, chromium = _load("report_studies"), _load("chromium_pipe")
    from einnas.grammar import load_grammar, sample

    failed, pruned = round(0.06 * args.trials), round(0.04 * args.trials)
    archs = [a.string for a in sample(load_grammar(), args.trials, seed=args.seed, input_shape=(1, 8, 8))]
    study = studies.make_study(("accuracy", "latency"), n=args.trials - failed - pruned, failed=failed,
                               pruned=pruned, seed=args.seed, name=f"bench-{args.trials}", archs=archs)
    evaluated = sum(t.state.name in ("COMPLETE", "FAIL", "PRUNED") for t in study.trials)

    times = []
    for _ in range(3):
        start = time.perf_counter()
        page = render_html(study, graph=False)
        times.append(time.perf_counter() - start)
    page = render_html(study)  # the first drawing imports torch and loads the grammar: not counted
    graph_times = []
    for _ in range(3):
        start = time.perf_counter()
        page = render_html(study)
        graph_times.append(time.perf_counter() - start)
    print(f"study: {len(study.trials)} trials ({evaluated} evaluated, {failed} failed, {pruned} pruned), "
          f"2 objectives, {len(study.best_trials)} on the front")
    print(f"page: {len(page.encode()) / 1024:.0f} KiB; architecture strings {min(map(len, archs))}-"
          f"{max(map(len, archs))} characters (median {statistics.median(map(len, archs)):.0f})")
    print(f"render, no graph: median {statistics.median(times):.3f} s (of 3)")
    print(f"render, with the best's ONNX graph: median {statistics.median(graph_times):.3f} s (of 3)")

    executable = chromium.find_chromium()
    if executable is None:
        print("chromium: not installed (apt-get install chromium): no load time")
        return 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report.html"
        path.write_text(page, encoding="utf-8")
        if args.keep:
            Path(args.keep).write_text(page, encoding="utf-8")
        start = time.perf_counter()
        with chromium.Chromium(executable, timeout=60) as browser:
            started = time.perf_counter() - start
            loads = [browser.load(path.as_uri()) for _ in range(args.loads)]
            history = browser.evaluate("document.querySelectorAll('#history .pt').length")
            front = browser.evaluate("document.querySelectorAll('#pareto circle.front').length")
            points = browser.evaluate("document.querySelectorAll('#pareto circle.pt').length")
            errors = browser.errors()
    print(f"chromium start-up: {started:.2f} s")
    print(f"page load in headless chromium (to every plot drawn): median {statistics.median(loads):.3f} s, "
          f"max {max(loads):.3f} s (of {args.loads}); target < 2 s")
    print(f"plotted: history {history} points (study: {evaluated}), scatter {points}, front {front} "
          f"(study: {len(study.best_trials)}); console errors: {len(errors)}")
    ok = history == evaluated and front == len(study.best_trials) and not errors
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
