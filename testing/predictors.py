"""The contract of a predictor (:class:`einnas.surrogate.interface.BasePredictor`)."""

from __future__ import annotations

import random

import pytest

from einnas.testing._common import INPUT_SHAPE, NUM_CLASSES, score_of, small_space


class PredictorContract:
    """Subclass as ``TestMyPredictor(PredictorContract)`` and override the ``predictor`` fixture."""

    @pytest.fixture
    def predictor(self):
        """The predictor under test, fitted."""
        raise NotImplementedError("override the `predictor` fixture to return your BasePredictor")

    @pytest.fixture
    def space(self):
        return small_space()

    @pytest.fixture
    def graphs(self, space):
        """Described graphs (``GraphRecord``) of six sampled architectures."""
        from einnas.surrogate.features import describe_arch

        rng = random.Random(0)
        return [describe_arch(space.sample(rng), INPUT_SHAPE, NUM_CLASSES) for _ in range(6)]

    @pytest.fixture
    def records(self, space):
        """Bench records (as ``load_records`` returns them) of 40 sampled architectures with made-up accuracies."""
        rng = random.Random(1)
        out = []
        for _ in range(40):
            arch = space.sample(rng)
            out.append({"ok": True, "arch": arch.string, "archid": arch.archid, "val_acc": score_of(arch.archid),
                        "dataset": "contract", "input_shape": list(INPUT_SHAPE), "num_classes": NUM_CLASSES,
                        "train_size": 100, "budget": {"epochs": 2, "seconds": None}})
        return out

    @pytest.fixture
    def fit_options(self):
        """Keyword options for ``fit`` (e.g. a smaller ensemble to keep the test fast)."""
        return {}

    def test_is_a_predictor(self, predictor):
        from einnas.surrogate.interface import BasePredictor

        assert isinstance(predictor, BasePredictor)

    def test_predicts_a_mean_and_a_nonnegative_std_per_graph(self, predictor, graphs):
        import numpy as np

        from einnas.surrogate.interface import Prediction

        prediction = predictor.predict(graphs)
        assert isinstance(prediction, Prediction)
        mean, std = prediction
        n = len(graphs)
        assert np.shape(mean) == np.shape(std) == np.shape(prediction.expected) == (n,)
        assert np.all(np.isfinite(mean)) and np.all(np.asarray(std) >= 0)

    def test_a_graph_is_predicted_the_same_alone_or_in_a_batch_and_again(self, predictor, graphs):
        import numpy as np

        batch = predictor.predict(graphs).mean
        alone = np.array([predictor.predict([g]).mean[0] for g in graphs])
        assert np.allclose(batch, alone, atol=1e-6)
        assert np.allclose(batch, predictor.predict(graphs).mean, atol=0)

    def test_says_what_it_predicts_and_what_it_was_fitted_on(self, predictor, graphs):
        import numpy as np

        from einnas.surrogate.task import Task

        tasks = predictor.tasks()
        assert isinstance(tasks, dict) and all(isinstance(t, Task) for t in tasks.values())
        assert isinstance(predictor.ranges(), dict)
        assert isinstance(predictor.target(), str) and predictor.target()
        ranks = np.asarray(predictor.rank(predictor.predict(graphs).expected))
        assert ranks.shape == (len(graphs),)
        finite = ranks[np.isfinite(ranks)]
        assert np.all((finite >= 0) & (finite <= 100))

    def test_fit_returns_a_new_predictor_and_leaves_this_one_unchanged(self, predictor, graphs, records, fit_options):
        import numpy as np

        from einnas.surrogate.interface import BasePredictor

        before = predictor.predict(graphs).mean.copy()
        fitted = predictor.fit(records, **fit_options)
        assert isinstance(fitted, BasePredictor) and fitted is not predictor
        assert np.array_equal(predictor.predict(graphs).mean, before)
        assert np.shape(fitted.predict(graphs).mean) == (len(graphs),)
