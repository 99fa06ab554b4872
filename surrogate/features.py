"""Predictor features of one ONNX graph, its task and its zero-cost proxies.

Three sources, one row per graph (:func:`feature_row`, :func:`feature_table`):

* the graph itself (``graphfeatures.py``): op types and families, attributes,
  shapes, parameters, MACs, depth and path statistics, computed from the analysed
  ONNX graph when it is described, never parsed back from the rendered text;
* the task (``task.py``): input shape, classes, training-set size, budget;
* zero-cost proxies at initialisation (``proxies.py``), when they were computed.

A fitted predictor stores the names of its features; a row is assembled by name
(:func:`feature_row`), so a later version that adds features still loads an older
predictor. Values that are unknown (a proxy that could not be computed, a task
without a training-set size) become :data:`MISSING`, a value far below every real
feature, which the trees learn to route (the fit blanks some proxies on purpose).

Descriptions of architectures are cached on disk by (archid, input shape, classes):
exporting and describing is the slow part of featurising a benchmark.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from einnas.surrogate.graphfeatures import FAMILIES, GRAPH_NAMES, OP_VOCAB, family, graph_features  # noqa: F401
from einnas.surrogate.proxies import PROXY_NAMES as _PROXIES  # torch is imported lazily there
from einnas.surrogate.task import TASK_NAMES, Task, task_vector

#: The value of a feature that is unknown for a row.
MISSING = -999.0
#: The proxy features (``flops`` is a graph feature already), then whether a row has proxies.
PROXY_FEATURES = tuple(f"proxy_{name}" for name in _PROXIES if name != "flops") + ("proxy_available",)
#: All feature names a row can have, in the default order.
NUMERIC_NAMES = GRAPH_NAMES + TASK_NAMES + PROXY_FEATURES
DESCRIPTION_CACHE_VERSION = 3


def proxy_values(proxies: dict | None) -> dict[str, float]:
    """Proxy features from a ``{name: value}`` dict (signed log scale; missing -> absent)."""
    if not proxies:
        return {"proxy_available": 0.0}
    out = {"proxy_available": 1.0}
    for name, value in proxies.items():
        if value is not None and math.isfinite(float(value)):
            v = float(value)
            out[f"proxy_{name}"] = math.copysign(math.log1p(abs(v)), v)
    return out


def feature_row(graph: "GraphRecord", task: Task | None = None, proxies: dict | None = None,
                names: Sequence[str] = NUMERIC_NAMES) -> np.ndarray:
    """One row of ``names`` for a graph on a task, with its proxies (unknown -> :data:`MISSING`)."""
    values = dict(graph.features)
    shape, classes = graph.io()
    values.update(zip(TASK_NAMES, task_vector(task, shape, classes).tolist()))
    values.update(proxy_values(proxies))
    row = np.array([values.get(n, MISSING) for n in names], dtype=np.float32)
    row[~np.isfinite(row)] = MISSING
    return row


@dataclass
class GraphRecord:
    """What the predictor needs of one graph: its description text and summary figures."""

    text: str
    summary: dict
    truncated: bool = False
    key: str = ""
    features: dict = field(default_factory=dict)  # graph features (GRAPH_NAMES), from the graph at describe time
    input_shape: list | None = None  # the graph input's shape without the batch dimension
    classes: int | None = None  # the graph output's width

    @property
    def numeric(self) -> np.ndarray:
        """The default feature row (no task beyond the graph's own, no proxies)."""
        return feature_row(self)

    def io(self) -> tuple:
        return self.input_shape, self.classes

    def op_types(self) -> set[str]:
        return set(self.summary.get("op_counts", {}))

    def families(self) -> set[str]:
        return {family(op) for op in self.op_types()}


def from_description(description, key: str = "") -> GraphRecord:
    """A :class:`GraphRecord` from a :class:`~einnas.surrogate.describe.Description` (features from its graph)."""
    graph = description.graph
    features, shape, classes = {}, None, None
    if graph is not None:
        features = graph_features(graph, description.summary)
        shape, classes = _io(graph)
    return GraphRecord(description.text, description.summary.as_dict(), description.truncated, key, features,
                       shape, classes)


def _io(graph) -> tuple:
    """Input shape (no batch dim, ints only) and output width of an analysed graph."""
    shape = classes = None
    if graph.inputs:
        dims = graph.tensors[graph.inputs[0]].shape
        if dims and len(dims) > 1 and all(isinstance(d, int) for d in dims[1:]):
            shape = list(dims[1:])
    if graph.outputs:
        dims = graph.tensors[graph.outputs[0]].shape
        if dims and len(dims) > 1 and all(isinstance(d, int) for d in dims[1:]):
            classes = int(np.prod(dims[1:]))
    return shape, classes


def describe_file(path, key: str | None = None) -> GraphRecord:
    """Describe an untrusted ONNX file (safe loader; :class:`ModelError` on bad input)."""
    from einnas.surrogate.describe import describe

    record = from_description(describe(path))
    record.key = key or "text:" + hashlib.blake2b(record.text.encode(), digest_size=10).hexdigest()
    return record


def arch_key(archid: str, input_shape: Sequence[int], num_classes: int) -> str:
    return f"{archid}-{'x'.join(map(str, input_shape))}-{num_classes}"


class DescriptionCache:
    """Descriptions of architectures, one small JSON file each, keyed by :func:`arch_key`."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) / f"descriptions-v{DESCRIPTION_CACHE_VERSION}" if folder else None
        self._memory: dict[str, GraphRecord] = {}

    def get(self, key: str) -> GraphRecord | None:
        if key in self._memory:
            return self._memory[key]
        if self.folder is None:
            return None
        path = self.folder / f"{key}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        features = data.get("features", {})
        if any(name not in features for name in GRAPH_NAMES):  # written by a version with other features
            return None
        record = GraphRecord(data["text"], data["summary"], data.get("truncated", False), key,
                             features, data.get("input_shape"), data.get("classes"))
        self._memory[key] = record
        return record

    def put(self, record: GraphRecord) -> None:
        self._memory[record.key] = record
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        from einnas._util import write_atomic

        write_atomic(self.folder / f"{record.key}.json",
                     json.dumps({"text": record.text, "summary": record.summary, "truncated": record.truncated,
                                 "features": record.features, "input_shape": record.input_shape,
                                 "classes": record.classes}))


def describe_arch(arch, input_shape: Sequence[int], num_classes: int, cache: DescriptionCache | None = None,
                  grammar=None) -> GraphRecord:
    """Export an architecture (string or :class:`Architecture`) and describe it, with caching.

    Raises :class:`ArchitectureError` / :class:`ModelError` when it cannot be exported.
    """
    from einnas.grammar import parse_arch

    if isinstance(arch, str):
        arch = parse_arch(arch, grammar)
    key = arch_key(arch.archid, input_shape, num_classes)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    from einnas.grammar.export import export_onnx
    from einnas.surrogate.describe import describe

    model = export_onnx(arch, tuple(input_shape), num_classes)
    record = from_description(describe(model), key)
    if cache is not None:
        cache.put(record)
    return record


def feature_table(records: Sequence[GraphRecord], encoder=None, tasks: Sequence | None = None,
                  proxies: Sequence | None = None, names: Sequence[str] = NUMERIC_NAMES) -> tuple[np.ndarray, None]:
    """Feature rows ``(n, len(names))`` of many graphs (with their tasks and proxies, when given).

    ``encoder`` is accepted for compatibility and ignored: the predictor's text model
    reads the description itself (``texthead.py``). The second value is always None.
    """
    if not records:
        return np.zeros((0, len(names)), np.float32), None
    tasks = tasks if tasks is not None else [None] * len(records)
    proxies = proxies if proxies is not None else [None] * len(records)
    return np.stack([feature_row(g, t, p, names) for g, t, p in zip(records, tasks, proxies)]), None
