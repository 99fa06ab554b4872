"""Reading a study: each trial as a :class:`TrialRecord`, the study as a :class:`StudyView`.

The study is the one record of a search. Every trial carries, as Optuna user
attributes, the architecture and how it was scored:

===============  =============================================================
``arch``         canonical architecture string
``archid``       its 12-hex-character id
``params``       parameter count (analytic, head included)
``origin``       ``init`` / ``seed:<name>`` / ``mutation`` / ``random`` / ``retry``
``parent``       trial number of the parent (mutations only)
``is_seed``      true on an ``--init`` seed (trained to the full budget, never pruned);
                 written only on seeds. ``origin`` names the seed for people; code reads this
``scored_by``    ``trained`` or ``predicted``
``reason``       failure code of a failed candidate (``nan_loss``, ``timeout``, ...),
                 or ``surplus`` for a trial beyond the requested count (PRUNED)
``detail``       one line about the failure
``curve``        validation accuracy after each epoch
``seconds``      wall clock of the evaluation
``worker``       host and process that ran it; ``heartbeat`` its last sign of life
``parent_curve`` multi-fidelity: the parent's ``curve``, which a mutation is compared with
                 at each rung (``einnas.search.fidelity``)
``rung``         multi-fidelity: the rung (0 = the first) at which a pruned candidate
                 was stopped; ``rung_value`` its validation accuracy there
``rung_points``  multi-objective multi-fidelity: ``{rung: minimisation vector}``, the
                 candidate's objectives at each rung it reached (``search.loop``)
``latency_ms``   inference latency of the candidate's ONNX export in milliseconds
                 (float; ``einnas.evaluate.latency``), when measured: with a
                 ``latency`` objective or ``--max-latency``
``latency_settings``  how it was measured: ``{"batch", "threads", "repeats",
                 "warmup", "provider"}``; ``latency_seconds`` the measurement's
                 wall clock (export included)
``macs``         multiply-accumulates per sample (int, analytic), in every study
                 with objectives other than the default
``accuracy``     validation accuracy, also written on multi-objective trials (whose
                 Optuna ``value`` does not exist; their ``values`` follow the
                 objectives' order)
===============  =============================================================

The study's user attribute ``einnas`` (:data:`CONFIG_ATTR`, the search settings)
holds ``objectives``: the objective names in value order, e.g. ``["accuracy",
"latency"]`` (absent in studies made before objectives existed: ``["accuracy"]``).
``accuracy`` is maximised; ``latency`` (ms), ``params`` and ``macs`` are minimised.
A multi-objective COMPLETE trial has ``values`` in that order; pruned
(multi-fidelity) trials have no values. ``max_latency`` (ms or null) is a constraint
in Optuna's sense: each measured trial has the constraint ``latency_ms`` =
latency - max_latency (system attribute ``constraints:latency_ms``), feasible when
<= 0, which ``study.best_trials`` / ``best_trial`` respect. ``latency`` holds the
latency settings (null when latency is not measured).

How a trial counts towards ``--trials N``:

* *counted*: COMPLETE, or FAIL with a ``reason`` (the candidate was evaluated and
  failed) and not retried;
* *claim*: counted, RUNNING or WAITING (it holds one of the N slots);
* *lost*: FAIL without a reason (its worker died or was interrupted) — its
  architecture is retried in a new WAITING trial;
* *surplus*: PRUNED with ``reason=surplus`` — it was asked for when all N slots were
  already claimed, and was never evaluated;
* *pruned*: PRUNED with ``reason=pruned`` — multi-fidelity stopped its training at a
  rung (it was trained, briefly): counted, with no ``value`` (only candidates trained
  to the full budget have one, so ``best`` and ``top`` compare like with like) but with
  a :attr:`TrialRecord.fitness` for regularised evolution's tournament.

Fitness across fidelities (the tournament's key): ``(level, accuracy)`` compared
lexicographically, where ``level`` is the number of rungs the candidate passed
(a full-budget candidate ranks above every pruned one) and ``accuracy`` the
validation accuracy at that same level. Two candidates are thus compared by their
accuracy only at the same fidelity; one that reached a higher rung beat the
others at every lower rung it shared with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable

ARCH, ARCHID, PARAMS, ORIGIN, PARENT = "arch", "archid", "params", "origin", "parent"
SCORED_BY, REASON, DETAIL, CURVE, SECONDS = "scored_by", "reason", "detail", "curve", "seconds"
WORKER, HEARTBEAT = "worker", "heartbeat"
IS_SEED = "is_seed"  # an --init seed architecture (Proposal.seed)
SURPLUS = "surplus"
PRUNED_REASON = "pruned"  # stopped at a multi-fidelity rung (trained briefly, counted)
RUNG, RUNG_VALUE = "rung", "rung_value"
RUNG_POINTS = "rung_points"  # multi-objective: {rung: minimisation vector} (search.loop)
LATENCY_MS, LATENCY_SETTINGS, LATENCY_SECONDS = "latency_ms", "latency_settings", "latency_seconds"
MACS, ACCURACY = "macs", "accuracy"
FULL_LEVEL = 1_000  # the fitness level of a candidate trained to the full budget
#: Study user attribute holding the search settings every worker must share.
CONFIG_ATTR = "einnas"
#: System attribute names of Optuna's RetryHeartbeatStaleTrialCallback (kept compatible).
FAILED_TRIAL, RETRY_HISTORY = "failed_trial", "retry_history"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the search sees it (see the module docstring for the attributes)."""

    number: int
    state: str  # Optuna TrialState name: COMPLETE, FAIL, RUNNING, WAITING, PRUNED
    value: float | None
    arch: str | None
    archid: str | None
    params: int | None
    origin: str | None
    parent: int | None
    scored_by: str | None
    reason: str | None
    detail: str
    seconds: float | None
    retried: bool  # a lost trial whose architecture went to a new trial
    retry_of: int | None  # the trial this one retries
    attrs: dict
    values: tuple | None = None  # a COMPLETE trial's Optuna values (objectives' order)
    constraints: dict = field(default_factory=dict)  # Optuna constraints (feasible when all <= 0)

    @property
    def violation(self) -> float:
        """How far the trial is outside its constraints (0 when feasible)."""
        return float(sum(max(0.0, c) for c in self.constraints.values()))

    @property
    def feasible(self) -> bool:
        return self.violation == 0

    @property
    def counted(self) -> bool:
        """Evaluated: counts towards the requested number of trials."""
        if self.state == "COMPLETE":
            return True
        if self.state == "PRUNED":
            return self.reason == PRUNED_REASON
        return self.state == "FAIL" and bool(self.reason) and self.reason != SURPLUS and not self.retried

    @property
    def is_seed(self) -> bool:
        """An ``--init`` seed (the population's anchor), as its proposal said."""
        return bool(self.attrs.get(IS_SEED))

    @property
    def pruned(self) -> bool:
        """Stopped at a multi-fidelity rung (counted, no ``value``)."""
        return self.state == "PRUNED" and self.reason == PRUNED_REASON

    @property
    def fitness(self) -> tuple[int, float] | None:
        """``(level, accuracy)`` for tournaments across fidelities (module docstring); None
        without a score."""
        if self.state == "COMPLETE" and self.value is not None:
            return (FULL_LEVEL, self.value)
        if self.pruned and isinstance(self.attrs.get(RUNG_VALUE), (int, float)):
            return (int(self.attrs.get(RUNG, 0)), float(self.attrs[RUNG_VALUE]))
        return None

    @property
    def claim(self) -> bool:
        """Holds one of the requested slots: counted, running or waiting to run."""
        return self.counted or self.state in ("RUNNING", "WAITING")

    @property
    def failed(self) -> bool:
        """A counted candidate that failed (its ``reason`` says why)."""
        return self.counted and self.state == "FAIL"

    @property
    def lost(self) -> bool:
        return self.state == "FAIL" and not self.counted

    @property
    def status(self) -> str:
        """A word for tables: ok, failed, running, waiting, lost, surplus."""
        if self.state == "COMPLETE":
            return "ok"
        if self.failed:
            return "failed"
        if self.lost:
            return "lost (retried)" if self.retried else "lost"
        if self.pruned:
            return f"pruned (rung {self.attrs.get(RUNG, 0)})"
        if self.state == "PRUNED":
            return self.reason or "pruned"
        return self.state.lower()

    def as_dict(self) -> dict:
        """Plain data for JSON output."""
        return {
            "number": self.number, "state": self.state, "status": self.status, "value": self.value,
            "archid": self.archid, "params": self.params, "origin": self.origin, "parent": self.parent,
            "scored_by": self.scored_by, "reason": self.reason, "detail": self.detail,
            "seconds": self.seconds, "retry_of": self.retry_of, "arch": self.arch,
            "curve": self.attrs.get(CURVE), "rung": self.attrs.get(RUNG), "rung_value": self.attrs.get(RUNG_VALUE),
            "values": list(self.values) if self.values is not None else None,
            "latency_ms": self.attrs.get(LATENCY_MS), "macs": self.attrs.get(MACS), "feasible": self.feasible,
        }


