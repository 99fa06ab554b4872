"""The contract of a search strategy (:class:`einnas.search.Strategy`)."""

from __future__ import annotations

import random

import pytest

from einnas.testing._common import assert_json, fake_view, score_of, small_space


class StrategyContract:
    """Subclass as ``TestMyStrategy(StrategyContract)`` and override the ``strategy`` fixture."""

    @pytest.fixture
    def space(self):
        """The search space handed to the strategy (override for another grammar or input)."""
        return small_space()

    @pytest.fixture
    def strategy(self, space):
        """The strategy under test, built on ``space``."""
        raise NotImplementedError("override the `strategy` fixture to return your Strategy")

    @pytest.fixture
    def populated(self, space):
        """A view of 12 completed trials (more than a small population)."""
        return fake_view(space, 12)

    def test_is_a_strategy_with_a_name_and_stored_settings(self, strategy, space):
        from einnas.search.strategies import Strategy

        assert isinstance(strategy, Strategy)
        assert isinstance(strategy.name, str) and strategy.name
        settings = strategy.settings()
        assert isinstance(settings, dict) and "strategy" in settings
        assert_json(settings, "settings()")
        assert strategy.space is space

    def test_proposes_an_architecture_of_its_space_on_an_empty_study(self, strategy):
        from einnas.search.records import StudyView

        self._check(strategy, strategy.propose(StudyView([]), 0, random.Random(0)), StudyView([]))

    def test_proposes_from_a_populated_study(self, strategy, populated):
        for k in range(5):
            self._check(strategy, strategy.propose(populated, len(populated), random.Random(k)), populated)

    def test_the_same_view_and_rng_give_the_same_proposal(self, strategy, populated):
        """No state outside the study: what a worker proposes depends on (view, trial, rng) only."""
        for view in (fake_view(strategy.space, 0), populated):
            first = [strategy.propose(view, len(view), random.Random(k)).arch.archid for k in range(3)]
            again = [strategy.propose(view, len(view), random.Random(k)).arch.archid for k in range(3)]
            assert first == again

    def test_leaves_global_randomness_alone(self, strategy, populated):
        import numpy as np

        state, np_state = random.getstate(), np.random.get_state()
        strategy.propose(populated, len(populated), random.Random(1))
        assert random.getstate() == state, "use the rng argument, not the random module"
        assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state) if isinstance(a, np.ndarray))

    def test_runs_in_the_worker_loop(self, strategy):
        """Six trials on a real (in-memory) Optuna study: counted exactly, no architecture twice."""
        import optuna

        from einnas.search.evaluators import Evaluation, Evaluator
        from einnas.search.loop import run_worker
        from einnas.search.records import StudyView
        from einnas.search.storage import open_study

        class Scored(Evaluator):
            scored_by = "trained"

            def evaluate(self, arch, seed):
                return Evaluation(True, value=score_of(arch.archid), params=arch.info.params if arch.info else None)

        evaluator = Scored()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = open_study(optuna.storages.InMemoryStorage(), "contract",
                           {**strategy.settings(), **evaluator.settings()}, shown="memory")
        run_worker(study, strategy, evaluator, seed=0, trials=6, poll=0.01)
        view = StudyView.of(study)
        assert view.counted == 6
        archids = [r.archid for r in view.records if r.counted]
        assert len(set(archids)) == len(archids) == 6
        for r in view.records:
            assert strategy.space.parse(r.arch).archid == r.archid

    @staticmethod
    def _check(strategy, proposal, view) -> None:
        from einnas.grammar import Architecture
        from einnas.search.strategies import Proposal

        assert isinstance(proposal, Proposal) and isinstance(proposal.arch, Architecture)
        assert isinstance(proposal.origin, str) and proposal.origin
        assert isinstance(proposal.seed, bool)
        parsed = strategy.space.parse(proposal.arch.string)  # valid in the space, within its limits
        assert parsed.archid == proposal.arch.archid
        if proposal.parent is not None:
            assert proposal.parent in {r.number for r in view.records}, "parent must be a trial of the view"
