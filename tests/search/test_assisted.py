"""Surrogate-assisted search: the predictor ranks many proposals, the best is evaluated."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from einnas.search import RandomSampling, RegularisedEvolution, StudyView, TrialRecord, run_worker
from einnas.search.assisted import (
    AssistedStrategy, SurrogateEvaluator, SurrogateRanker, make_evaluator, make_strategy, predictor_id,
)


def record(number, arch, value, origin="init"):
    return TrialRecord(
        number=number, state="COMPLETE", value=value, arch=arch.string, archid=arch.archid,
        params=arch.info.params, origin=origin, parent=None, scored_by="trained", reason=None, detail="",
        seconds=1.0, retried=False, retry_of=None, attrs={},
    )


@pytest.fixture(scope="module")
def predictor_dir(tmp_path_factory, fake):
    """A numeric-only predictor whose accuracy grows with the parameter count (synthetic labels)."""
    from einnas.surrogate.features import DescriptionCache, describe_arch, feature_table
    from einnas.surrogate.predictor import Dataset, FitConfig, fit, save_atomic, split_of

    space = fake.make_space()
    archs = [space.sample(random.Random(i)) for i in range(20)]
    graphs = [describe_arch(a, space.input_shape, space.num_classes, DescriptionCache(None)) for a in archs]
    numeric, _ = feature_table(graphs)
    y = np.array([0.1 + 0.8 / (1 + math.exp(-(math.log(a.info.params) - 7))) for a in archs])
    data = Dataset([{"archid": a.archid, "dataset": "toy"} for a in archs], graphs, numeric, None, y,
                   np.array(["toy"] * 20), np.array([split_of(a.archid, holdout=0.0) for a in archs]),
                   np.full(20, 0.1))
    folder = tmp_path_factory.mktemp("assisted") / "p"
    save_atomic(fit(data, FitConfig(use_text=False, members=2, trees=40, gate_trees=0), grid=()), folder)
    return folder


@pytest.fixture(scope="module")
def ranker(predictor_dir, fake):
    from einnas.surrogate.score import load_predictor

    return SurrogateRanker(load_predictor(predictor_dir), fake.make_space())


def test_proposes_the_best_predicted_of_the_base_proposals(ranker, fake):
    base = RandomSampling(ranker.space)
    strategy = AssistedStrategy(base, ranker, candidates=6)
    chosen = strategy.propose(StudyView([]), 0, random.Random(5))
    rng = random.Random(5)
    candidates = [base.propose(StudyView([]), 0, rng).arch for _ in range(6)]
    scores = strategy.scores(candidates, StudyView([]))
    assert chosen.arch.archid == candidates[int(np.argmax(scores))].archid
    assert chosen.origin == "random"
    again = AssistedStrategy(base, ranker, candidates=6).propose(StudyView([]), 0, random.Random(5))
    assert again.arch.string == chosen.arch.string  # no state outside the view and the rng


def test_seed_architectures_pass_through_unranked(ranker):
    from einnas.search import resolve_init

    base = RegularisedEvolution(ranker.space, population=4, tournament=2,
                                init=resolve_init("mlp_mixer", ranker.space))
    proposal = AssistedStrategy(base, ranker, candidates=8).propose(StudyView([]), 0, random.Random(0))
    assert proposal.origin == "seed:mlp_mixer"


def test_mutations_keep_their_parent_and_skip_taken_archs(ranker):
    space = ranker.space
    members = [space.sample(random.Random(100 + i)) for i in range(4)]
    view = StudyView([record(i, a, 0.2 + 0.1 * i) for i, a in enumerate(members)])
    base = RegularisedEvolution(space, population=4, tournament=2)
    proposal = AssistedStrategy(base, ranker, candidates=5).propose(view, 4, random.Random(1))
    assert proposal.origin == "mutation" and proposal.parent in range(4)
    assert proposal.arch.archid not in view.taken


def test_settings_name_the_predictor(ranker):
    settings = AssistedStrategy(RandomSampling(ranker.space), ranker, candidates=4).settings()
    assert settings["strategy"] == "random"
    assert settings["assisted"] == {"candidates": 4, "kappa": 1.0, "refit_every": 10, "diversity": 0.5,
                                    "predictor": predictor_id(ranker.predictor)}


def test_surrogate_evaluator_trains_nothing(ranker):
    evaluator = SurrogateEvaluator(ranker)
    arch = ranker.space.sample(random.Random(3))
    result = evaluator.evaluate(arch, seed=0)
    assert evaluator.scored_by == "predicted" and result.ok and 0.0 <= result.value <= 1.0
    assert result.params == arch.info.params and "predicted_std" in result.extra


def test_refit_on_the_studys_trained_trials_changes_the_ranking(ranker):
    space = ranker.space
    archs = [space.sample(random.Random(200 + i)) for i in range(12)]
    # the study says the opposite of the shipped predictor: small networks are best
    view = StudyView([record(i, a, 1.0 / math.log(a.info.params + 3)) for i, a in enumerate(archs)])
    plain = AssistedStrategy(RandomSampling(space), ranker, candidates=4, refit_every=0)
    refit = AssistedStrategy(RandomSampling(space), ranker, candidates=4, refit_every=6)
    candidates = [space.sample(random.Random(300 + i)) for i in range(6)]
    assert refit._refit(view) is not None and plain._refit(view) is None
    assert not np.allclose(plain.scores(candidates, view), refit.scores(candidates, view))
    assert refit._refit(view)[0] is refit._refit(view)[0]  # fitted once per set of rows


def test_worker_loop_with_assisted_strategy_and_predicted_scores(predictor_dir, fake):
    import optuna

    space = fake.make_space()
    strategy = make_strategy(RegularisedEvolution(space, 4, 2), str(predictor_dir), space=space, seed=0, candidates=4)
    evaluator = make_evaluator(str(predictor_dir), space=space)
    study = optuna.create_study(direction="maximize")
    stats = run_worker(study, strategy, evaluator, seed=0, trials=8)
    view = StudyView.of(study)
    assert stats.evaluated == 8 and view.counted == 8
    assert {r.scored_by for r in view.records} == {"predicted"}
    assert {r.origin for r in view.records} <= {"init", "mutation"}


def test_cli_search_with_the_surrogate_evaluator(predictor_dir, tmp_path, capsys):
    from einnas.cli import main

    code = main(["search", "--dataset", "digits", "--trials", "5", "--seed", "1", "--evaluator", "surrogate",
                 "--surrogate", str(predictor_dir), "--no-final", "--out", str(tmp_path / "run"), "-q", "--workers", "1",
                 "--max-params", "50000", "--max-activations", "20000"])
    out = capsys.readouterr().out
    assert code == 0
    assert "predicted" in (tmp_path / "run" / "report.json").read_text()
    # a prediction is never labelled a measurement
    md = (tmp_path / "run" / "report.md").read_text()
    assert "predicted accuracy" in md and "validation accuracy" not in md and "None" not in md
    header = next(line for line in out.splitlines() if line.startswith("rank"))
    assert header.split()[:3] == ["rank", "trial", "predicted"] and "val" not in out.replace("eval", "")
    code = main(["best", "--storage", str(tmp_path / "run" / "study.journal")])
    assert code == 0 and " predicted " in capsys.readouterr().out


def test_cli_assisted_training_search_records_its_tuning_and_refuses_other_tuning(predictor_dir, tmp_path, capsys):
    import json

    from einnas.cli import main

    base = ["search", "--dataset", "digits", "--trials", "10", "--seed", "2", "--surrogate", str(predictor_dir),
            "--no-final", "--out", str(tmp_path / "run"), "-q", "-f", "json", "--epochs", "1", "--threads", "1", "--workers", "1",
            "--max-params", "30000", "--max-activations", "8000"]
    code = main([*base, "--candidates", "3", "--refit-every", "4", "--kappa", "0.5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["trials"]["counted"] == 10
    assert report["settings"]["assisted"]["candidates"] == 3
    assert report["settings"]["assisted"]["refit_every"] == 4 and report["settings"]["assisted"]["kappa"] == 0.5
    # resuming the same study with another tuning is refused in one line, the study untouched
    code = main([*base, "--trials", "12", "--candidates", "5", "--refit-every", "4", "--kappa", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "made for another search" in err and "assisted" in err and err.count("\n") == 1
    # tuning without a predictor is a usage error
    code = main(["search", "--dataset", "digits", "--trials", "3", "--refit-every", "4"])
    assert code == 2 and "--surrogate" in capsys.readouterr().err


def test_cli_main_job_path_with_the_shipped_predictor(tmp_path, capsys):
    """The README's main job in miniature: `--surrogate default` ranks with the shipped predictor."""
    import json

    from einnas.cli import main
    from einnas.surrogate.score import load_predictor

    code = main(["search", "--dataset", "digits", "--trials", "5", "--seed", "0", "--surrogate", "default",
                 "--candidates", "4", "--final-epochs", "1", "--final-shift", "1", "--out", str(tmp_path / "run"), "-q",
                 "-f", "json", "--workers", "1",
                 "--epochs", "1", "--threads", "1", "--max-params", "30000", "--max-activations", "8000"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["settings"]["assisted"]["predictor"] == predictor_id(load_predictor("default"))
    assert report["trials"]["counted"] == 5 and report["final"]["ok"]
    assert report["final"]["shift"] == 1  # --final-shift overrides the default (0 at 8x8)
    assert (tmp_path / "run" / "best.onnx").is_file()
    assert "shifts of up to 1 px" in (tmp_path / "run" / "report.md").read_text()


class StubRanker:
    """Predictions given per archid: (mean, std) — rankings without a fitted predictor."""

    def __init__(self, table):
        self.table, self.predictor = table, None

    def graphs(self, archs):
        return [a.archid for a in archs]

    def predict(self, graphs, predictor=None):
        return (np.array([self.table[g][0] for g in graphs], dtype=float),
                np.array([self.table[g][1] for g in graphs], dtype=float))


def _stub_strategy(fake, table_of, **kwargs):
    space = fake.make_space()
    archs = [space.sample(random.Random(500 + i)) for i in range(3)]
    table = {a.archid: v for a, v in zip(archs, table_of)}
    strategy = AssistedStrategy(RandomSampling(space), StubRanker(table), candidates=3, refit_every=0, **kwargs)
    return strategy, archs


def test_exploration_term_changes_the_choice_as_kappa_grows(fake):
    # a sure bet, a fair one and a long shot the ensemble disagrees on
    table = [(0.80, 0.01), (0.75, 0.06), (0.50, 0.20)]
    chosen = []
    for kappa in (0.0, 1.5, 3.0):
        strategy, archs = _stub_strategy(fake, table, kappa=kappa, diversity=0.0)
        chosen.append(int(np.argmax(strategy.scores(archs, StudyView([])))))
    assert chosen == [0, 1, 2]


def test_near_duplicates_of_recent_trials_lose_to_a_different_proposal(fake):
    strategy, archs = _stub_strategy(fake, [(0.80, 0.0), (0.79, 0.0), (0.10, 0.0)], kappa=0.0, diversity=0.5)
    assert archs[0].info.params != archs[1].info.params
    view = StudyView([])
    assert int(np.argmax(strategy.scores(archs, view))) == 0
    # the study has just trained three networks the size of the first proposal
    crowd = StudyView([record(i, archs[0], 0.5) for i in range(3)])
    assert strategy.crowding(archs, crowd)[0] == 3
    assert int(np.argmax(strategy.scores(archs, crowd))) == 1


def test_refit_on_the_study_happens_by_default_once_enough_trials(predictor_dir, fake):
    import optuna

    from einnas.search.assisted import DEFAULT_REFIT_EVERY, MIN_REFIT_ROWS, REFIT_ATTR

    space = fake.make_space()
    strategy = make_strategy(RegularisedEvolution(space, 4, 2), str(predictor_dir), space=space, seed=0, candidates=3)
    assert strategy.refit_every == DEFAULT_REFIT_EVERY > 0 and strategy.kappa > 0 and strategy.diversity > 0
    study = optuna.create_study(direction="maximize")
    strategy.study = study
    run_worker(study, strategy, fake.FakeEvaluator(), seed=0, trials=MIN_REFIT_ROWS)
    assert REFIT_ATTR not in study.user_attrs  # not before enough trained trials
    run_worker(study, strategy, fake.FakeEvaluator(), seed=0, trials=MIN_REFIT_ROWS + 2)
    note = study.user_attrs[REFIT_ATTR]
    assert note["ok"] and note["rows"] == MIN_REFIT_ROWS and note["last_trial"] == MIN_REFIT_ROWS - 1


def _timed(number, arch, seconds, epochs, value=0.5):
    """A trained trial that took ``seconds`` for ``epochs`` epochs."""
    from dataclasses import replace

    return replace(record(number, arch, value), seconds=seconds, attrs={"curve": [value] * epochs})


def test_a_proposal_estimated_over_the_time_budget_ranks_after_those_within_it(fake):
    from einnas.grammar.seeds import budget_for_training

    space = fake.make_space()
    archs = sorted({a.archid: a for a in (space.sample(random.Random(700 + i)) for i in range(12))}.values(),
                   key=lambda a: a.info.params)
    small, large = archs[0], archs[-1]
    table = {small.archid: (0.5, 0.0), large.archid: (0.9, 0.0)}  # the predictor prefers the large one
    strategy = AssistedStrategy(RandomSampling(space), StubRanker(table), candidates=2, refit_every=0, diversity=0.0,
                                kappa=0.0)
    strategy.budget = budget_for_training(1000, 4, None)
    fast, slow = strategy._epoch_seconds(small), strategy._epoch_seconds(large)
    assert 0 < fast < slow
    view = StudyView([])
    assert strategy.within_budget([small, large], view) == [True, True]  # no time bound: all within
    strategy.budget = budget_for_training(1000, 4, 4 * (fast + slow) / 2)
    assert strategy.within_budget([small, large], view) == [True, False]

    class Two(RandomSampling):  # proposes the large network, then the small one
        def __init__(self):
            super().__init__(space)
            self.queue = []

        def propose(self, view, number, rng):
            from einnas.search.strategies import Proposal

            self.queue = self.queue or [large, small]
            return Proposal(self.queue.pop(0), "random")

    strategy.base = Two()
    assert strategy.propose(view, 0, random.Random(0)).arch.archid == small.archid
    strategy.budget = budget_for_training(1000, 4, 4 * fast / 2)  # neither fits: the best
    assert strategy.propose(view, 0, random.Random(0)).arch.archid == large.archid


def test_the_time_estimate_is_calibrated_on_the_studys_own_trainings(fake):
    from einnas.grammar.seeds import budget_for_training
    from einnas.search.assisted import MIN_TIMED

    space = fake.make_space()
    arch = space.sample(random.Random(800))
    strategy = AssistedStrategy(RandomSampling(space), StubRanker({}), candidates=2, refit_every=0)
    strategy.budget = budget_for_training(1000, 4, None)
    estimate = strategy._epoch_seconds(arch)
    # this machine trains 3x slower than the estimate: 2 epochs took 6x the estimate of one
    few = StudyView([_timed(i, arch, 6 * estimate, 2) for i in range(MIN_TIMED - 1)])
    many = StudyView([_timed(i, arch, 6 * estimate, 2) for i in range(MIN_TIMED)])
    assert strategy.pace(few) == 1.0  # too few timed trials: the estimate as it is
    assert strategy.pace(many) == pytest.approx(3.0)
    strategy.budget = budget_for_training(1000, 4, 4 * 2 * estimate)  # 2x the raw estimate
    assert strategy.within_budget([arch], few) == [True]
    assert strategy.within_budget([arch], many) == [False]
