"""Predictor features of one ONNX graph: summary figures, shape statistics, op histogram.

The numeric part comes from the :class:`~einnas.surrogate.describe.Description`
alone (its :class:`~einnas.surrogate.summary.Summary` and the shapes its text
prints), so an ONNX file that einnas never made gets the same features as an
exported einnas architecture. The text part is the encoder's vector of the same
description (``encoder.py``); :func:`feature_table` puts both together for many
graphs at once.

``OP_VOCAB`` is a fixed vocabulary of ONNX op types; anything else counts as
``other``. A fitted predictor stores the names of its numeric features, so a later
version that adds features can still load it.

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

#: ONNX op types with their own histogram bins (the rest count as "other").
OP_VOCAB = (
    "Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum",
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Gelu", "Erf", "Elu",
    "HardSigmoid", "HardSwish", "Clip", "Sqrt", "Pow", "Exp", "Neg",
    "ReduceMean", "ReduceSum", "ReduceMax", "GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool",
    "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
    "Pad", "Expand", "Tile", "Identity", "Dropout", "Where", "Cast", "Resize",
)
_BASE = (
    "log_params", "log_macs", "log_flops", "depth", "log_depth", "log_nodes", "log_folded",
    "log_input_numel", "log_classes", "log_head_numel", "log_min_numel", "log_max_numel", "log_median_numel",
    "log_lines", "log_segments", "truncated", "log_params_per_node", "log_macs_per_param",
    "frac_param_nodes", "frac_other_ops", "log_weighted_longest", "log_weighted_shortest",
    "shortest_over_longest", "log_nonlinear_longest",
)
#: Names of the numeric features, in order.
NUMERIC_NAMES = _BASE + tuple(f"log_n_{op}" for op in OP_VOCAB) + ("log_n_other",) \
    + tuple(f"frac_{op}" for op in OP_VOCAB)
DESCRIPTION_CACHE_VERSION = 2

_SHAPE = re.compile(r"^(?:\d*N\d*|\?|\d+)(?:x(?:\d*N\d*|\?|\d+))+$")


def _numel(shape_text: str) -> int | None:
    """Elements per sample of a printed shape (``Nx8x4`` -> 32); None if a dim is unknown."""
    total = 1
    for i, dim in enumerate(shape_text.split("x")):
        if dim == "?":
            return None
        if "N" in dim:
            digits = dim.replace("N", "")
            total *= int(digits) if digits and i > 0 else 1
            continue
        total *= int(dim)
    return total


def shape_stats(text: str) -> dict:
    """Input size, class count, head input size and the spread of printed tensor sizes."""
    input_numel, shapes_per_line = None, []
    for line in text.splitlines():
        tokens = line.split()
        shapes = [t for t in tokens if _SHAPE.match(t)]
        if " = input " in line and shapes:
            input_numel = _numel(shapes[0])
            continue
        if shapes:
            shapes_per_line.append((line, shapes))
    sizes = [n for _, shapes in shapes_per_line for n in map(_numel, shapes) if n is not None]
    classes = head = None
    last = [s for line, shapes in shapes_per_line if line.lstrip().startswith("y") for s in shapes]
    if not last and shapes_per_line:
        last = shapes_per_line[-1][1]
    if last:
        classes = _numel(last[-1])
        if len(last) >= 2:
            head = _numel(last[-2])
    body = sizes[:-1] if len(sizes) > 1 else sizes
    return {
        "input_numel": input_numel or 1, "classes": classes or 1, "head_numel": head or input_numel or 1,
        "min_numel": min(body) if body else 1, "max_numel": max(body) if body else 1,
        "median_numel": float(np.median(body)) if body else 1.0,
    }


_MAC_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum")
_NONLINEAR = ("Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Softmax", "Gelu", "Erf", "Elu", "HardSigmoid",
              "HardSwish", "Clip", "LogSoftmax")
_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*)\s*=\s*(?:(\d+)x\s+(?!\[))?(.*)$")
_REPEAT = re.compile(r"(\d+)x\[")


def _names(text: str) -> list[str]:
    """``t1..t4`` -> t1, t2, t3, t4; ``a, b`` -> a, b."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"([A-Za-z_]+)(\d+)\.\.([A-Za-z_]+)(\d+)", part)
        if match:
            out += [f"{match.group(1)}{k}" for k in range(int(match.group(2)), int(match.group(4)) + 1)]
        elif part:
            out.append(part)
    return out


