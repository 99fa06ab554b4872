"""A search worker with an instant, deterministic fake evaluator (storage and concurrency tests).

    python fake_worker.py STORAGE STUDY TRIALS SEED [SLEEP [fidelity]]

Prints this worker's stats as JSON. The score of an architecture is a hash of its
archid, so every process agrees on it without training anything.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

from einnas.grammar import Limits, load_grammar
from einnas.search import Evaluation, Evaluator, RegularisedEvolution, SearchSpace, open_storage, open_study, run_worker
from einnas.search.fidelity import Rungs


class FakeEvaluator(Evaluator):
    """Scores by hashing the archid; every ``fail_every``-th hash fails with ``nan_loss``."""

    scored_by = "trained"

    def __init__(self, sleep: float = 0.0, fail_every: int = 0):
        self.sleep, self.fail_every = sleep, fail_every
        self.calls: list[str] = []

    def settings(self):
        return {"evaluator": "fake"}

    def evaluate(self, arch, seed):
        self.calls.append(arch.archid)
        h = int(hashlib.sha256(arch.archid.encode()).hexdigest()[:8], 16)
        if self.sleep:
            time.sleep(self.sleep)
        params = arch.info.params if arch.info else None
        if self.fail_every and h % self.fail_every == 0:
            return Evaluation(False, reason="nan_loss", detail="fake failure", params=params)
        value = (h % 10_000) / 10_000
        return Evaluation(True, value=value, params=params, seconds=self.sleep, curve=[value / 2, value])


class FidelityEvaluator(FakeEvaluator):
    """Reports a rising curve epoch by epoch (final value from the archid hash, reached at
    ``epochs``) and stops when ``report`` says so: multi-fidelity without training."""

    reports = True

    def __init__(self, epochs: int = 9, sleep: float = 0.0):
        super().__init__(sleep)
        self.epochs = epochs
        self.epochs_run: dict[str, int] = {}

    def evaluate(self, arch, seed, report=None):
        self.calls.append(arch.archid)
        final = (int(hashlib.sha256(arch.archid.encode()).hexdigest()[:8], 16) % 10_000) / 10_000
        curve, stopped = [], False
        for epoch in range(1, self.epochs + 1):
            curve.append(final * (0.5 + 0.5 * epoch / self.epochs))
            if self.sleep:
                time.sleep(self.sleep / self.epochs)
            if report is not None and epoch < self.epochs and report(epoch, curve[-1]):
                stopped = True
                break
        self.epochs_run[arch.archid] = len(curve)
        params = arch.info.params if arch.info else None
        return Evaluation(True, value=curve[-1], params=params, curve=curve, stopped=stopped)


def make_space() -> SearchSpace:
    return SearchSpace(load_grammar(), (1, 8, 8), 10, Limits(max_params=50_000, max_activations=20_000))


def settings_for(strategy, evaluator, seed: int) -> dict:
    return {"dataset": "fake", "seed": seed, **strategy.settings(), **evaluator.settings()}


def main(argv: list[str]) -> int:
    storage, name, trials, seed = argv[0], argv[1], int(argv[2]), int(argv[3])
    sleep = float(argv[4]) if len(argv) > 4 else 0.0
    fidelity = len(argv) > 5 and argv[5] == "fidelity"
    strategy = RegularisedEvolution(make_space(), 6, 2)
    evaluator = FidelityEvaluator(sleep=sleep) if fidelity else FakeEvaluator(sleep)
    study = open_study(open_storage(storage), name, settings_for(strategy, evaluator, seed), seed=seed, shown=storage)
    rungs = Rungs(epochs=9) if fidelity else None
    stats = run_worker(study, strategy, evaluator, seed=seed, trials=trials, poll=0.2, rungs=rungs)
    print(json.dumps({"evaluated": stats.evaluated, "surplus": stats.surplus, "archids": evaluator.calls}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
