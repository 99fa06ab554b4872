"""Multi-fidelity: train every candidate briefly, only the promising ones to the full budget.

Successive halving as asynchronous rungs (ASHA, Li et al. 2020) with Optuna's
:class:`~optuna.pruners.SuccessiveHalvingPruner`: a candidate trains with its full
schedule (``epochs``, cosine learning rate) and reports its validation accuracy
after every epoch (``trial.report``). At epoch ``min_epochs * eta**k`` (rung ``k``)
it continues only if its accuracy is in the top ``1/eta`` of every candidate that
reached rung ``k`` so far (the first one always continues); otherwise its training
stops there and the trial is PRUNED with ``reason=pruned``, ``rung=k`` and
``rung_value`` (see ``records.py``: it counts as a trial and competes in RE's
tournament at its own fidelity).

Successive halving alone is biased towards networks that learn fast in their first
epoch: deep residual networks often sit at chance after one epoch and lead after
eight (on mnist1d, the ResNet18 seed: 11% after epoch 1, 73% after 8; shallow nets 20%
after epoch 1, 45% after 8), so every mutation of the best seed was stopped at rung 0.
A mutation is a small edit of its parent, so its curve is compared with its parent's
too (the parent's curve is recorded in the child as ``parent_curve``): a candidate that
the rung would stop keeps training while its accuracy at that epoch is at least its
parent's there minus :data:`LINEAGE_TOLERANCE`.

The rung values live in the trials' system attributes (``completed_rung_k``, written
by the pruner), so workers sharing the study and a resumed search all compare with
the same candidates. With the defaults (``min_epochs=1``, ``eta=3``, 8 epochs) the
rungs are at epochs 1 and 3: a third of the candidates train a third of the budget
and a ninth train all of it, so a search evaluates about three times as many
candidates per hour.

Example::

    rungs = Rungs(epochs=8)
    study.pruner = rungs.pruner()
    rungs.steps          # (1, 3)
    rungs.rung_of(3)     # 1
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ETA = 3  # Optuna's and Hyperband's reduction factor
DEFAULT_MIN_EPOCHS = 1
#: A mutation the rung would stop goes on while it is within this much of its parent's
#: validation accuracy at the same epoch.
LINEAGE_TOLERANCE = 0.02
#: Trial user attribute: the parent's validation accuracy after each epoch.
PARENT_CURVE = "parent_curve"


@dataclass(frozen=True)
class Rungs:
    """The rung schedule of successive halving for candidates trained ``epochs`` epochs."""

    epochs: int
    min_epochs: int = DEFAULT_MIN_EPOCHS
    eta: int = DEFAULT_ETA

    @property
    def steps(self) -> tuple[int, ...]:
        """The epochs at which candidates are compared (below the full budget)."""
        out, step = [], self.min_epochs
        while step < self.epochs:
            out.append(step)
            step *= self.eta
        return tuple(out)

    @property
    def active(self) -> bool:
        """Whether any candidate can be stopped early (some rung below the full budget)."""
        return bool(self.steps) and self.eta >= 2

    def rung_of(self, epoch: int) -> int:
        """The index of the last rung at or below ``epoch`` (-1 before the first)."""
        return sum(1 for step in self.steps if step <= epoch) - 1

    def pruner(self):
        """An Optuna pruner implementing these rungs (state in the study's trials)."""
        import optuna

        from einnas.search._pruning import LineagePruner

        return LineagePruner(optuna.pruners.SuccessiveHalvingPruner(
            min_resource=self.min_epochs, reduction_factor=self.eta, min_early_stopping_rate=0,
        ))

    def settings(self) -> dict:
        """What every worker of a study must share."""
        return {"min_epochs": self.min_epochs, "eta": self.eta, "rungs": list(self.steps),
                "lineage_tolerance": LINEAGE_TOLERANCE}


def keeps_up(value: float, step: int, parent_curve, tolerance: float = LINEAGE_TOLERANCE) -> bool:
    """Whether accuracy ``value`` after epoch ``step`` is within ``tolerance`` of the parent's
    accuracy after that epoch (``False`` when the parent's curve does not reach it)."""
    if not parent_curve or not 1 <= step <= len(parent_curve) or parent_curve[step - 1] is None:
        return False
    return value >= parent_curve[step - 1] - tolerance
