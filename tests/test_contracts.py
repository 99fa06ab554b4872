"""The shipped contract suites (einnas.testing) run on every built-in strategy, evaluator and predictor.

Parametrized over the registries, so a strategy or evaluator added to STRATEGIES / EVALUATORS
is checked without anyone remembering to; each is built the way a search builds it (create).
"""

import numpy as np
import optuna
import pytest

from einnas.search import EVALUATORS, STRATEGIES, EvaluatorContext, StrategyOptions
from einnas.testing import EvaluatorContract, PredictorContract, StrategyContract

optuna.logging.set_verbosity(optuna.logging.WARNING)
BUILTIN_STRATEGIES = ["re", "random", "sample"]
BUILTIN_EVALUATORS = ["train", "surrogate", "record"]


def test_the_tables_hold_the_built_ins():
    assert list(STRATEGIES)[:3] == BUILTIN_STRATEGIES
    assert list(EVALUATORS)[:3] == BUILTIN_EVALUATORS


@pytest.mark.parametrize("name", BUILTIN_STRATEGIES)
class TestBuiltinStrategy(StrategyContract):
    @pytest.fixture
    def strategy(self, space, name):
        return STRATEGIES[name].create(space, StrategyOptions(population=4, tournament=2, expected_trials=12))


class TestAssistedStrategy(StrategyContract):
    @pytest.fixture
    def strategy(self, space):
        from einnas.search import RegularisedEvolution
        from einnas.search.assisted import make_strategy

        return make_strategy(RegularisedEvolution(space, 4, 2), "default", space=space, seed=0, candidates=3)


def _tiny_dataset():
    from einnas.evaluate import from_arrays

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 1, 8, 8)).astype(np.float32)
    y = np.arange(96) % 10
    x[np.arange(96), 0, y % 8, y // 8 * 4] += 3.0  # learnable: the label lights a pixel
    return from_arrays("contract", (x[:64], y[:64]), (x[64:80], y[64:80]), (x[80:], y[80:]), num_classes=10)


@pytest.mark.parametrize("name", BUILTIN_EVALUATORS)
class TestBuiltinEvaluator(EvaluatorContract):
    @pytest.fixture
    def evaluator(self, space, name):
        from einnas.evaluate import TrainConfig

        train = TrainConfig(epochs=2, batch_size=32, threads=1)
        return EVALUATORS[name].create(EvaluatorContext(space, _tiny_dataset(), train, device="cpu",
                                                        surrogate="default", run={"command": "contract"}))


class TestShippedPredictor(PredictorContract):
    @pytest.fixture(scope="class")
    def predictor(self):
        from einnas.surrogate.score import load_predictor

        return load_predictor("default")

    @pytest.fixture
    def fit_options(self):
        return {"members": 2, "trees": 30, "gate_trees": 15, "use_proxies": False, "use_text": False}
