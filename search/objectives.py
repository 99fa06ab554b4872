"""What a deployment search optimises: accuracy against latency, parameters and MACs.

``einnas search --objectives accuracy,latency`` (any two or three of the names in
:data:`OBJECTIVES`, accuracy among them; the default ``accuracy`` alone is the
single-objective search) makes a multi-objective Optuna study whose ``directions``
follow the order given, whose COMPLETE trials have ``values`` in that order and whose
``study.best_trials`` is the Pareto front:

============  ==========  ==========================================================
``accuracy``  maximise    validation accuracy (the trained, or predicted, score)
``latency``   minimise    milliseconds, the ONNX export in onnxruntime on the CPU
                          (``einnas.evaluate.latency``: batch 1, 1 thread, median)
``params``    minimise    parameter count (analytic, head included)
``macs``      minimise    multiply-accumulates of one forward pass per sample,
                          analytic (``einnas.grammar.scaling.estimate``)
============  ==========  ==========================================================

``--max-latency MS`` is a constraint in Optuna's sense (``trial.set_constraint``:
``latency_ms - MS``, feasible when <= 0), so ``study.best_trials`` and
``study.best_trial`` keep to it, in a multi-objective study and in a single-objective
one (``--objectives accuracy --max-latency 2``: the most accurate network under 2 ms).
``--max-params`` stays the sampler's hard limit (no candidate exceeds it).

:class:`ObjectiveEvaluator` wraps the search's evaluator: it exports and times the
candidate before training it (a candidate that cannot be exported or timed is a
failed trial, reason ``latency_failed``), trains it, and returns the objective values
and constraints for the loop to tell.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

from einnas.errors import EinnasError, UsageError
from einnas.evaluate.latency import LatencySettings
from einnas.search.evaluators import Evaluation, Evaluator
from einnas.search.records import ACCURACY, LATENCY_MS, LATENCY_SECONDS, LATENCY_SETTINGS, MACS, TrialRecord

#: name -> Optuna direction
OBJECTIVES = {"accuracy": "maximize", "latency": "minimize", "params": "minimize", "macs": "minimize"}
DEFAULT_OBJECTIVES = ("accuracy",)
LATENCY_CONSTRAINT = "latency_ms"  # the constraint's key (system attr ``constraints:latency_ms``)
LATENCY_FAILED = "latency_failed"


def parse_objectives(text: str | tuple | list) -> tuple[str, ...]:
    """``"accuracy,latency"`` -> ``("accuracy", "latency")``; :class:`UsageError` for an
    unknown or repeated name, more than three, or a list without accuracy."""
    names = tuple(s.strip() for s in (text.split(",") if isinstance(text, str) else text))
    if not names or any(not n for n in names):
        raise UsageError(f"--objectives {text!r}: expected names separated by commas, e.g. accuracy,latency")
    for name in names:
        if name not in OBJECTIVES:
            raise UsageError(f"--objectives: unknown objective {name!r} (expected {', '.join(OBJECTIVES)})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"--objectives: {', '.join(repeated)} given twice")
    if len(names) > 3:
        raise UsageError(f"--objectives: at most three objectives, not {len(names)}")
    if "accuracy" not in names:
        raise UsageError("--objectives: accuracy must be one of them (the search trains candidates for it)")
    return names


@dataclass(frozen=True)
class Objectives:
    """The objectives of a search in value order, the latency constraint and how latency is measured."""

    names: tuple[str, ...] = DEFAULT_OBJECTIVES
    max_latency: float | None = None  # milliseconds; a constraint, not an objective
    latency: LatencySettings = field(default_factory=LatencySettings)

    def __post_init__(self):
        object.__setattr__(self, "names", parse_objectives(self.names))
        if self.max_latency is not None and not (self.max_latency > 0 and math.isfinite(self.max_latency)):
            raise UsageError(f"--max-latency must be a positive number of milliseconds, not {self.max_latency}")

    @property
    def multi(self) -> bool:
        return len(self.names) > 1

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[n] for n in self.names]

    @property
    def default(self) -> bool:
        """Today's single-objective search: accuracy, no constraint (nothing is measured)."""
        return self.names == DEFAULT_OBJECTIVES and self.max_latency is None

    @property
    def measures_latency(self) -> bool:
        return "latency" in self.names or self.max_latency is not None

    def settings(self) -> dict:
        """Stored in the study's ``einnas`` attribute (every worker must agree)."""
        return {"objectives": list(self.names), "max_latency": self.max_latency,
                "latency": self.latency.as_dict() if self.measures_latency else None}

    def raw(self, record: TrialRecord) -> tuple[float, ...] | None:
        """The record's objective values in order, accuracy at its fidelity level
        (``TrialRecord.fitness``); None when any is missing."""
        fitness = record.fitness
        if fitness is None:
            return None
        attrs = record.attrs
        found = {"accuracy": fitness[1], "latency": attrs.get(LATENCY_MS), "params": record.params,
                 "macs": attrs.get(MACS)}
        values = tuple(found[n] for n in self.names)
        if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
            return None
        return tuple(float(v) for v in values)

    def minimise(self, record: TrialRecord) -> tuple[float, ...] | None:
        """:meth:`raw` as a minimisation vector (accuracy negated), for ``pareto.py``."""
        values = self.raw(record)
        return None if values is None else to_minimise(values, self.names)


