"""The predictor interface that search and ``score`` use: fit, predict, ranges, target.

A predictor maps described graphs (:class:`~einnas.surrogate.features.GraphRecord`)
on a task (:class:`~einnas.surrogate.task.Task`) to a predicted accuracy with an
uncertainty. Everything a caller needs goes through these methods; the features,
trees and text head behind them are the implementation's business.

Example::

    predictor = load_predictor("default")
    mean, std = predictor.predict(graphs, tasks=[task] * len(graphs))
    predictor.target(task)          # 'validation accuracy on digits (...) after 8 epochs'
    predictor.rank(mean_expected)   # percentile among the training records
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np


class Prediction(tuple):
    """``(mean, std)``: predicted accuracy and its uncertainty (``>= 0``), each ``(n,)``.

    Unpacks as a pair; ``expected`` (the probability-weighted accuracy: chance where
    the network probably learns nothing) orders the networks that ``mean`` ties at
    chance, and is what :meth:`BasePredictor.rank` reads.
    """

    def __new__(cls, mean: np.ndarray, std: np.ndarray, expected: np.ndarray | None = None):
        self = super().__new__(cls, (mean, std))
        self.expected = mean if expected is None else expected
        return self

    @property
    def mean(self) -> np.ndarray:
        return self[0]

    @property
    def std(self) -> np.ndarray:
        return self[1]


class BasePredictor(ABC):
    """What search and ``score`` may ask of a predictor."""

    @abstractmethod
    def fit(self, records: Sequence[dict], **options) -> "BasePredictor":
        """A new predictor of the same kind fitted on bench records (this one is unchanged)."""

    @abstractmethod
    def predict(self, graphs: Sequence, tasks: Sequence | None = None, proxies: Sequence | None = None) -> Prediction:
        """Predictions for described graphs; ``tasks``/``proxies``: one per graph (or None)."""

    @abstractmethod
    def ranges(self) -> dict:
        """What the training data covered: ``op_types``, ``op_families``, ``numeric_min``/``numeric_max``."""

    @abstractmethod
    def tasks(self) -> dict:
        """The tasks the predictor was fitted on, by group name: ``{name: Task}``."""

    def default_task(self, graph=None):
        """The training task closest to ``graph`` (same input shape and classes first, else the largest)."""
        tasks = self.tasks()
        if not tasks:
            return None
        if graph is not None:
            shape, classes = graph.io()
            for task in tasks.values():
                if shape and list(task.input_shape or ()) == list(shape) and task.num_classes == classes:
                    return task
        return next(iter(tasks.values()))

    def target(self, task=None) -> str:
        """What the predicted number is: ``validation accuracy on <task> after <budget>``."""
        task = task or self.default_task()
        return task.label() if task is not None else "validation accuracy (task unknown)"

    @abstractmethod
    def rank(self, expected: np.ndarray, task=None) -> np.ndarray:
        """Percentile (0–100) of ``expected`` among the training records' own predictions for ``task``."""
