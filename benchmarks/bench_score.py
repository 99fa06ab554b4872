"""Score latency: per architecture, warm, for a batch of sampled architectures; and start-up.

Prints, for ``--n`` architectures sampled at ``--input-shape`` (default 100 at 3,32,32):

* ONNX export time (not part of scoring; reported separately);
* warm per-architecture scoring time (read + describe + features + encoder + ensemble),
  each architecture scored alone, in order, by one warm process — its segment cache
  starts empty and fills as it goes, as in a search — with the share of each stage;
* the same with the segment cache cleared before every architecture (nothing reused);
* the whole batch scored in one call (``Scorer.score_files``);
* the first call in a fresh process (imports, predictor, encoder session, one score),
  and ``einnas score FILE`` end to end.

Target (issue 6): median <= 50 ms per architecture on 2 CPU cores, warm.

    python benchmarks/bench_score.py [--predictor default|DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

STARTUP = """
import sys, time
t = time.perf_counter()
from einnas.surrogate.score import Scorer, load_predictor
scorer = Scorer(load_predictor(sys.argv[1]), threads=int(sys.argv[3]))
[s] = scorer.score_files([sys.argv[2]])
print(f"{time.perf_counter() - t:.3f} {s.error is None}")
"""


def _quantiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    return f"median {statistics.median(ms):7.1f} ms   p90 {p90:7.1f} ms   mean {statistics.fmean(ms):7.1f} ms"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictor", default="default")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-shape", default="3,32,32")
    parser.add_argument("--threads", type=int, default=2, help="encoder threads (default 2)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    import torch

    torch.set_num_threads(args.threads)
    from einnas.grammar import load_grammar, sample
    from einnas.grammar.export import export_onnx
    from einnas.surrogate.describe import describe
    from einnas.surrogate.encoder import onnx_model_file
    from einnas.surrogate.features import feature_table, from_description
    from einnas.surrogate.score import Scorer, load_predictor

    shape = tuple(int(d) for d in args.input_shape.split(","))
    print(f"machine: {os.cpu_count()} CPUs visible, encoder threads {args.threads}; input {shape}; n {args.n}")
    t = time.perf_counter()
    onnx_model_file()  # the one-time MiniLM export, outside every timing below
    print(f"MiniLM ONNX model ready ({time.perf_counter() - t:.1f} s; exported once per machine into the cache)")

    archs = sample(load_grammar(), args.n, seed=args.seed, input_shape=shape, num_classes=10)
    folder = Path(tempfile.mkdtemp(prefix="einnas-bench-score-"))
    exports, paths = [], []
    for i, arch in enumerate(archs):
        t = time.perf_counter()
        export_onnx(arch, shape, 10, folder / f"{i:03d}.onnx")
        exports.append(time.perf_counter() - t)
        paths.append(folder / f"{i:03d}.onnx")
    print(f"ONNX export (excluded from scoring):       {_quantiles(exports)}")

    # Start-up first, while nothing of this process is warm for the child.
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", STARTUP, args.predictor, str(paths[0]), str(args.threads)],
                             capture_output=True, text=True, check=True).stdout.split()
        runs.append(float(out[0]))
    print(f"first call in a fresh process (import + load + score 1): {', '.join(f'{r:.2f} s' for r in runs)}")
    cli = []
    for _ in range(2):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "einnas.cli", "score", str(paths[0]), "--predictor", args.predictor],
                       capture_output=True, check=True)
        cli.append(time.perf_counter() - t)
    print(f"'einnas score FILE' end to end:              {', '.join(f'{r:.2f} s' for r in cli)}")

    scorer = Scorer(load_predictor(args.predictor), threads=args.threads).warm_up()
    scorer.score_files([paths[-1]])  # warm: sessions and code paths exercised once
    encoder = scorer.encoder
    if encoder is not None:
        encoder._memory.clear()

    stages = {"describe": [], "features+encode": [], "predict": []}
    per_arch = []
    for path in paths:
        t0 = time.perf_counter()
        graph = from_description(describe(path), key=path.name)
        t1 = time.perf_counter()
        numeric, text = feature_table([graph], encoder)
        t2 = time.perf_counter()
        scorer.predictor.predict(numeric, text)
        t3 = time.perf_counter()
        stages["describe"].append(t1 - t0)
        stages["features+encode"].append(t2 - t1)
        stages["predict"].append(t3 - t2)
        per_arch.append(t3 - t0)
    print(f"warm, one architecture per call:            {_quantiles(per_arch)}   <- target median <= 50 ms")
    for name, values in stages.items():
        print(f"    {name:<16}                        {_quantiles(values)}")
    if encoder is not None:
        print(f"    encoder: {encoder.stats['embedded']} new segments embedded, "
              f"{encoder.stats['tokens']} tokens, over {len(paths)} architectures")

    cold = []
    for path in paths:
        if encoder is not None:
            encoder._memory.clear()
        t = time.perf_counter()
        scorer.score_files([path])
        cold.append(time.perf_counter() - t)
    print(f"warm process, segment cache cleared each time: {_quantiles(cold)}")

    if encoder is not None:
        encoder._memory.clear()
    t = time.perf_counter()
    results = scorer.score_files(paths)
    total = time.perf_counter() - t
    print(f"whole batch in one call: {total:.2f} s = {1000 * total / len(paths):.1f} ms per architecture; "
          f"{sum(r.error is None for r in results)}/{len(paths)} scored")
    for p in paths:
        p.unlink()
    folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