def path_stats(text: str) -> dict:
    """Weighted path lengths through the description's lines, input to output.

    Each line (a chain of ops) weighs its weighted ops (MatMul, Gemm, Conv with
    parameters) and its nonlinearities; lines are linked by the tensor names their
    first op reads. Returns the longest and the shortest path in weighted ops (a
    residual connection makes the shortest short), and the longest in
    nonlinearities. Repeated blocks (``3x[ ... ]``) count their repeats.
    """
    from einnas.surrogate.encoder import _split_top

    depth: dict[str, tuple[int, int, int]] = {}  # name -> (longest weighted, shortest weighted, longest nonlin)
    stack = [1]
    out = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("einnas-onnx ") or line.startswith("..."):
            continue
        opened = re.match(r"^(\d+)x\[$", line)
        if opened:
            stack.append(stack[-1] * int(opened.group(1)))
            continue
        if line == "]":
            if len(stack) > 1:
                stack.pop()
            continue
        match = _LINE.match(line)
        if not match:
            continue
        defined, _, body = match.groups()
        names = _names(defined)
        if body.startswith("input "):
            for name in names:
                depth[name] = (0, 0, 0)
            continue
        first = re.match(r"^[\w.\[\dx]*?\((.*?)\)(?:\s|$)", _split_top(body, " > ")[0])
        args = [a.strip() for a in _split_top(first.group(1), ", ")] if first else []
        refs = [depth[n] for a in args if "=" not in a for n in _names(a) if n in depth]
        weighted = nonlinear = 0
        for element in _split_top(body, " > "):
            repeat = _REPEAT.match(element.strip())
            k = int(repeat.group(1)) if repeat else 1
            for op in re.findall(r"(?:^|\[|\s|>)([A-Z]\w*)", element.strip()):
                if op in _MAC_OPS and "#" in element:
                    weighted += k
                if op in _NONLINEAR:
                    nonlinear += k
        mult = stack[-1]
        value = (max((r[0] for r in refs), default=0) + weighted * mult,
                 min((r[1] for r in refs), default=0) + weighted * mult,
                 max((r[2] for r in refs), default=0) + nonlinear * mult)
        for name in names:
            depth[name] = value
        if any(n.startswith("y") for n in names):
            out = value if out is None else max(out, value)
    if out is None:
        out = list(depth.values())[-1] if depth else (0, 0, 0)
    return {"weighted_longest": out[0], "weighted_shortest": out[1], "nonlinear_longest": out[2]}


def numeric_features(summary: dict, text: str, truncated: bool = False) -> np.ndarray:
    """The numeric feature vector (``NUMERIC_NAMES``) of one description."""
    from einnas.surrogate.encoder import segments

    log = lambda v: math.log1p(max(float(v), 0.0))  # noqa: E731
    ops = dict(summary.get("op_counts", {}))
    nodes = max(int(summary.get("nodes", 0)), 1)
    params, macs = summary.get("params", 0), summary.get("macs", 0)
    stats = shape_stats(text)
    paths = path_stats(text)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    other = sum(c for op, c in ops.items() if op not in OP_VOCAB)
    param_ops = sum(ops.get(op, 0) for op in ("MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"))
    base = [
        log(params), log(macs), log(summary.get("flops", 0)), float(summary.get("depth", 0)),
        log(summary.get("depth", 0)), log(nodes), log(summary.get("folded", 0)),
        log(stats["input_numel"]), log(stats["classes"]), log(stats["head_numel"]), log(stats["min_numel"]),
        log(stats["max_numel"]), log(stats["median_numel"]), log(len(lines)), log(len(segments(text))),
        float(bool(truncated)), log(params / nodes), log(macs / max(params, 1)),
        param_ops / nodes, other / nodes,
        log(paths["weighted_longest"]), log(paths["weighted_shortest"]),
        paths["weighted_shortest"] / max(paths["weighted_longest"], 1), log(paths["nonlinear_longest"]),
    ]
    counts = [log(ops.get(op, 0)) for op in OP_VOCAB] + [log(other)]
    fracs = [ops.get(op, 0) / nodes for op in OP_VOCAB]
    return np.asarray(base + counts + fracs, dtype=np.float32)


@dataclass
class GraphRecord:
    """What the predictor needs of one graph: its description text and summary figures."""

    text: str
    summary: dict
    truncated: bool = False
    key: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def numeric(self) -> np.ndarray:
        return numeric_features(self.summary, self.text, self.truncated)

    def op_types(self) -> set[str]:
        return set(self.summary.get("op_counts", {}))


def from_description(description, key: str = "") -> GraphRecord:
    """A :class:`GraphRecord` from a :class:`~einnas.surrogate.describe.Description`."""
    return GraphRecord(description.text, description.summary.as_dict(), description.truncated, key)


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
        record = GraphRecord(data["text"], data["summary"], data.get("truncated", False), key)
        self._memory[key] = record
        return record

    def put(self, record: GraphRecord) -> None:
        self._memory[record.key] = record
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        from einnas._util import write_atomic

        write_atomic(self.folder / f"{record.key}.json",
                     json.dumps({"text": record.text, "summary": record.summary, "truncated": record.truncated}))


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


def feature_table(records: Sequence[GraphRecord], encoder=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Numeric features ``(n, len(NUMERIC_NAMES))`` and, with an encoder, text vectors ``(n, 384)``."""
    numeric = np.stack([r.numeric for r in records]) if records else np.zeros((0, len(NUMERIC_NAMES)), np.float32)
    text = encoder.encode_many([r.text for r in records]) if encoder is not None else None
    return numeric, text
