"""The worker loop with a fake evaluator: exact counts, no duplicates, determinism, retries."""

import json
import subprocess
import sys

import optuna
import pytest

from einnas.errors import StudyError
from einnas.search import (
    Evaluation, RandomSampling, RegularisedEvolution, StudyView, open_storage, open_study, run_worker,
)
from einnas.search.records import ARCH, ARCHID, ORIGIN, WORKER

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(fake, path, strategy, evaluator, seed=0, name="s"):
    return open_study(open_storage(str(path)), name, fake.settings_for(strategy, evaluator, seed), seed=seed, shown=str(path))


def _search(fake, tmp_path, seed, trials=12, fail_every=0, name="s"):
    strategy, evaluator = RegularisedEvolution(fake.make_space(), 4, 2), fake.FakeEvaluator(fail_every=fail_every)
    study = _study(fake, tmp_path / f"{name}.journal", strategy, evaluator, seed, name)
    run_worker(study, strategy, evaluator, seed=seed, trials=trials)
    return study, evaluator


def test_exact_count_no_duplicates_and_records(fake, tmp_path):
    study, evaluator = _search(fake, tmp_path, seed=0, trials=12, fail_every=3)
    view = StudyView.of(study)
    assert view.counted == 12 == len(view.records) == len(evaluator.calls)
    assert len(set(evaluator.calls)) == 12  # never the same archid twice
    assert view.failed >= 1  # failures are trials with their reason, and the search goes on
    for r in view.records:
        assert r.arch and r.archid and r.params is not None and r.scored_by == "trained"
        assert r.origin in ("init", "mutation", "random")
        assert (r.state == "COMPLETE") != (r.reason == "nan_loss")
    assert [r.origin for r in view.records[:4]] == ["init"] * 4
    assert all(r.origin == "mutation" and r.parent is not None for r in view.records[4:])
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert complete[0].intermediate_values  # curve reported for the dashboard
    # running again with the same budget does nothing: the study is the state
    strategy, again = RegularisedEvolution(fake.make_space(), 4, 2), fake.FakeEvaluator(fail_every=3)
    run_worker(study, strategy, again, seed=0, trials=12)
    assert again.calls == []
    run_worker(study, strategy, again, seed=0, trials=15)  # a larger budget continues
    assert len(again.calls) == 3 and StudyView.of(study).counted == 15


