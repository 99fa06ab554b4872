"""The contract of an evaluator (:class:`einnas.search.Evaluator`)."""

from __future__ import annotations

import math
import random

import pytest

from einnas.testing._common import assert_json, small_space


class EvaluatorContract:
    """Subclass as ``TestMyEvaluator(EvaluatorContract)`` and override the ``evaluator`` fixture."""

    #: Whether the same architecture and seed give the same score (set False if not).
    deterministic = True

    @pytest.fixture
    def space(self):
        return small_space()

    @pytest.fixture
    def evaluator(self, space):
        """The evaluator under test, for architectures of ``space``."""
        raise NotImplementedError("override the `evaluator` fixture to return your Evaluator")

    @pytest.fixture
    def arch(self, space):
        """A candidate to score (override to pick one your evaluator can handle)."""
        return space.sample(random.Random(0))

    def test_is_an_evaluator_with_scored_by_and_stored_settings(self, evaluator):
        from einnas.search.evaluators import Evaluator

        assert isinstance(evaluator, Evaluator)
        assert isinstance(evaluator.scored_by, str) and evaluator.scored_by
        assert isinstance(evaluator.reports, bool)
        settings = evaluator.settings()
        assert isinstance(settings, dict) and "evaluator" in settings
        assert_json(settings, "settings()")

    def test_returns_a_finite_score_or_a_reason(self, evaluator, arch):
        from einnas.search.evaluators import Evaluation

        result = evaluator.evaluate(arch, 0)
        assert isinstance(result, Evaluation)
        if result.ok:
            assert isinstance(result.value, float) and math.isfinite(result.value)
        else:
            assert isinstance(result.reason, str) and result.reason
        assert result.params is None or (isinstance(result.params, int) and result.params >= 0)
        assert result.seconds >= 0
        assert all(isinstance(v, float) for v in result.curve)
        assert_json(result.extra, "Evaluation.extra")

    def test_same_architecture_and_seed_give_the_same_score(self, evaluator, arch):
        """A retried trial is evaluated with the same seed and must get the same score."""
        if not self.deterministic:
            pytest.skip("deterministic = False")
        first, again = evaluator.evaluate(arch, 3), evaluator.evaluate(arch, 3)
        assert (first.ok, first.value, first.reason) == (again.ok, again.value, again.reason)

    def test_reports_the_curve_and_stops_when_told(self, evaluator, arch):
        """With ``reports = True``: ``report(epoch, value)`` after each epoch; True stops there.
        Without: the loop never passes ``report``, and no result may claim a stop at a rung."""
        if not evaluator.reports:
            assert evaluator.evaluate(arch, 0).stopped is False
            return
        calls = []

        def report(epoch, value):
            calls.append((epoch, value))
            return True  # stop at the first rung

        result = evaluator.evaluate(arch, 0, report=report)
        assert result.ok, f"the candidate failed ({result.reason}); override `arch`"
        assert len(calls) == 1 and calls[0][0] == 1 and math.isfinite(calls[0][1])
        assert result.stopped and len(result.curve) == 1 and result.value == calls[0][1]
