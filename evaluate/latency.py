"""Inference latency of an ONNX model: onnxruntime on the CPU, median of repeated runs.

The latency objective of a deployment search (``einnas search --objectives
accuracy,latency``). The model is the candidate's ONNX export (weights do not change
the time of a dense network, so the untrained export times the same as the trained
one); it is run at a fixed batch (default 1) with a fixed number of intra-op threads
(default 1), ``warmup`` runs first (allocation, kernel selection), then ``repeats``
timed runs, of which the median is the figure: robust to the odd slow run on a busy
machine. Timing stops early past :data:`MAX_TIMING_SECONDS` (at least
:data:`MIN_REPEATS` runs), so a large candidate costs no more than that; the settings
recorded say how many runs were timed.

Cost (measured on a busy 2-core machine, sampled einspace architectures on digits):
export 0.02-0.2 s, session 2-16 ms, 30 timed runs 1-25 ms; the export dominates
(``benchmarks/bench_pareto.py`` prints the share of a candidate's evaluation time).

Example::

    latency = measure_latency(onnx_model, (1, 8, 8))
    latency.ms, latency.settings   # 0.05, {"batch": 1, "threads": 1, "repeats": 30, ...}
"""

from __future__ import annotations

import statistics
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from einnas.errors import ModelError

DEFAULT_BATCH = 1
DEFAULT_THREADS = 1
DEFAULT_REPEATS = 30
DEFAULT_WARMUP = 5
MIN_REPEATS = 5
MAX_TIMING_SECONDS = 0.5  # timed runs stop after this (at least MIN_REPEATS of them)
PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class LatencySettings:
    """How a latency is measured; recorded with every figure (``latency_settings``)."""

    batch: int = DEFAULT_BATCH
    threads: int = DEFAULT_THREADS
    repeats: int = DEFAULT_REPEATS
    warmup: int = DEFAULT_WARMUP

    def as_dict(self, repeats: int | None = None) -> dict:
        return {"batch": self.batch, "threads": self.threads,
                "repeats": self.repeats if repeats is None else repeats, "warmup": self.warmup,
                "provider": PROVIDER}


@dataclass(frozen=True)
class Latency:
    """A measured latency: the median in milliseconds, and how it was measured."""

    ms: float
    settings: dict
    seconds: float  # wall clock of the measurement (session + runs), not of the export


def measure_latency(model, input_shape: Sequence[int], settings: LatencySettings = LatencySettings()) -> Latency:
    """Time ``model`` (an ``onnx.ModelProto`` or its serialised bytes) on input
    ``(batch, *input_shape)`` of zeros. Raises :class:`ModelError` when onnxruntime cannot
    load or run it."""
    import numpy as np
    import onnxruntime as ort

    start = time.perf_counter()
    data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(bytes(data), options, providers=[PROVIDER])
        name = session.get_inputs()[0].name
        feed = {name: np.zeros((settings.batch, *map(int, input_shape)), dtype=np.float32)}
        for _ in range(settings.warmup):
            session.run(None, feed)
        times: list[float] = []
        began = time.perf_counter()
        while len(times) < settings.repeats:
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - t0)
            if len(times) >= MIN_REPEATS and time.perf_counter() - began > MAX_TIMING_SECONDS:
                break
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own unrelated types
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelError(f"onnxruntime cannot time the model: {first[:200]}") from None
    return Latency(round(statistics.median(times) * 1e3, 6), settings.as_dict(len(times)),
                   time.perf_counter() - start)


def export_for_timing(arch, input_shape: Sequence[int], num_classes: int):
    """The untrained ONNX export of an architecture (torch's random state left as it was).
    Raises :class:`ArchitectureError` / :class:`ModelError` when it cannot be exported."""
    import torch

    from einnas.grammar.export import export_onnx

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return export_onnx(arch, tuple(input_shape), num_classes)


#: Latencies measured in this process, by architecture, task and settings (an LRU of
#: :data:`_CACHE_SIZE`): the surrogate's ranking times every candidate it proposes, and
#: the trial that then trains one of them reuses that figure instead of exporting again.
_MEASURED: "OrderedDict[tuple, Latency]" = OrderedDict()
_CACHE_SIZE = 4096


def arch_latency(arch, input_shape: Sequence[int], num_classes: int,
                 settings: LatencySettings = LatencySettings(), on_export=None) -> Latency:
    """Export ``arch`` and time it (:func:`measure_latency`); ``seconds`` includes the export.

    An architecture already timed in this process with the same task and settings is not
    exported again: its figure comes back with ``seconds`` 0 (nothing was spent on it).
    ``on_export``, when given, is called with the ONNX model of a fresh export (the
    surrogate describes it from the same file)."""
    key = (arch.archid, tuple(int(d) for d in input_shape), int(num_classes), settings)
    known = _MEASURED.get(key)
    if known is not None:
        _MEASURED.move_to_end(key)
        return Latency(known.ms, known.settings, 0.0)
    start = time.perf_counter()
    model = export_for_timing(arch, input_shape, num_classes)
    if on_export is not None:
        on_export(model)
    result = measure_latency(model, input_shape, settings)
    latency = Latency(result.ms, result.settings, time.perf_counter() - start)
    _MEASURED[key] = latency
    if len(_MEASURED) > _CACHE_SIZE:
        _MEASURED.popitem(last=False)
    return latency
