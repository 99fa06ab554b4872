"""The worker loop: claim a slot, propose, evaluate, tell — with the study as the only state.

Any number of processes may run :func:`run_worker` on one study. The requested
number of trials is met exactly: a trial asked for when all ``trials`` slots are
claimed (by evaluated, running or waiting trials with lower numbers) is not
evaluated but marked PRUNED with ``reason=surplus``. Because trial numbers are
handed out in one order by the storage, the k-th evaluated trial saw at least
k-1 claims below it, so no more than ``trials`` are ever evaluated; a worker
stops only when ``trials`` are counted, so no fewer are (see ``records.py`` for
what counts).

Multi-fidelity (``rungs``, see ``fidelity.py``): an evaluator that ``reports``
gets a ``report(epoch, value)`` callback; each value goes into the trial
(``trial.report``) as it is measured and the study's successive-halving pruner
decides at each rung whether training goes on. A candidate stopped at a rung is
told PRUNED with ``reason=pruned``, ``rung`` and ``rung_value``: it was evaluated,
so it counts towards ``trials``. A multi-objective study (where Optuna's ``report``
and pruners do not apply) ranks the candidates at a rung by their objectives instead
(``_pareto_reporter``).

Randomness: trial ``n`` proposes with ``random.Random(f"einnas:search:{seed}:{n}")``
and trains its architecture with a seed derived from (seed, archid), so the same
sequential search with the same seed evaluates the same architectures in the same
order, and a retried architecture is trained exactly as the first time.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from einnas.errors import ArchitectureError, PluginError
from einnas.search.evaluators import Evaluation, Evaluator
from einnas.search.fidelity import PARENT_CURVE, keeps_up
from einnas.search.records import (
    ARCH, ARCHID, CURVE, DETAIL, IS_SEED, ORIGIN, PARAMS, PARENT, PRUNED_REASON, REASON, RUNG, RUNG_POINTS,
    RUNG_VALUE, SCORED_BY, SECONDS, SURPLUS, WORKER, StudyView, TrialRecord, records_from_trials,
)
from einnas.search.storage import (
    GRACE_PERIOD, HEARTBEAT_INTERVAL, Heartbeat, StaleMonitor, fail_lost_trials, release_trial, worker_identity,
)
from einnas.search.strategies import Proposal, Strategy

if TYPE_CHECKING:
    from einnas.search.fidelity import Rungs

MAX_PROPOSALS = 25  # proposals per trial before giving up on finding a new architecture
NO_NEW_ARCH = "no_new_architecture"
PLUGIN_ERROR = "plugin_error"  # a plugin op's shape rule or module failed (the message names it)


def trial_rng(seed: int, number: int) -> random.Random:
    """The random stream of trial ``number`` of a search with ``seed``."""
    return random.Random(f"einnas:search:{seed}:{number}")


def training_seed(seed: int, archid: str) -> int:
    """The training seed of an architecture in a search with ``seed`` (31 bits)."""
    digest = hashlib.blake2b(f"einnas:train:{seed}:{archid}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


@dataclass
class WorkerStats:
    """What one worker did (the study holds the full record)."""

    evaluated: int = 0
    pruned: int = 0  # of the evaluated: stopped at a multi-fidelity rung
    surplus: int = 0
    released: int = 0  # lost trials of dead workers this worker failed and queued again
    seconds: float = 0.0
    stopped_by: str = ""  # "trials", "timeout"


#: Called after every look at the study: (view, the trial this worker just finished or None).
Progress = Callable[[StudyView, "TrialRecord | None"], None]


def run_worker(
    study, strategy: Strategy, evaluator: Evaluator, *, seed: int, trials: int | None = None,
    timeout: float | None = None, progress: Progress | None = None,
    heartbeat_interval: float = HEARTBEAT_INTERVAL, grace_period: float = GRACE_PERIOD, poll: float = 1.0,
    rungs: "Rungs | None" = None,
) -> WorkerStats:
    """Run trials on ``study`` until ``trials`` are counted (all workers together) or
    ``timeout`` seconds have passed (no new trial starts after it).

    ``rungs`` (multi-fidelity) stops a candidate whose training curve is not among the
    best at a rung; it is used only with an evaluator that ``reports``.

    Returns when done; an interrupt (KeyboardInterrupt) fails the running trial and
    queues its architecture again, then propagates.
    """
    if trials is None and timeout is None:
        raise ValueError("give trials or timeout")
    monitor = StaleMonitor(grace_period)
    stats = WorkerStats()
    if rungs is not None and not (rungs.active and evaluator.reports):
        rungs = None
    if rungs is not None and len(study.directions) == 1:
        study.pruner = rungs.pruner()  # trial.should_prune asks the study's pruner
    start = time.monotonic()
    while True:
        if timeout is not None and time.monotonic() - start >= timeout:
            stats.stopped_by = "timeout"
            break
        stats.released += fail_lost_trials(study, monitor)
        view = StudyView.of(study)
        if progress:
            progress(view, None)
        if trials is not None:
            if view.counted >= trials:
                stats.stopped_by = "trials"
                break
            if view.counted + view.running >= trials and not view.waiting:
                time.sleep(poll)  # the last slots are held by running trials: wait for them
                continue
        record = _run_trial(study, strategy, evaluator, seed, trials, heartbeat_interval, rungs)
        if record is None:
            stats.surplus += 1
            continue
        stats.evaluated += 1
        stats.pruned += record.pruned
        if progress:
            progress(StudyView.of(study), record)
    stats.seconds = time.monotonic() - start
    return stats


def _run_trial(study, strategy, evaluator, seed, trials, heartbeat_interval, rungs=None) -> TrialRecord | None:
    import optuna

    with warnings.catch_warnings():
        # Optuna warns that storage heartbeats are meant for Study.optimize; this loop beats itself.
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask()
    trial.set_user_attr(WORKER, worker_identity())
    try:
        with Heartbeat(trial, heartbeat_interval):
            view = StudyView.of(study)
            if trials is not None and view.claims_before(trial.number) >= trials:
                trial.set_user_attr(REASON, SURPLUS)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
                return None
            reported: set[int] = set()  # epochs already reported to the trial while training
            try:
                proposal = _choose(study, trial, strategy, seed)
                if proposal is None:
                    evaluation = Evaluation(False, reason=NO_NEW_ARCH,
                                            detail=f"{MAX_PROPOSALS} proposals were all taken")
                else:
                    tseed = training_seed(seed, proposal.arch.archid)
                    chosen = evaluator.for_seed() if proposal.seed else evaluator  # seeds: a roomier budget
                    if rungs is None:
                        evaluation = chosen.evaluate(proposal.arch, tseed)
                    else:
                        reporter = (_pareto_reporter(study, trial, rungs, may_prune=not proposal.seed)
                                    if len(study.directions) > 1 else
                                    _reporter(trial, reported, may_prune=not proposal.seed))
                        evaluation = chosen.evaluate(proposal.arch, tseed, report=reporter)
            except PluginError as error:  # a plugin's op failing: this trial fails, the search goes on
                evaluation = Evaluation(False, reason=PLUGIN_ERROR, detail=str(error)[:300])
            frozen = _tell(study, trial, evaluator, evaluation, rungs, reported)
    except BaseException:
        # Interrupted or an einnas bug: give the slot and the architecture back.
        try:
            release_trial(study, trial)
        except Exception:  # noqa: BLE001 - the storage failing too: heartbeats will tell the others
            pass
        raise
    return records_from_trials([frozen])[0]


def _choose(study, trial, strategy: Strategy, seed: int) -> Proposal | None:
    """The trial's architecture: the queued one of a retried trial, else a new proposal
    whose archid no other trial holds (checked again after writing it, so two workers
    proposing the same architecture at once both see it and at least one moves on)."""
    attrs = trial.user_attrs
    if ARCH in attrs:  # a lost trial's architecture, queued again
        try:
            arch = strategy.space.parse(attrs[ARCH])
        except ArchitectureError:
            arch = None
        if arch is not None and not StudyView.of(study).holders(arch.archid, besides=trial.number):
            # a retried seed stays a seed: the study marks it (the origin only names it for people)
            return Proposal(arch, attrs.get(ORIGIN) or "retry", attrs.get(PARENT), seed=bool(attrs.get(IS_SEED)))
    rng = trial_rng(seed, trial.number)
    view = StudyView.of(study)
    for _ in range(MAX_PROPOSALS):
        proposal = strategy.propose(view, trial.number, rng)
        archid = proposal.arch.archid
        if view.holders(archid, besides=trial.number):
            continue
        info = proposal.arch.info
        for key, value in (
            (ARCH, proposal.arch.string), (ARCHID, archid), (PARAMS, info.params if info else None),
            (ORIGIN, proposal.origin), (PARENT, proposal.parent),
        ):
            trial.set_user_attr(key, value)
        if proposal.seed:
            trial.set_user_attr(IS_SEED, True)
        parent_curve = _curve_of(view, proposal.parent)
        if parent_curve:  # multi-fidelity compares a mutation with its parent (einnas.search.fidelity)
            trial.set_user_attr(PARENT_CURVE, parent_curve)
        view = StudyView.of(study)
        if not view.holders(archid, besides=trial.number):
            return proposal
    return None


def _curve_of(view: StudyView, number: int | None) -> list | None:
    """The recorded validation curve of trial ``number`` (``None`` if there is none)."""
    if number is None:
        return None
    record = next((r for r in view.records if r.number == number), None)
    return list(record.attrs.get(CURVE) or ()) if record is not None else None


def _reporter(trial, reported: set[int], may_prune: bool = True):
    """The ``report`` callback of one trial: record the value, ask the pruner (seeds, the
    population's anchors, report their curve but always train to the full budget)."""

    def report(epoch: int, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        trial.report(value, epoch)
        reported.add(epoch)
        return may_prune and trial.should_prune()

    return report


def _pareto_reporter(study, trial, rungs: "Rungs", may_prune: bool = True):
    """The ``report`` callback of one trial of a multi-objective study, where Optuna's
    ``report`` and pruners do not apply: successive halving over the objectives (MO-ASHA,
    ``pareto.promotes``). The evaluator (``objectives.ObjectiveEvaluator``) passes the
    candidate's minimisation vector with that epoch's accuracy as ``point``; at a rung it
    is recorded in the trial (``rung_points``, so every worker and a resumed search
    compare with the same candidates) and the candidate continues if it is in the best
    ``1/eta`` of the points at that rung, or keeps up with its parent (``fidelity``)."""
    from einnas.search.pareto import promotes

    points: dict[str, list[float]] = {}

    def report(epoch: int, value: float, point=None) -> bool:
        if value is None or not math.isfinite(value) or point is None or epoch not in rungs.steps:
            return False
        rung = str(rungs.rung_of(epoch))
        points[rung] = [float(x) for x in point]
        trial.set_user_attr(RUNG_POINTS, dict(points))
        if not may_prune:
            return False
        others = [t.user_attrs[RUNG_POINTS][rung] for t in study.get_trials(deepcopy=False)
                  if t.number != trial.number and rung in (t.user_attrs.get(RUNG_POINTS) or {})]
        if promotes(points[rung], others, rungs.eta):
            return False
        return not keeps_up(value, epoch, trial.user_attrs.get(PARENT_CURVE))

    return report


def _tell(study, trial, evaluator: Evaluator, evaluation: Evaluation, rungs=None, reported=frozenset()):
    import optuna

    ok = evaluation.ok and evaluation.value is not None and math.isfinite(evaluation.value)
    pruned = ok and evaluation.stopped and rungs is not None
    attrs = {SCORED_BY: evaluator.scored_by, SECONDS: round(evaluation.seconds, 3), CURVE: list(evaluation.curve)}
    if pruned:
        attrs.update({REASON: PRUNED_REASON, RUNG: rungs.rung_of(len(evaluation.curve)),
                      RUNG_VALUE: evaluation.value})
    if evaluation.params is not None:
        attrs[PARAMS] = evaluation.params
    if not ok:
        attrs[REASON] = evaluation.reason or "no_score"
        attrs[DETAIL] = evaluation.detail or ("the evaluator returned no finite score" if evaluation.ok else "")
    attrs.update(evaluation.extra)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    multi = len(study.directions) > 1  # Optuna's report() is for single-objective studies only
    for step, value in enumerate(evaluation.curve, 1):
        if not multi and step not in reported and value is not None and math.isfinite(value):
            trial.report(value, step)
    for key, value in evaluation.constraints.items():  # before tell: Optuna reads them at the end
        if value is not None and math.isfinite(value):
            trial.set_constraint(key, value)
    if pruned:
        return study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
    if ok:
        return study.tell(trial, list(evaluation.values) if multi else evaluation.value, skip_if_finished=True)
    return study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
