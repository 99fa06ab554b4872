"""What a prediction is for: the task (input shape, classes, training-set size) and budget.

A record's accuracy means "validation accuracy on *this* data after *this* much
training"; the predictor reads the task as features (:data:`TASK_NAMES`) so that
``einnas score --dataset D`` conditions on ``D`` and records of several datasets
and budgets can be fitted together. :meth:`Task.label` is the sentence
``einnas score`` prints beside its number.

Example::

    task = Task.of_record(record)           # from a bench record
    task = Task.of_dataset(load_dataset("digits"), epochs=8)
    task.label()  # 'validation accuracy on digits (1x8x8, 10 classes, 1077 training samples) after 8 epochs'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

#: Names of the task features, in order (missing values are ``nan``; see ``features.MISSING``).
TASK_NAMES = ("task_log_input_numel", "task_channels", "task_log_spatial", "task_rank", "task_log_classes",
              "task_log_train_size", "task_epochs", "task_log_seconds")


@dataclass(frozen=True)
class Task:
    """A dataset and a training budget; fields are ``None`` where unknown."""

    name: str | None = None
    input_shape: tuple | None = None
    num_classes: int | None = None
    train_size: int | None = None
    epochs: float | None = None
    seconds: float | None = None

    @classmethod
    def of_record(cls, record: dict) -> "Task":
        """The task of a bench record (``dataset``, ``input_shape``, ``num_classes``, ``budget``)."""
        budget = record.get("budget") or {}
        size = record.get("train_size") or budget.get("train_size") or builtin_train_size(record.get("dataset"))
        shape = record.get("input_shape")
        return cls(record.get("dataset"), tuple(shape) if shape else None, record.get("num_classes"),
                   size, budget.get("epochs"), budget.get("seconds"))

    @classmethod
    def of_dataset(cls, dataset, epochs: float | None = None, seconds: float | None = None) -> "Task":
        """The task of a loaded :class:`~einnas.evaluate.datasets.Dataset`."""
        return cls(dataset.name, tuple(dataset.input_shape), int(dataset.num_classes),
                   int(dataset.sizes()["train"]), epochs, seconds)

    def with_budget(self, epochs: float | None, seconds: float | None) -> "Task":
        return Task(self.name, self.input_shape, self.num_classes, self.train_size, epochs, seconds)

    def key(self) -> str:
        """The group a record's accuracy compares within (same dataset, same budget)."""
        return f"{self.name}"

    def label(self) -> str:
        """``validation accuracy on digits (1x8x8, 10 classes, 1077 training samples) after 8 epochs``."""
        facts = []
        if self.input_shape:
            facts.append("x".join(map(str, self.input_shape)))
        if self.num_classes:
            facts.append(f"{self.num_classes} classes")
        if self.train_size:
            facts.append(f"{self.train_size} training samples")
        what = f"validation accuracy on {self.name or 'an unnamed task'}" + (f" ({', '.join(facts)})" if facts else "")
        budget = []
        if self.epochs:
            budget.append(f"{self.epochs:g} epochs")
        if self.seconds:
            budget.append(f"at most {self.seconds:g} s")
        return what + (f" after {' / '.join(budget)}" if budget else "")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        shape = d.get("input_shape")
        return cls(d.get("name"), tuple(shape) if shape else None, d.get("num_classes"), d.get("train_size"),
                   d.get("epochs"), d.get("seconds"))


@lru_cache(maxsize=16)
def builtin_train_size(name: str | None) -> int | None:
    """Training samples of a built-in dataset (``None`` for anything else, or when it cannot load)."""
    if not name:
        return None
    from einnas.errors import EinnasError
    from einnas.evaluate.datasets import BUILTIN_DATASETS

    if name not in BUILTIN_DATASETS:
        return None
    try:
        from einnas.evaluate.datasets import load_dataset

        return int(load_dataset(name).sizes()["train"])
    except (EinnasError, OSError, ValueError):
        return None


def task_vector(task: Task | None, graph_input: Sequence[int] | None = None,
                graph_classes: int | None = None) -> np.ndarray:
    """:data:`TASK_NAMES` of ``task``; the input shape and classes fall back to the graph's own."""
    task = task or Task()
    shape = tuple(task.input_shape or graph_input or ())
    classes = task.num_classes or graph_classes
    nan = float("nan")
    log = lambda v: math.log1p(float(v)) if v is not None else nan  # noqa: E731
    numel = float(np.prod(shape)) if shape else None
    channels = float(shape[0]) if len(shape) == 3 else (1.0 if shape else nan)
    spatial = float(np.prod(shape[1:])) if len(shape) == 3 else (float(shape[0]) if shape else None)
    return np.array([log(numel), channels, log(spatial), float(len(shape)) if shape else nan, log(classes),
                     log(task.train_size), float(task.epochs) if task.epochs else nan, log(task.seconds)],
                    dtype=np.float32)
