"""Search options: checks, names and defaults sized for small datasets."""

import pytest

from einnas.errors import UsageError
from einnas.search import SearchConfig, default_study_name


def test_default_study_name_is_the_same_for_the_same_command():
    assert default_study_name(SearchConfig("digits", trials=3), "digits") == "digits-re-s0"
    assert default_study_name(SearchConfig("d", trials=3, init="resnet18,vit", seed=2), "d") == "d-re-resnet18+vit-s2"
    assert default_study_name(SearchConfig("d", trials=3, strategy="random"), "my data") == "my_data-random-s0"


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give --trials"),
    ({"trials": 0}, "--trials must be positive"),
    ({"trials": 3, "strategy": "bayes"}, "expected re or random"),
    ({"trials": 3, "strategy": "random", "init": "mix"}, "needs --strategy re"),
    ({"trials": 3, "evaluator": "surrogate"}, "needs a predictor"),
    ({"trials": 3, "study_name": "a b"}, "--study-name"),
    ({"trials": 3, "seconds": -1.0}, "--seconds must be positive"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(UsageError, match=message):
        SearchConfig("digits", **kwargs).check()


def test_surrogate_needs_the_assisted_module(monkeypatch):
    import sys

    from einnas.search.run import _assisted

    monkeypatch.setitem(sys.modules, "einnas.search.assisted", None)  # as if the module were missing
    with pytest.raises(UsageError, match="einnas.search.assisted"):
        _assisted()
