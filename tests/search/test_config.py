"""Search options: checks, names and defaults sized for small datasets."""

import pytest

from einnas.errors import UsageError
from einnas.search import SearchConfig, default_study_name


def test_default_study_name_is_the_same_for_the_same_command():
    assert default_study_name(SearchConfig("digits", trials=3), "digits") == "digits-re-s0"
    assert default_study_name(SearchConfig("d", trials=3, init="resnet18,vit", seed=2), "d") == "d-re-resnet18+vit-s2"
    assert default_study_name(SearchConfig("d", trials=3, strategy="random"), "my data") == "my_data-random-s0"


@pytest.mark.parametrize("kwargs, message", [
    ({"trials": 0}, "--trials must be positive"),
    ({"trials": 3, "strategy": "bayes"}, "expected re, random or sample"),
    ({"trials": 3, "strategy": "random", "init": "mix"}, "needs --strategy re"),
    ({"trials": 3, "evaluator": "surrogate"}, "needs a predictor"),
    ({"trials": 3, "study_name": "a b"}, "--study-name"),
    ({"trials": 3, "seconds": -1.0}, "--seconds must be positive"),
    ({"trials": 3, "surrogate": "default", "candidates": 0}, "--candidates must be positive"),
    ({"trials": 3, "surrogate": "default", "refit_every": -2}, "--refit-every must be 0"),
    ({"trials": 3, "surrogate": "default", "kappa": float("nan")}, "--kappa must be a finite"),
    ({"trials": 3, "kappa": 1.0}, "give --surrogate"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(UsageError, match=message):
        SearchConfig("digits", **kwargs).check()


def test_budget_and_time_limit_scale_with_the_task():
    from einnas.evaluate import load_dataset
    from einnas.search.run import default_seconds, default_timeout

    digits, mnist5k = load_dataset("digits"), load_dataset("mnist5k")
    assert default_seconds(digits, 8) == 10.0  # small inputs: the old fixed budget
    assert default_seconds(mnist5k, 8) > 5 * default_seconds(digits, 8)  # 28x28 convs get time to finish
    assert default_seconds(mnist5k, 16) > default_seconds(mnist5k, 8)
    assert default_timeout(10.0) == 150.0 and default_timeout(default_seconds(mnist5k, 8)) == 900.0
    # a time-limited search sizes RE's population to the trials it can expect, not einspace's 100
    from einnas.search.run import expected_trials
    from einnas.search.strategies import population_sizes

    assert population_sizes(expected_trials(150.0, 10.0))[0] == 20
    assert population_sizes(expected_trials(900.0, default_seconds(mnist5k, 8)))[0] == 10
    assert expected_trials(None, 10.0) is None


def test_default_start_is_the_scaled_seeds_where_the_grammar_expresses_them(tmp_path):
    from einnas.search.run import Search, SearchConfig

    default = Search(SearchConfig(dataset="digits", trials=4, out=str(tmp_path / "a"), workers=1, final=False))
    labels = [label for label, _ in default.strategy.init]
    assert sorted(label.split("@")[0] for label in labels) == ["mlp_mixer", "resnet18", "vit", "wrn16_4"]
    assert all(arch.info.params <= default.space.limits.max_params for _, arch in default.strategy.init)
    scratch = Search(SearchConfig(dataset="digits", trials=4, init="random", out=str(tmp_path / "b"), workers=1,
                                  final=False))
    assert scratch.strategy.init == ()
    # a space without the seeds' operations (plain MLPs) starts from random samples instead of failing
    mlp = Search(SearchConfig(dataset="digits", trials=4, grammar="mlp", out=str(tmp_path / "c"), workers=1,
                              final=False))
    assert mlp.strategy.init == ()


def test_timeout_covers_the_final_retrain(tmp_path):
    import time

    from einnas.search.run import FINAL_SHARE, Search, SearchConfig

    def search(name, **kw):
        return Search(SearchConfig(dataset="digits", timeout=100.0, out=str(tmp_path / name), workers=1,
                                   init="random", **kw))

    timed = search("a")
    assert timed.search_timeout == pytest.approx(100.0 * (1 - FINAL_SHARE))
    assert search("b", final=False).search_timeout == 100.0  # nothing to retrain: the whole time searches
    timed.began = time.monotonic() - 70.0
    config = timed.final_config()
    assert config.epochs == 32 and 29.0 < config.fit_seconds <= 30.0 and config.fit_min_epochs == 8
    fixed = search("d", final_epochs=40)
    fixed.began = time.monotonic() - 99.0
    assert fixed.final_config().epochs == 40 and fixed.final_config().fit_seconds is None  # not cut
    untimed = Search(SearchConfig(dataset="digits", trials=3, out=str(tmp_path / "e"), workers=1, init="random"))
    untimed.began = time.monotonic() - 1e6
    assert untimed.final_config().fit_seconds is None and untimed.search_timeout is None


def test_a_failed_final_retrain_leaves_the_next_candidate_the_time_that_is_left(monkeypatch):
    from types import SimpleNamespace

    import einnas.search.report as report
    from einnas.evaluate import TrainConfig

    seen = []

    def fake_train_final(arch, dataset, config, *, seed, device):
        seen.append(config.fit_seconds)
        ok = len(seen) == 2  # the best fails (say, out of memory), the next trains
        return SimpleNamespace(ok=ok, test_acc=0.9 if ok else None, epochs_run=20 if ok else 0, seconds=30.0,
                               reason=None if ok else "oom", detail=""), None

    monkeypatch.setattr(report, "train_final", fake_train_final)
    records = [SimpleNamespace(number=n, arch=f"a{n}", value=0.9 - n / 10) for n in (4, 7, 9)]
    view = SimpleNamespace(top=lambda k: records[:k])
    space = SimpleNamespace(parse=lambda text: SimpleNamespace(archid=text))
    result = report.retrain_best(view, space, None, TrainConfig(epochs=32, fit_seconds=100.0), seed=0)
    assert seen == [100.0, 70.0] and result.ok and result.number == 7 and result.tried == [4, 7]
    assert result.epochs == 20  # what was trained, not the 32 asked