def to_minimise(values, names) -> tuple[float, ...]:
    return tuple(-v if OBJECTIVES[n] == "maximize" else v for v, n in zip(values, names))


def analytic_macs(arch, input_shape, num_classes: int) -> int | None:
    """MACs per sample from the grammar's shape walk (None where it cannot say)."""
    from einnas.grammar.scaling import estimate

    try:
        return int(estimate(arch, tuple(input_shape), num_classes).macs)
    except EinnasError:
        return None


class ObjectiveEvaluator(Evaluator):
    """Wraps an evaluator: measures latency (and MACs) of each candidate, then evaluates it
    and returns the values of :class:`Objectives` in order, with the latency constraint."""

    def __init__(self, base: Evaluator, objectives: Objectives, input_shape, num_classes: int):
        self.base, self.objectives = base, objectives
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.scored_by, self.reports = base.scored_by, base.reports

    def settings(self) -> dict:
        return self.base.settings()

    def for_seed(self):
        base = self.base.for_seed()
        return self if base is self.base else ObjectiveEvaluator(base, self.objectives, self.input_shape,
                                                                 self.num_classes)

    @property
    def device(self):
        return getattr(self.base, "device", None)

    def evaluate(self, arch, seed, report=None):
        from einnas.evaluate.latency import arch_latency

        o, extra, spent = self.objectives, {}, 0.0
        latency = None
        if o.measures_latency:
            start = time.perf_counter()
            try:
                measured = arch_latency(arch, self.input_shape, self.num_classes, o.latency)
            except EinnasError as error:
                return Evaluation(False, reason=LATENCY_FAILED, detail=str(error)[:300],
                                  params=arch.info.params if arch.info else None,
                                  seconds=time.perf_counter() - start)
            spent = time.perf_counter() - start
            latency = measured.ms
            extra.update({LATENCY_MS: latency, LATENCY_SETTINGS: measured.settings, LATENCY_SECONDS: round(spent, 4)})
        macs = analytic_macs(arch, self.input_shape, self.num_classes) if not o.default else None
        if macs is not None:
            extra[MACS] = macs
        if report is not None and o.multi:
            report = self._with_point(report, {"latency": latency, "macs": macs,
                                                "params": arch.info.params if arch.info else None})
        evaluation = self.base.evaluate(arch, seed) if report is None else self.base.evaluate(arch, seed, report=report)
        evaluation = replace(evaluation, seconds=evaluation.seconds + spent, extra={**evaluation.extra, **extra})
        if o.max_latency is not None and latency is not None:
            evaluation.constraints[LATENCY_CONSTRAINT] = latency - o.max_latency
        if evaluation.ok and evaluation.value is not None and o.multi:
            params = evaluation.params if evaluation.params is not None else (arch.info.params if arch.info else None)
            found = {"accuracy": evaluation.value, "latency": latency, "params": params, "macs": macs}
            if any(found[n] is None for n in o.names):
                missing = [n for n in o.names if found[n] is None]
                return replace(evaluation, ok=False, reason="no_objective",
                               detail=f"no {', '.join(missing)} for this candidate")
            evaluation.values = [float(found[n]) for n in o.names]
            evaluation.extra[ACCURACY] = evaluation.value
        return evaluation

    def _with_point(self, report, known: dict):
        """The multi-objective ``report`` callback (``search.loop._pareto_reporter``) given
        each epoch's minimisation vector: that epoch's accuracy and the objectives known
        before training (latency, parameters, MACs)."""
        names = self.objectives.names

        def report_point(epoch: int, value: float) -> bool:
            values = [value if n == "accuracy" else known.get(n) for n in names]
            if any(v is None for v in values):
                return report(epoch, value)
            return report(epoch, value, point=to_minimise(values, names))

        return report_point
