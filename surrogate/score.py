"""Score ONNX files (or einnas architectures) with a fitted predictor: ``einnas score``.

The path of one file: safe loading and the canonical description
(``describe.py``), numeric features and the MiniLM vector of the compact
description (``features.py``, ``encoder.py``), the ensemble's mean and spread
(``predictor.py``). Many files are scored as one batch: description segments that
they share are embedded once.

Every score carries an out-of-distribution note when the graph is far from what
the predictor was fitted on: op types it never saw, or size figures (parameters,
MACs, depth, nodes, input size, classes) outside the training range. The number
is still printed; the note says how much to trust it.

Example::

    scorer = Scorer()                                   # the shipped predictor
    for s in scorer.score_files(["a.onnx", "b.onnx"]):
        print(s.name, s.mean, s.std, s.note)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from einnas.errors import EinnasError, ModelError

#: The predictor that ships with einnas (package data).
PRETRAINED = Path(__file__).resolve().parent / "pretrained"

# Figures checked against the training range: feature name -> (label, inverse of the feature transform).
_RANGE_CHECKS = {
    "log_params": ("parameters", math.expm1),
    "log_macs": ("MACs", math.expm1),
    "depth": ("depth", float),
    "log_nodes": ("nodes", math.expm1),
    "log_input_numel": ("input size", math.expm1),
    "log_classes": ("classes", math.expm1),
}


def load_predictor(source: str | Path | None = "default"):
    """``"default"``/``None``: the shipped predictor; else a folder written by ``einnas surrogate fit``."""
    from einnas.surrogate.predictor import Predictor

    if source in (None, "default"):
        if not (PRETRAINED / "meta.json").is_file():
            raise ModelError("this einnas has no shipped predictor (surrogate/pretrained/ is empty); "
                             "fit one with 'einnas surrogate fit RECORDS -o DIR' and pass its folder")
        return Predictor.load(PRETRAINED)
    return Predictor.load(source)


@dataclass
class Score:
    """The predicted accuracy of one graph, its uncertainty and what to be wary of."""

    name: str
    mean: float | None = None
    std: float | None = None
    ood: list[str] = field(default_factory=list)
    params: int | None = None
    macs: int | None = None
    error: str | None = None  # set (and nothing else) when the file could not be scored
    seconds: float = 0.0

    @property
    def note(self) -> str:
        return ("far from the training data: " + "; ".join(self.ood)) if self.ood else ""

    def as_dict(self) -> dict:
        if self.error is not None:
            return {"file": self.name, "error": self.error}
        return {"file": self.name, "predicted_accuracy": round(self.mean, 4), "std": round(self.std, 4),
                "params": self.params, "macs": self.macs, "out_of_distribution": bool(self.ood),
                "note": self.note}


def _compact(value: float) -> str:
    from einnas.surrogate.describe import compact_number

    return compact_number(int(round(value))) if value >= 1000 else f"{value:.3g}"


def ood_notes(predictor, graph, numeric: np.ndarray) -> list[str]:
    """Why a graph is far from the predictor's training data (empty when it is not)."""
    from einnas.surrogate.features import NUMERIC_NAMES

    ranges = predictor.meta.get("ranges", {})
    notes = []
    seen = set(ranges.get("op_types", []))
    unseen = sorted(graph.op_types() - seen) if seen else []
    if unseen:
        notes.append(f"op types never seen in training: {', '.join(unseen[:6])}{' ...' if len(unseen) > 6 else ''}")
    lo, hi = ranges.get("numeric_min", {}), ranges.get("numeric_max", {})
    for name, (label, inverse) in _RANGE_CHECKS.items():
        if name not in lo or name not in NUMERIC_NAMES:
            continue
        value = float(numeric[NUMERIC_NAMES.index(name)])
        low, high = lo[name], hi[name]
        margin = 0.05 * max(high - low, 1e-3 * abs(high), 1e-3)  # tolerate float32 storage of the range
        if value < low - margin or value > high + margin:
            notes.append(f"{label} {_compact(inverse(value))} outside the training range "
                         f"{_compact(inverse(low))}–{_compact(inverse(high))}")
    if graph.truncated:
        notes.append("description truncated")
    return notes


class Scorer:
    """A predictor with its encoder, ready to score many graphs."""

    def __init__(self, predictor=None, encoder=None, threads: int | None = None):
        from einnas.surrogate.encoder import TextEncoder

        self.predictor = predictor if predictor is not None else load_predictor("default")
        needs_text = self.predictor.config.use_text
        if encoder is None and needs_text:
            runtime = self.predictor.meta.get("encoder", {}).get("runtime", "onnx")
            encoder = TextEncoder(runtime=runtime, threads=threads)
        self.encoder = encoder if needs_text else None

    def warm_up(self) -> "Scorer":
        """Load the encoder model now (the first score pays for it otherwise)."""
        if self.encoder is not None:
            self.encoder.load()
        return self

    def score_graphs(self, graphs: Sequence, names: Sequence[str] | None = None) -> list[Score]:
        """Score described graphs (:class:`~einnas.surrogate.features.GraphRecord`) as one batch."""
        from einnas.surrogate.features import feature_table

        if not graphs:
            return []
        numeric, text = feature_table(graphs, self.encoder)
        mean, std = self.predictor.predict(numeric, text)
        names = names or [g.key for g in graphs]
        return [
            Score(name, float(m), float(s), ood_notes(self.predictor, g, row),
                  int(g.summary.get("params", 0)), int(g.summary.get("macs", 0)))
            for name, g, m, s, row in zip(names, graphs, mean, std, numeric)
        ]

    def score_files(self, paths: Sequence[str | Path]) -> list[Score]:
        """Score ONNX files; a file that cannot be read gets a :class:`Score` with ``error`` set."""
        from einnas.surrogate.features import describe_file

        start = time.perf_counter()
        graphs, names, out = [], [], {}
        for i, path in enumerate(paths):
            try:
                graphs.append(describe_file(path))
                names.append(str(path))
            except EinnasError as error:
                out[i] = Score(str(path), error=_one_line(str(error)))
            except (OSError, ValueError, RecursionError, MemoryError) as error:  # last line of defence
                out[i] = Score(str(path), error=f"{path}: cannot be scored ({type(error).__name__}: "
                                                f"{_one_line(str(error))})")
        scored = iter(self.score_graphs(graphs, names))
        results = [out[i] if i in out else next(scored) for i in range(len(paths))]
        per = (time.perf_counter() - start) / max(len(paths), 1)
        for r in results:
            r.seconds = per
        return results

    def score_archs(self, archs: Sequence, input_shape, num_classes: int, cache=None) -> list[Score]:
        """Export and score einnas architectures; one that cannot be exported gets ``error`` set."""
        from einnas.surrogate.features import describe_arch

        graphs, names, out = [], [], {}
        for i, arch in enumerate(archs):
            try:
                graphs.append(describe_arch(arch, input_shape, num_classes, cache))
                names.append(arch.archid)
            except EinnasError as error:
                out[i] = Score(arch.archid, error=_one_line(str(error)))
        scored = iter(self.score_graphs(graphs, names))
        return [out[i] if i in out else next(scored) for i in range(len(archs))]


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:297] + "..."
