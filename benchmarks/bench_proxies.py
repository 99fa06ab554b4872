"""Zero-cost proxy cost per architecture, and the onnx light model zoo through the converter.

Prints, for sampled einspace architectures at 3x32x32 and at 1x8x8 (bench-build
limits: at most 1M parameters and 1M activations), the median and 90th percentile
time of each proxy alone and of all of them in one call (warm process, batch 32,
``--threads`` torch threads); then, for every file of ``onnx/backend/test/data/light``,
whether it converts, how its batch is handled, the conversion time and the time of
all proxies (``--zoo-batch`` samples, 224x224).

    nice -n 10 python benchmarks/bench_proxies.py                 # ~50 archs per shape
    python benchmarks/bench_proxies.py -n 10 --no-zoo             # quick look
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import time


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bench_archs(n: int, shape, seed: int, batch_size: int) -> None:
    from einnas.grammar import Limits, load_grammar, sample
    from einnas.surrogate.proxies import PROXY_NAMES, build_seeded, compute_proxies

    archs = sample(load_grammar(), n, seed=seed, input_shape=shape, num_classes=10,
                   limits=Limits(max_params=1_000_000, max_activations=1_000_000))
    times: dict[str, list[float]] = {name: [] for name in (*PROXY_NAMES, "all")}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    nan = {name: 0 for name in PROXY_NAMES}
    params = []
    for i, arch in enumerate(archs):
        module = build_seeded(arch, shape, 10, seed=i)
        if i == 0:
            compute_proxies(module, shape, 10, batch_size=batch_size)  # warm-up
        for name in PROXY_NAMES:
            start, start_cpu = time.perf_counter(), time.process_time()
            compute_proxies(module, shape, 10, names=(name,), batch_size=batch_size)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
        start, start_cpu = time.perf_counter(), time.process_time()
        values = compute_proxies(module, shape, 10, batch_size=batch_size)
        times["all"].append(time.perf_counter() - start)
        cpu["all"].append(time.process_time() - start_cpu)
        params.append(values["params"])
        for name, v in values.items():
            nan[name] += v != v
    label = "x".join(map(str, shape))
    print(f"\n{len(archs)} sampled einspace architectures at {label} (batch {batch_size}; "
          f"params median {statistics.median(params):,.0f}, max {max(params):,.0f})")
    # CPU time (all threads of this process) is the figure that survives a busy machine:
    # wall time on an idle machine lies between CPU time / threads and CPU time.
    print(f"{'proxy':<10} {'wall median ms':>14} {'wall p90 ms':>11} {'CPU median ms':>13} {'CPU p90 ms':>10} {'NaN':>4}")
    for name, ts in times.items():
        print(f"{name:<10} {1000 * statistics.median(ts):>14.1f} {1000 * _percentile(ts, 0.9):>11.1f} "
              f"{1000 * statistics.median(cpu[name]):>13.1f} {1000 * _percentile(cpu[name], 0.9):>10.1f} "
              f"{nan.get(name, '') if name != 'all' else '':>4}")


def bench_zoo(batch_size: int) -> None:
    import onnx

    from einnas.errors import ConversionError
    from einnas.surrogate.convert import convert_onnx, reinitialise
    from einnas.surrogate.proxies import compute_proxies

    folder = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    print(f"\nonnx light model zoo ({folder}), proxies on {batch_size} synthetic samples, weights re-initialised")
    print(f"{'file':<26} {'converted':<10} {'batch':<10} {'convert s':>9} {'proxies s':>9}  note")
    for path in sorted(glob.glob(os.path.join(folder, "*.onnx"))):
        name = os.path.basename(path)
        start = time.perf_counter()
        try:
            conv = convert_onnx(path)
        except ConversionError as error:
            print(f"{name:<26} {'no':<10} {'-':<10} {time.perf_counter() - start:>9.2f} {'-':>9}  {error.reason}")
            continue
        took = time.perf_counter() - start
        reinitialise(conv.module, 0)
        start = time.perf_counter()
        values = compute_proxies(conv.module, conv.input_shape, conv.num_classes, batch_size=batch_size)
        nans = [k for k, v in values.items() if v != v]
        print(f"{name:<26} {'yes':<10} {conv.batch:<10} {took:>9.2f} {time.perf_counter() - start:>9.2f}  "
              + (f"NaN: {', '.join(nans)}" if nans else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="architectures per input shape (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--zoo-batch", type=int, default=8, help="samples for the light zoo (default 8)")
    parser.add_argument("--no-zoo", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    for shape in ((3, 32, 32), (1, 8, 8)):
        bench_archs(args.n, shape, args.seed, args.batch_size)
    if not args.no_zoo:
        bench_zoo(args.zoo_batch)


if __name__ == "__main__":
    main()