def test_same_seed_same_architectures_in_order(fake, tmp_path):
    a, _ = _search(fake, tmp_path, seed=7, name="a")
    b, _ = _search(fake, tmp_path, seed=7, name="b")
    c, _ = _search(fake, tmp_path, seed=8, name="c")
    ids = lambda s: [r.archid for r in StudyView.of(s).records]  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def test_same_seed_in_a_fresh_process(fake, tmp_path):
    a, _ = _search(fake, tmp_path, seed=3, trials=8, name="a")
    out = subprocess.run(
        [sys.executable, str(fake.PATH), str(tmp_path / "fresh.journal"), "fresh", "8", "3"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    # fake_worker uses population 6 / tournament 2: compare with the same settings here
    strategy, evaluator = RegularisedEvolution(fake.make_space(), 6, 2), fake.FakeEvaluator()
    study = _study(fake, tmp_path / "here.journal", strategy, evaluator, 3, "here")
    run_worker(study, strategy, evaluator, seed=3, trials=8)
    assert json.loads(out.stdout)["archids"] == evaluator.calls


def test_random_strategy_and_timeout(fake, tmp_path):
    strategy, evaluator = RandomSampling(fake.make_space()), fake.FakeEvaluator(sleep=0.05)
    study = _study(fake, tmp_path / "r.journal", strategy, evaluator)
    stats = run_worker(study, strategy, evaluator, seed=0, timeout=0.5)
    assert stats.stopped_by == "timeout" and stats.evaluated >= 1
    assert {r.origin for r in StudyView.of(study).records} == {"random"}


def test_other_settings_are_refused(fake, tmp_path):
    strategy, evaluator = RegularisedEvolution(fake.make_space(), 4, 2), fake.FakeEvaluator()
    _study(fake, tmp_path / "x.journal", strategy, evaluator, seed=0)
    _study(fake, tmp_path / "x.journal", strategy, evaluator, seed=0)  # same settings: joins
    with pytest.raises(StudyError, match=r"made for another search \(seed: study 0, this search 1\)"):
        _study(fake, tmp_path / "x.journal", strategy, evaluator, seed=1)
    with pytest.raises(StudyError, match="population"):
        _study(fake, tmp_path / "x.journal", RegularisedEvolution(fake.make_space(), 5, 2), evaluator)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lost_trial_is_failed_and_its_architecture_retried(fake, tmp_path):
    import random

    from einnas.search.storage import worker_identity

    strategy, evaluator = RegularisedEvolution(fake.make_space(), 4, 2), fake.FakeEvaluator()
    study = _study(fake, tmp_path / "l.journal", strategy, evaluator)
    arch = fake.make_space().sample(random.Random(99))
    # a trial left RUNNING by a worker killed on this machine
    lost = study.ask()
    for key, value in ((ARCH, arch.string), (ARCHID, arch.archid), (ORIGIN, "init"),
                       (WORKER, dict(worker_identity(), pid=_dead_pid()))):
        lost.set_user_attr(key, value)
    run_worker(study, strategy, evaluator, seed=0, trials=5)
    view = StudyView.of(study)
    assert view.counted == 5 and len(evaluator.calls) == 5
    first = view.records[0]
    assert first.state == "FAIL" and first.lost and first.retried and not first.counted
    retry = view.records[1]
    assert retry.retry_of == 0 and retry.archid == arch.archid and retry.state == "COMPLETE"
    assert evaluator.calls[0] == arch.archid


def test_interrupt_gives_the_slot_back(fake, tmp_path):
    class Interrupting(fake.FakeEvaluator):
        def evaluate(self, arch, seed):
            if len(self.calls) == 2:
                raise KeyboardInterrupt
            return super().evaluate(arch, seed)

    strategy, evaluator = RegularisedEvolution(fake.make_space(), 4, 2), Interrupting()
    study = _study(fake, tmp_path / "i.journal", strategy, evaluator)
    with pytest.raises(KeyboardInterrupt):
        run_worker(study, strategy, evaluator, seed=0, trials=6)
    view = StudyView.of(study)
    assert [r.status for r in view.records] == ["ok", "ok", "lost (retried)", "waiting"]
    again = fake.FakeEvaluator()
    run_worker(study, strategy, again, seed=0, trials=6)
    assert StudyView.of(study).counted == 6
    assert again.calls[0] == view.records[2].archid  # the interrupted architecture first


def test_surplus_trial_is_not_evaluated(fake, tmp_path):
    strategy, evaluator = RegularisedEvolution(fake.make_space(), 4, 2), fake.FakeEvaluator()
    study = _study(fake, tmp_path / "p.journal", strategy, evaluator)
    run_worker(study, strategy, evaluator, seed=0, trials=3)
    # another worker holds the last slot of 4 while this one asks for a trial
    other = study.ask()
    from einnas.search.loop import _run_trial

    assert _run_trial(study, strategy, evaluator, 0, 4, heartbeat_interval=10) is None
    view = StudyView.of(study)
    assert view.records[-1].status == "surplus" and view.records[-1].state == "PRUNED"
    assert not view.records[-1].claim and len(evaluator.calls) == 3
    study.tell(other, 0.5)
    assert StudyView.of(study).counted == 4


def test_failed_evaluation_is_a_failed_trial(fake, tmp_path):
    class Failing(fake.FakeEvaluator):
        def evaluate(self, arch, seed):
            return Evaluation(False, reason="timeout", detail="time budget of 1 s exceeded", params=7)

    strategy, evaluator = RandomSampling(fake.make_space()), Failing()
    study = _study(fake, tmp_path / "f.journal", strategy, evaluator)
    run_worker(study, strategy, evaluator, seed=0, trials=3)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL"] * 3
    assert trials[0].user_attrs["reason"] == "timeout" and "1 s" in trials[0].user_attrs["detail"]
    assert StudyView.of(study).counted == 3


def test_an_architecture_that_kills_its_worker_is_given_up_after_the_retry_cap(fake, tmp_path):
    """Like an --init seed the OOM killer stops: proposed again until the study holds it."""
    import random

    from einnas.search import Proposal, Strategy
    from einnas.search.storage import MAX_RETRY, WORKER_DIED

    space = fake.make_space()
    killer = space.sample(random.Random(5))

    class SeedFirst(Strategy):
        name = "seedfirst"

        def propose(self, view, trial_number, rng):
            if killer.archid not in view.taken:
                return Proposal(killer, "seed:killer")
            return Proposal(space.sample(rng), "random")

    class Killing(fake.FakeEvaluator):
        def evaluate(self, arch, seed):
            self.calls.append(arch.archid)
            if arch.archid == killer.archid:
                raise SystemExit(137)  # the worker dies mid-trial
            return super().evaluate(arch, seed)

    strategy, evaluator = SeedFirst(space), Killing()
    study = _study(fake, tmp_path / "k.journal", strategy, evaluator)
    for _ in range(3 * MAX_RETRY):  # restart the dead worker, as a supervisor would
        try:
            run_worker(study, strategy, evaluator, seed=0, trials=4)
            break
        except SystemExit:
            continue
    view = StudyView.of(study)
    assert view.counted == 4
    assert evaluator.calls.count(killer.archid) == MAX_RETRY + 1
    given_up = [r for r in view.records if r.archid == killer.archid and r.counted]
    assert len(given_up) == 1 and given_up[0].reason == WORKER_DIED and given_up[0].status == "failed"
    assert "died 4 times" in given_up[0].detail


def test_a_retried_seed_is_a_seed_by_its_mark_not_by_its_origin_text(fake, tmp_path):
    """The ``is_seed`` attribute carries seedness through a lost worker's retry; ``origin`` is a label."""
    import random

    from einnas.search import Proposal, Strategy
    from einnas.search.loop import _choose
    from einnas.search.records import IS_SEED
    from einnas.search.storage import release_trial

    space = fake.make_space()
    anchor, lookalike = space.sample(random.Random(1)), space.sample(random.Random(2))

    class Anchored(Strategy):
        name = "anchored"

        def propose(self, view, trial_number, rng):
            if anchor.archid not in view.taken:
                return Proposal(anchor, "anchor", seed=True)  # a seed whose origin does not say "seed:"
            return Proposal(lookalike, "seed:lookalike")  # says "seed:" but is none

    strategy = Anchored(space)
    study = _study(fake, tmp_path / "m.journal", strategy, fake.FakeEvaluator())
    first, second = study.ask(), study.ask()
    assert _choose(study, first, strategy, 0).seed and first.user_attrs[IS_SEED] is True
    assert not _choose(study, second, strategy, 0).seed and IS_SEED not in second.user_attrs
    for trial in (first, second):  # both workers die: the architectures are queued again
        assert release_trial(study, trial)
    assert not release_trial(study, first)  # already failed: nothing to do twice
    again = [study.ask(), study.ask()]
    by_arch = {t.user_attrs[ARCHID]: t for t in again}
    assert by_arch[anchor.archid].user_attrs.get(IS_SEED) is True and by_arch[anchor.archid].user_attrs[ORIGIN] == "anchor"
    assert _choose(study, by_arch[anchor.archid], strategy, 0).seed  # still never pruned
    assert not _choose(study, by_arch[lookalike.archid], strategy, 0).seed


def test_seeds_are_evaluated_with_the_roomier_seed_evaluator(fake, tmp_path):
    import random

    from einnas.search import Proposal, Strategy

    space = fake.make_space()
    seeds = [space.sample(random.Random(i)) for i in range(2)]

    class SeedsFirst(Strategy):
        name = "seeds-first"

        def propose(self, view, trial_number, rng):
            if trial_number < len(seeds):
                return Proposal(seeds[trial_number], f"seed:s{trial_number}", seed=True)
            return Proposal(space.sample(rng), "random")

    class Budgeted(fake.FakeEvaluator):
        def __init__(self):
            super().__init__()
            self.roomy = fake.FakeEvaluator()

        def for_seed(self):
            return self.roomy

    strategy, evaluator = SeedsFirst(space), Budgeted()
    study = _study(fake, tmp_path / "s.journal", strategy, evaluator)
    run_worker(study, strategy, evaluator, seed=0, trials=5)
    assert evaluator.roomy.calls == [a.archid for a in seeds]  # the seeds, and only they
    assert len(evaluator.calls) == 3 and not set(evaluator.calls) & set(evaluator.roomy.calls)


def test_a_seed_gets_a_multiple_of_the_time_budget():
    import numpy as np

    from einnas.evaluate import TrainConfig, from_arrays
    from einnas.search.evaluators import SEED_BUDGET_FACTOR, TrainingEvaluator

    x, y = np.zeros((8, 1, 4, 4), dtype=np.float32), np.arange(8) % 2
    data = from_arrays("tiny", (x, y), (x, y), (x, y), num_classes=2)
    budgeted = TrainingEvaluator(data, TrainConfig(epochs=2, seconds=10), device="cpu")
    roomy = budgeted.for_seed()
    assert roomy.config.seconds == 10 * SEED_BUDGET_FACTOR > 10 and roomy.config.epochs == 2
    assert budgeted.config.seconds == 10 and budgeted.for_seed() is roomy  # made once, the original unchanged
    unbounded = TrainingEvaluator(data, TrainConfig(epochs=2, seconds=None), device="cpu")
    assert unbounded.for_seed() is unbounded
