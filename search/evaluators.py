"""Evaluators score one architecture; failures come back as results, never exceptions.

The search loop calls :meth:`Evaluator.evaluate` once per trial, in the worker that
owns the trial, with a seed derived from (study seed, archid): a retried architecture
is trained with the same seed. :class:`TrainingEvaluator` trains from scratch with
the einspace protocol (``einnas.evaluate.train``); a predicted-score evaluator (the
surrogate, in ``einnas.search.assisted``) implements the same interface with
``scored_by = "predicted"``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from einnas._registry import Registry
from einnas.errors import ArchitectureError

if TYPE_CHECKING:
    from einnas.evaluate import Dataset, TrainConfig
    from einnas.grammar import Architecture
    from einnas.search.space import SearchSpace


#: An ``--init`` seed's time budget, as a multiple of the per-candidate budget (Evaluator.for_seed).
SEED_BUDGET_FACTOR = 3


@dataclass
class Evaluation:
    """The score of one architecture, or why it has none.

    ``value`` is the objective (validation accuracy, maximised) when ``ok``;
    otherwise ``reason`` is a short code (``nan_loss``, ``oom``, ``timeout``,
    ``runtime_error``, ``too_large``, ``invalid``, ...) and ``detail`` one line.
    """

    ok: bool
    value: float | None = None
    reason: str | None = None
    detail: str = ""
    params: int | None = None
    seconds: float = 0.0
    curve: list[float] = field(default_factory=list)  # objective after each epoch, if any
    stopped: bool = False  # ended early at a multi-fidelity rung because ``report`` said so
    extra: dict = field(default_factory=dict)  # further JSON-able user attributes
    # A multi-objective study's values in its objectives' order (``objectives.py``); None: ``value`` alone.
    values: list[float] | None = None
    # Optuna constraints (feasible when <= 0), set on the trial before it is told.
    constraints: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluatorContext:
    """What a search (or ``bench build``) hands :meth:`Evaluator.create`; an evaluator takes
    what it uses."""

    space: "SearchSpace"
    dataset: "Dataset"
    train: "TrainConfig"  # the per-candidate training budget and protocol
    device: str = "auto"
    surrogate: str = "none"  # --surrogate: none, default or a predictor folder
    run: dict = field(default_factory=dict)  # provenance of the worker (bench records stamp it)


class Evaluator(ABC):
    """Scores architectures for the search loop.

    ``scored_by`` is written on every trial (``trained`` or ``predicted``), so a
    study says how each of its numbers was obtained.

    An evaluator is listed in :data:`EVALUATORS` (built-ins) or declared by an installed
    package as an ``einnas.evaluators`` entry point; the search builds it with
    :meth:`create`. ``einnas.testing.EvaluatorContract`` checks one.
    """

    scored_by: ClassVar[str]
    #: Whether :meth:`evaluate` takes ``report`` (multi-fidelity: it reports the curve as it
    #: goes and stops when ``report`` returns True).
    reports: ClassVar[bool] = False
    #: Whether it scores with a predictor, so a search needs ``--surrogate default|PATH``.
    needs_predictor: ClassVar[bool] = False

    @classmethod
    def create(cls, context: EvaluatorContext) -> "Evaluator":
        """Called once by a search (``--evaluator NAME``) to build the evaluator. The default
        calls ``cls()``; override to take the dataset, budget or device from ``context``."""
        return cls()

    def settings(self) -> dict:
        """Called once when the study is opened: what makes scores comparable (stored in
        the study; a worker whose settings differ is refused)."""
        return {"evaluator": self.scored_by}

    def for_seed(self) -> "Evaluator":
        """The evaluator of an ``--init`` seed, the population's anchor: by default this one.
        A time-budgeted evaluator returns one with :data:`SEED_BUDGET_FACTOR` times its time
        budget, so that a busy machine or a scale estimated a little low does not cost the
        population its anchors (the epochs, and so the comparison, stay the same)."""
        return self

    @abstractmethod
    def evaluate(self, arch: "Architecture", seed: int) -> Evaluation:
        """Called once per trial with the trial's architecture and seed. Must not raise
        for a bad candidate: return ``Evaluation(ok=False, reason=...)`` instead."""


class TrainingEvaluator(Evaluator):
    """Train the candidate from scratch on the train split; score = validation accuracy.

    Example::

        evaluator = TrainingEvaluator(load_dataset("digits"), TrainConfig(epochs=8, seconds=10))
        result = evaluator.evaluate(arch, seed=0)
    """

    scored_by = "trained"
    reports = True

    @classmethod
    def create(cls, context):
        return cls(context.dataset, context.train, device=context.device)

    def __init__(self, dataset: "Dataset", config: "TrainConfig", device: str = "auto"):
        from einnas.evaluate import resolve_device

        self.dataset, self.config = dataset, config
        self.device = resolve_device(device)
        self._warmed = False
        self._seed_evaluator: TrainingEvaluator | None = None

    def settings(self):
        c = self.config
        return {
            "evaluator": self.scored_by, "epochs": c.epochs, "seconds": c.seconds, "batch_size": c.batch_size,
            "lr": c.lr, "weight_decay": c.weight_decay, "max_params": c.max_params,
        }

    def for_seed(self):
        if self.config.seconds is None:
            return self
        if self._seed_evaluator is None:
            from dataclasses import replace

            self._seed_evaluator = TrainingEvaluator(
                self.dataset, replace(self.config, seconds=self.config.seconds * SEED_BUDGET_FACTOR), self.device)
            self._seed_evaluator._warmed = self._warmed
        return self._seed_evaluator

    def evaluate(self, arch, seed, report=None):
        """``report(epoch, val_acc) -> bool``, when given, is called after every epoch;
        True stops the training there (``Evaluation.stopped``)."""
        from einnas.evaluate import train
        from einnas.grammar import build_network

        self._warm_up()
        ds = self.dataset

        def factory():
            return build_network(arch, ds.input_shape, ds.num_classes)

        progress = None
        if report is not None:
            def progress(stats):
                return stats.val_acc is not None and bool(report(stats.epoch, stats.val_acc))

        try:
            result = train(factory, ds, self.config, seed=seed, device=self.device, progress=progress)
        except ArchitectureError as error:  # the builder refused the tree
            return Evaluation(False, reason="invalid", detail=str(error)[:300])
        return Evaluation(
            ok=result.ok, value=result.val_acc, reason=result.reason, detail=result.detail,
            params=result.params, seconds=result.seconds,
            curve=[s.val_acc for s in result.curve if s.val_acc is not None], stopped=result.stopped,
            extra={"epochs_run": result.epochs_run, "device": result.device},
        )

    def _warm_up(self) -> None:
        """Run one tiny step before the first candidate, so torch's one-time start-up cost
        does not count against the first candidate's time budget."""
        if self._warmed:
            return
        self._warmed = True
        import math

        import numpy as np
        import torch

        from einnas.evaluate import TrainConfig, from_arrays, train

        shape, classes = self.dataset.input_shape, self.dataset.num_classes
        x, y = np.zeros((4, *shape), dtype=np.float32), np.arange(4) % classes
        tiny = from_arrays("warm-up", (x, y), (x, y), (x, y), num_classes=classes)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(shape), classes))
        train(model, tiny, TrainConfig(epochs=1, batch_size=4, threads=self.config.threads), device=self.device)


#: The evaluators by ``--evaluator`` name: these, then installed packages' ``einnas.evaluators``
#: entry points. ``train`` trains (the search's default), ``surrogate`` predicts with the
#: predictor, ``record`` trains and also measures test accuracy with provenance (``bench build``).
EVALUATORS = Registry("evaluator", "einnas.evaluators", "--evaluator", "einnas.search.evaluators:Evaluator", {
    "train": TrainingEvaluator,
    "surrogate": "einnas.search.assisted:SurrogateEvaluator",
    "record": "einnas.surrogate.bench:RecordingEvaluator",
})
