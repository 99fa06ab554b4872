"""Reusable contract test suites for code that plugs into einnas (as optuna's ``BasicSamplerTestCase``).

A plugin author subclasses a contract in their own test file and overrides one fixture
that returns their object; pytest then runs every check of the contract on it::

    import pytest
    from einnas.testing import StrategyContract

    class TestAnnealing(StrategyContract):
        @pytest.fixture
        def strategy(self, space):            # space: a small built-in search space
            return Annealing(space, temperature=0.5)

=====================  ==========================  =========================================
contract               override                    checks
=====================  ==========================  =========================================
StrategyContract       ``strategy(space)``         name and settings, valid proposals on an
                                                   empty and a populated study, the same
                                                   view and rng give the same proposal (no
                                                   hidden state), no global randomness, a
                                                   real worker loop counts its trials
EvaluatorContract      ``evaluator(space)``        scored_by and settings, a finite score or
                                                   a reason (never an exception), JSON-able
                                                   extras, same seed same score, and
                                                   multi-fidelity reports when ``reports``
PredictorContract      ``predictor()``             Prediction shapes and ranges, batch
                                                   independence, determinism, tasks /
                                                   ranges / target / rank, ``fit`` returns
                                                   a new predictor and leaves this one alone
=====================  ==========================  =========================================

Other fixtures may be overridden too (``space``, ``arch``, ``graphs``, ``records``,
``fit_options``); set ``deterministic = False`` on an evaluator contract whose scores
vary run to run. Needs pytest (the ``test`` extra).
"""

from einnas.testing.evaluators import EvaluatorContract
from einnas.testing.predictors import PredictorContract
from einnas.testing.strategies import StrategyContract

__all__ = ["EvaluatorContract", "PredictorContract", "StrategyContract"]
