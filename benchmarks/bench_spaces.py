"""Sampling figures of the built-in search spaces (grammar/spaces/), per input shape.

For each space and input shape: time per sample, parameter count percentiles over
``-n`` samples (sampler defaults: max 5M parameters, 2M activations), and the share
of samples that are *valid* beyond the sampler's analytic checks: they build in
torch with exactly the analytic parameter count and run a forward pass (checked on
the first ``--build`` samples). With ``--zoo`` also the op types of the onnx light
model zoo that no exported sample of any family uses (should be none).

    python benchmarks/bench_spaces.py [-n 200] [--build 30] [--shapes 1,28,28 1,8,8] [--zoo]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

FAMILIES = ["einspace", "einspace_extra", "cnn", "resnet", "mobilenet", "transformer", "mlp"]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def short(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1e3:.1f}k" if n >= 1e3 else str(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--build", type=int, default=30, help="samples per cell built and run in torch")
    parser.add_argument("--shapes", nargs="+", default=["1,28,28", "1,8,8"])
    parser.add_argument("--spaces", nargs="+", default=FAMILIES)
    parser.add_argument("--zoo", action="store_true", help="also check the onnx model zoo op coverage")
    args = parser.parse_args()

    import torch

    from einnas.grammar import build_network, load_grammar, sample

    torch.set_num_threads(1)
    print(f"{'space':15} {'input':8} {'ms/sample':>9} {'p10':>7} {'median':>7} {'p90':>7} {'min':>7} {'max':>7} "
          f"{'valid':>7}")
    for name in args.spaces:
        grammar = load_grammar(name)
        for text in args.shapes:
            shape = tuple(int(d) for d in text.split(","))
            sample(grammar, 1, seed=99, input_shape=shape)  # warm caches (op parameter counts)
            start = time.perf_counter()
            archs = sample(grammar, args.n, seed=0, input_shape=shape)
            ms = (time.perf_counter() - start) / args.n * 1000
            params = [a.info.params for a in archs]
            ok = 0
            for arch in archs[: args.build]:
                try:
                    net = build_network(arch, shape, 10)
                    with torch.no_grad():
                        out = net.eval()(torch.randn(2, *shape))
                    ok += out.shape == (2, 10) and sum(p.numel() for p in net.parameters()) == arch.info.params
                except Exception as error:  # a benchmark reports, it does not stop
                    print(f"  build failed: {arch.archid}: {error}")
            built = min(args.build, len(archs))
            print(f"{name:15} {'x'.join(map(str, shape)):8} {ms:9.1f} {short(pct(params, .1)):>7} "
                  f"{short(int(statistics.median(params))):>7} {short(pct(params, .9)):>7} {short(min(params)):>7} "
                  f"{short(max(params)):>7} {ok:>3}/{built:<3}")
    if args.zoo:
        zoo_coverage()


def zoo_coverage() -> None:
    import glob
    import os

    import onnx
    import torch

    from einnas.grammar import Limits, build_network, load_grammar, sample
    from einnas.grammar.export import export_onnx
    from einnas.surrogate.describe import describe

    warnings.filterwarnings("ignore")
    zoo = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx")))
    seen, per_family = set(), {}
    for name in FAMILIES[2:]:
        ops = set()
        for arch in sample(load_grammar(name), 10, seed=11, input_shape=(3, 32, 32),
                           limits=Limits(max_params=300_000, max_activations=400_000)):
            ops |= set(describe(export_onnx(build_network(arch, (3, 32, 32), 10), (3, 32, 32), 10)).summary.op_counts)
        per_family[name] = ops
        seen |= ops
    print("\nop types of the exported family samples (10 per family at 3x32x32):")
    for name, ops in per_family.items():
        print(f"  {name:12} {', '.join(sorted(ops))}")
    print("\nonnx light model zoo: op types (described data nodes) / not in any family sample")
    for path in zoo:
        ops = set(describe(path).summary.op_counts)
        print(f"  {os.path.basename(path):26} {len(ops):2} types, missing: {', '.join(sorted(ops - seen)) or 'none'}")


if __name__ == "__main__":
    main()
