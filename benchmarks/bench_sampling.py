"""Sampling throughput, size distributions and validity of the einspace sampler.

Prints, for the default limits:
  * architectures per second on one core (median over seeds), sampling only;
  * the distribution of leaves (terminals, counting branch copies) and parameters;
  * the fraction valid: built, forward + backward at batch 4, finite (4, classes) output,
    and the analytic parameter count equal to torch's.
and, for comparison, the same distributions under loose limits (what the limits cut).

Usage: python benchmarks/bench_sampling.py [--n 1000] [--seeds 5] [--quick]
Reference: the official einspace sampler, measured on this machine, draws 0.1
architectures/s with 82% of its samples valid (shared/reference/einspace.md §12b).
"""

from __future__ import annotations

import argparse
import statistics
import time


def percentiles(values, qs=(50, 90, 99)):
    values = sorted(values)
    return {f"p{q}": values[min(len(values) - 1, int(len(values) * q / 100))] for q in qs} | {"max": values[-1]}


def throughput(grammar, shape, n, seeds, limits):
    from einnas.grammar import sample

    rates = []
    for seed in range(seeds):
        start = time.perf_counter()
        sample(grammar, n, seed=1000 + seed, input_shape=shape, limits=limits)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), rates


def validity(grammar, shape, n, classes=10):
    import torch

    from einnas.grammar import build_network, parse_arch, sample

    archs = sample(grammar, n, seed=0, input_shape=shape, num_classes=classes)
    valid = 0
    failures = []
    for arch in archs:
        try:
            torch.manual_seed(0)
            net = build_network(arch, shape, classes)
            assert sum(p.numel() for p in net.parameters()) == arch.info.params
            out = net(torch.randn(4, *shape))
            out.square().mean().backward()
            ok = out.shape == (4, classes) and bool(torch.isfinite(out).all())
            ok = ok and parse_arch(arch.string, grammar).string == arch.string
        except Exception as error:  # a benchmark reports failures, it does not stop on them
            ok = False
            failures.append(f"{type(error).__name__}: {error}")
        valid += ok
    return valid, archs, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="samples for validity at 3,32,32 (half at 1,8,8 and 40,1)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small run (n=100, 3 seeds)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.seeds = 100, 3

    import torch

    from einnas.grammar import Limits, load_grammar

    torch.set_num_threads(1)
    grammar = load_grammar()
    limits = Limits()
    loose = Limits(max_depth=100, max_nodes=5_000, max_params=10**9, max_activations=10**9, max_steps=20_000)
    print(f"default limits: {limits.as_dict()}")
    print(f"loose limits:   {loose.as_dict()}\n")

    median, rates = throughput(grammar, (3, 32, 32), 200, args.seeds, limits)
    print(f"throughput at 3,32,32, one thread, default limits: {median:.0f} architectures/s "
          f"(median of {args.seeds} seeds; {', '.join(f'{r:.0f}' for r in rates)})")
    median, _ = throughput(grammar, (3, 32, 32), 50, args.seeds, loose)
    print(f"throughput at 3,32,32, loose limits: {median:.0f} architectures/s\n")

    for shape, n in [((3, 32, 32), args.n), ((1, 8, 8), args.n // 2), ((40, 1), args.n // 2)]:
        start = time.perf_counter()
        valid, archs, failures = validity(grammar, shape, n)
        seconds = time.perf_counter() - start
        terminals = percentiles([a.info.terminals for a in archs])
        params = percentiles([a.info.params for a in archs])
        print(f"input {','.join(map(str, shape))}: {valid}/{n} valid ({100 * valid / n:.1f}%), "
              f"build+forward+backward {seconds:.1f}s")
        print(f"  leaves:     {terminals}")
        print(f"  parameters: {params}")
        for failure in failures[:5]:
            print(f"  failure: {failure}")

    from einnas.grammar import sample

    archs = sample(grammar, 200, seed=0, input_shape=(3, 32, 32), limits=loose)
    print("\nloose limits at 3,32,32 (200 samples, not built):")
    print(f"  leaves:     {percentiles([a.info.terminals for a in archs])}")
    print(f"  parameters: {percentiles([a.info.params for a in archs])}")


if __name__ == "__main__":
    main()
