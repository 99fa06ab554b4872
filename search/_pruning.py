"""The Optuna pruner of multi-fidelity search (imported on use: it needs optuna)."""

from __future__ import annotations

import optuna

from einnas.search.fidelity import LINEAGE_TOLERANCE, PARENT_CURVE, keeps_up


class LineagePruner(optuna.pruners.BasePruner):
    """Successive halving that lets a mutation keep training while it keeps up with its
    parent at the same epoch (see :mod:`einnas.search.fidelity`). The wrapped pruner always
    runs first, so its rung bookkeeping in the study is the same as without the wrapper."""

    def __init__(self, base: optuna.pruners.BasePruner, tolerance: float = LINEAGE_TOLERANCE):
        self.base, self.tolerance = base, tolerance

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if not self.base.prune(study, trial):
            return False
        step = trial.last_step
        if step is None:
            return True
        return not keeps_up(trial.intermediate_values[step], step, trial.user_attrs.get(PARENT_CURVE), self.tolerance)