def records_from_trials(trials: Iterable) -> list[TrialRecord]:
    """Turn Optuna ``FrozenTrial`` objects into records, sorted by trial number."""
    trials = sorted(trials, key=lambda t: t.number)
    retried = {n for t in trials for n in t.system_attrs.get(RETRY_HISTORY, ())}
    out = []
    for t in trials:
        a = t.user_attrs
        history = t.system_attrs.get(RETRY_HISTORY) or ()
        values = tuple(t.values) if t.state.name == "COMPLETE" and t.values is not None else None
        # a multi-objective trial's accuracy is its ``accuracy`` attribute (values follow the objectives)
        value = (values[0] if len(values) == 1 else a.get(ACCURACY)) if values else None
        out.append(TrialRecord(
            number=t.number, state=t.state.name, value=value,
            arch=a.get(ARCH), archid=a.get(ARCHID), params=a.get(PARAMS), origin=a.get(ORIGIN),
            parent=a.get(PARENT), scored_by=a.get(SCORED_BY), reason=a.get(REASON),
            detail=a.get(DETAIL) or "", seconds=a.get(SECONDS), retried=t.number in retried,
            retry_of=history[-1] if history else None, attrs=dict(a),
            values=values, constraints=_constraints(t),
        ))
    return out


def _constraints(trial) -> dict:
    # FrozenTrial.constraints (Optuna 5) reads system attributes ``constraints`` / ``constraints:<key>``
    try:
        return dict(trial.constraints)
    except AttributeError:
        return {}


