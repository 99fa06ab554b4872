"""Score ONNX files (or einnas architectures) with a fitted predictor: ``einnas score``.

The path of one file: safe loading and the canonical description
(``describe.py``), features of the graph, the task and zero-cost proxies
(``features.py``, ``proxyfeatures.py``), the ensemble's mean and spread
(``predictor.py``). Every score says what its number is (``target``: validation
accuracy on which task after which budget) and carries a **rank**: the percentile
of the prediction among the predictor's own training records on that task, which
compares across files and is not tied at chance.

A score carries an out-of-distribution note when the graph is far from what the
predictor was fitted on: op types of a family it never saw (a new op of a known
family is fine: ``LRN`` beside ``BatchNormalization``), or size figures outside
the training range. Where proxies could not be computed the note says so.

Example::

    scorer = Scorer()                                   # the shipped predictor
    for s in scorer.score_files(["a.onnx", "b.onnx"]):
        print(s.name, s.mean, s.rank, s.target, s.note)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from einnas.errors import DatasetError, EinnasError, ModelError

#: The predictor that ships with einnas (package data).
PRETRAINED = Path(__file__).resolve().parent / "pretrained"

# Figures checked against the training range: feature name -> (label, inverse of the feature transform).
_RANGE_CHECKS = {
    "log_params": ("parameters", math.expm1),
    "log_macs": ("MACs", math.expm1),
    "log_depth": ("depth", math.expm1),
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
    """The predicted accuracy of one graph, what it is for, its rank and what to be wary of."""

    name: str
    mean: float | None = None
    std: float | None = None
    ood: list[str] = field(default_factory=list)
    params: int | None = None
    macs: int | None = None
    error: str | None = None  # set (and nothing else) when the file could not be scored
    seconds: float = 0.0
    rank: float | None = None  # percentile among the predictor's training records (0-100)
    target: str = ""  # "validation accuracy on <task> after <budget>"
    proxies: str = ""  # "" when proxies were used (or the predictor reads none), else the reason

    @property
    def note(self) -> str:
        parts = [("far from the training data: " + "; ".join(self.ood))] if self.ood else []
        if self.proxies:
            parts.append(f"scored without proxies: {self.proxies}")
        return "; ".join(parts)

    def as_dict(self) -> dict:
        if self.error is not None:
            return {"file": self.name, "error": self.error}
        return {"file": self.name, "predicted_accuracy": round(self.mean, 4), "std": round(self.std, 4),
                "rank_percentile": None if self.rank is None else round(self.rank, 1), "predicts": self.target,
                "params": self.params, "macs": self.macs, "out_of_distribution": bool(self.ood),
                "proxies": "unavailable: " + self.proxies if self.proxies else "used", "note": self.note}


def _compact(value: float) -> str:
    from einnas.surrogate.describe import compact_number

    return compact_number(int(round(value))) if value >= 1000 else f"{value:.3g}"


def ood_notes(predictor, graph, numeric: np.ndarray | None = None) -> list[str]:
    """Why a graph is far from the predictor's training data (empty when it is not)."""
    from einnas.surrogate.features import NUMERIC_NAMES, family

    ranges = predictor.ranges() if hasattr(predictor, "ranges") else predictor.meta.get("ranges", {})
    numeric = graph.numeric if numeric is None else numeric
    notes = []
    seen = set(ranges.get("op_types", []))
    families = set(ranges.get("op_families") or {family(op) for op in seen})
    unseen = sorted(op for op in graph.op_types() - seen
                    if family(op) not in families or family(op) == "other") if seen else []
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
    """A predictor ready to score many graphs, optionally conditioned on a dataset (``dataset=``)."""

    def __init__(self, predictor=None, encoder=None, threads: int | None = None, dataset=None,
                 proxies: bool = True, batch_size: int = 64):
        self.predictor = predictor if predictor is not None else load_predictor("default")
        self.threads = threads  # torch CPU threads for the proxies (None: torch's setting)
        self.encoder = None  # the MiniLM encoder is no longer read by the predictor (texthead.py)
        self.dataset = dataset  # a loaded evaluate.datasets.Dataset, or None
        self.use_proxies = proxies and self.predictor.config.use_proxies
        self.batch = None
        if dataset is not None and self.use_proxies:
            x, y = dataset.train
            self.batch = (x[:batch_size], y[:batch_size])

    def warm_up(self) -> "Scorer":
        """Import what the first score would otherwise pay for."""
        from einnas.surrogate import describe, features  # noqa: F401

        return self

    def task_for(self, graph):
        """The task a graph is scored for: ``dataset=``'s (budget of the training task), else the closest."""
        from einnas.surrogate.task import Task

        default = self.predictor.default_task(graph)
        if self.dataset is None:
            return default
        task = Task.of_dataset(self.dataset)
        return task.with_budget(default.epochs, default.seconds) if default is not None else task

    def check_shape(self, graph, name: str) -> None:
        """:class:`DatasetError` when the graph's input or output does not fit ``dataset``."""
        if self.dataset is None:
            return
        shape, classes = graph.io()
        want = list(self.dataset.input_shape)
        if shape is not None and list(shape) != want:
            raise DatasetError(f"{name}: the model's input {'x'.join(map(str, shape))} does not match dataset "
                               f"{self.dataset.name} ({'x'.join(map(str, want))})")
        if classes is not None and classes != self.dataset.num_classes:
            raise DatasetError(f"{name}: the model predicts {classes} classes, dataset {self.dataset.name} has "
                               f"{self.dataset.num_classes}")

    def score_graphs(self, graphs: Sequence, names: Sequence[str] | None = None,
                     proxies: Sequence | None = None, reasons: Sequence[str] | None = None) -> list[Score]:
        """Score described graphs (:class:`~einnas.surrogate.features.GraphRecord`) as one batch."""
        if not graphs:
            return []
        names = names or [g.key for g in graphs]
        tasks = [self.task_for(g) for g in graphs]
        pred = self.predictor.predict(graphs, tasks=tasks, proxies=proxies)
        out = []
        for i, g in enumerate(graphs):
            reason = ""
            if self.predictor.config.use_proxies:
                reason = (reasons[i] if reasons and reasons[i] else "") or (
                    "" if proxies and proxies[i] else "not computed")
            rank = self.predictor.rank(pred.expected[i:i + 1], tasks[i])[0]
            out.append(Score(names[i], float(pred.mean[i]), float(pred.std[i]), ood_notes(self.predictor, g),
                             int(g.summary.get("params", 0)), int(g.summary.get("macs", 0)),
                             rank=None if not np.isfinite(rank) else float(rank),
                             target=self.predictor.target(tasks[i]), proxies=reason))
        return out

    def score_files(self, paths: Sequence[str | Path]) -> list[Score]:
        """Score ONNX files; a file that cannot be read gets a :class:`Score` with ``error`` set.

        With ``dataset=``, a file whose input or classes do not fit gets ``error`` set too.
        """
        from einnas.surrogate.features import describe_file
        from einnas.surrogate.proxyfeatures import compute_onnx, too_large

        start = time.perf_counter()
        graphs, names, values, reasons, out = [], [], [], [], {}
        for i, path in enumerate(paths):
            try:
                graph = describe_file(path)
            except EinnasError as error:
                out[i] = Score(str(path), error=_one_line(str(error)))
                continue
            except (OSError, ValueError, RecursionError, MemoryError) as error:  # last line of defence
                out[i] = Score(str(path), error=f"{path}: cannot be scored ({type(error).__name__}: "
                                                f"{_one_line(str(error))})")
                continue
            try:
                self.check_shape(graph, str(path))
            except DatasetError as error:  # this file's error; the others are still scored
                out[i] = Score(str(path), error=_one_line(str(error)))
                continue
            large = too_large(int(graph.summary.get("params", 0)), int(graph.summary.get("macs", 0)))
            if self.use_proxies and large is None:
                value, reason = compute_onnx(path, batch=self.batch, threads=self.threads)
            else:
                value, reason = None, (large if self.use_proxies else
                                       "turned off" if self.predictor.config.use_proxies else None)
            graphs.append(graph)
            names.append(str(path))
            values.append(value)
            reasons.append(reason or "")
        scored = iter(self.score_graphs(graphs, names, values, reasons))
        results = [out[i] if i in out else next(scored) for i in range(len(paths))]
        per = (time.perf_counter() - start) / max(len(paths), 1)
        for r in results:
            r.seconds = per
        return results

    def score_archs(self, archs: Sequence, input_shape, num_classes: int, cache=None) -> list[Score]:
        """Export and score einnas architectures; one that cannot be exported gets ``error`` set."""
        from einnas.surrogate.features import describe_arch
        from einnas.surrogate.proxyfeatures import compute_arch

        graphs, names, values, out = [], [], [], {}
        for i, arch in enumerate(archs):
            try:
                graphs.append(describe_arch(arch, input_shape, num_classes, cache))
                names.append(arch.archid)
                values.append(compute_arch(arch.string, input_shape, num_classes, batch=self.batch)
                              if self.use_proxies else None)
            except EinnasError as error:
                out[i] = Score(arch.archid, error=_one_line(str(error)))
        scored = iter(self.score_graphs(graphs, names, values))
        return [out[i] if i in out else next(scored) for i in range(len(archs))]


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:297] + "..."