class StudyView:
    """A read-only snapshot of a study's trials, given to strategies.

    Strategies read their population from it; the search loop reads the counts.
    """

    def __init__(self, records: Iterable[TrialRecord]):
        self.records: tuple[TrialRecord, ...] = tuple(sorted(records, key=lambda r: r.number))

    @classmethod
    def of(cls, study) -> "StudyView":
        """Snapshot an Optuna study (reads its storage once)."""
        return cls(records_from_trials(study.get_trials(deepcopy=False)))

    def __len__(self) -> int:
        return len(self.records)

    @cached_property
    def counted(self) -> int:
        return sum(r.counted for r in self.records)

    @cached_property
    def failed(self) -> int:
        return sum(r.failed for r in self.records)

    @cached_property
    def running(self) -> int:
        return sum(r.state == "RUNNING" for r in self.records)

    @cached_property
    def waiting(self) -> int:
        return sum(r.state == "WAITING" for r in self.records)

    def claims_before(self, number: int) -> int:
        """Slots held by trials numbered below ``number``."""
        return sum(r.claim for r in self.records if r.number < number)

    @cached_property
    def taken(self) -> dict[str, int]:
        """archid -> trial number, for every architecture evaluated or being evaluated."""
        out: dict[str, int] = {}
        for r in self.records:
            if r.claim and r.archid:
                out.setdefault(r.archid, r.number)
        return out

    def holders(self, archid: str, besides: int) -> list[int]:
        """Numbers of trials other than ``besides`` that hold ``archid`` (evaluated or running)."""
        return [r.number for r in self.records if r.claim and r.archid == archid and r.number != besides]

    @cached_property
    def completed(self) -> tuple[TrialRecord, ...]:
        """COMPLETE trials in number order (the ones with a score)."""
        return tuple(r for r in self.records if r.state == "COMPLETE" and r.value is not None)

    @cached_property
    def scored(self) -> tuple[TrialRecord, ...]:
        """Trials with a fitness (completed, or pruned at a rung) in number order."""
        return tuple(r for r in self.records if r.fitness is not None)

    @cached_property
    def pruned(self) -> int:
        return sum(r.pruned for r in self.records)

    @cached_property
    def best(self) -> TrialRecord | None:
        """The completed trial with the highest score (the lowest number on ties) among
        those within their constraints (all, without constraints)."""
        best = None
        for r in self.completed:
            if not r.feasible:
                continue
            if best is None or r.value > best.value:
                best = r
        return best

    def top(self, k: int) -> list[TrialRecord]:
        """The ``k`` best completed trials, best first (lower number first on ties)."""
        return sorted((r for r in self.completed if r.feasible), key=lambda r: (-r.value, r.number))[:k]
