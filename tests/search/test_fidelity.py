"""Multi-fidelity: rungs in the study, exact counts with pruning, resume, two workers, tournaments."""

import json
import random
import subprocess
import sys

import optuna
import pytest

from einnas.search import RegularisedEvolution, StudyView, TrialRecord, open_storage, open_study, run_worker
from einnas.search.fidelity import PARENT_CURVE, Rungs, keeps_up
from einnas.search.records import RUNG, RUNG_VALUE

optuna.logging.set_verbosity(optuna.logging.WARNING)
RUNGS = Rungs(epochs=9)  # rungs at epochs 1 and 3, keep the best third


def _study(fake, path, strategy, evaluator, seed=0):
    return open_study(open_storage(str(path)), "s", fake.settings_for(strategy, evaluator, seed), seed=seed,
                      shown=str(path))


def _run(fake, path, trials, seed=0):
    strategy, evaluator = RegularisedEvolution(fake.make_space(), 6, 2), fake.FidelityEvaluator(epochs=9)
    study = _study(fake, path, strategy, evaluator, seed)
    stats = run_worker(study, strategy, evaluator, seed=seed, trials=trials, rungs=RUNGS)
    return study, evaluator, stats


def test_rung_schedule():
    assert Rungs(epochs=8).steps == (1, 3)
    assert Rungs(epochs=9).steps == (1, 3)
    assert Rungs(epochs=32, min_epochs=2, eta=2).steps == (2, 4, 8, 16)
    assert Rungs(epochs=8).rung_of(1) == 0 and Rungs(epochs=8).rung_of(2) == 0 and Rungs(epochs=8).rung_of(3) == 1
    assert not Rungs(epochs=1).active and Rungs(epochs=2).active


def _replay(study) -> dict[int, bool]:
    """Successive halving recomputed from the study, trial by trial in number order: for a
    sequential search, whether each trial should have continued past each rung it reached."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    seen: dict[int, list[float]] = {0: [], 1: []}
    out = {}
    for t in trials:
        if t.state == optuna.trial.TrialState.PRUNED and t.user_attrs.get("reason") == "surplus":
            continue
        for k, step in enumerate(RUNGS.steps):
            if step not in t.intermediate_values:
                break
            value = t.intermediate_values[step]
            competing = sorted(seen[k] + [value], reverse=True)
            promoted = (value >= competing[max(0, len(competing) // RUNGS.eta - 1)]
                        or keeps_up(value, step, t.user_attrs.get(PARENT_CURVE)))
            seen[k].append(value)
            assert t.system_attrs[f"completed_rung_{k}"] == value  # the rung table is in the study
            out.setdefault(t.number, promoted)
            if not promoted:
                assert t.user_attrs["reason"] == "pruned" and t.user_attrs[RUNG] == k
                assert t.user_attrs[RUNG_VALUE] == value and len(t.user_attrs["curve"]) == step
                break
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE and len(t.user_attrs["curve"]) == 9
    return out


def test_pruned_trials_count_exactly_and_rungs_are_recorded(fake, tmp_path):
    study, evaluator, stats = _run(fake, tmp_path / "s.journal", trials=20)
    view = StudyView.of(study)
    assert view.counted == 20 == len(view.records) == len(evaluator.calls) == stats.evaluated
    assert 0 < view.pruned == stats.pruned < 20 and len(view.completed) == 20 - view.pruned
    assert view.records[0].state == "COMPLETE"  # alone at every rung: it continues
    _replay(study)
    for r in view.records:
        if r.pruned:
            assert r.value is None and r.status == f"pruned (rung {r.attrs[RUNG]})"
            assert evaluator.epochs_run[r.archid] == RUNGS.steps[r.attrs[RUNG]]  # training really stopped
    # best and top compare full-budget candidates only
    assert view.best.state == "COMPLETE" and all(r.state == "COMPLETE" for r in view.top(5))


def test_resume_uses_the_rung_values_already_in_the_study(fake, tmp_path):
    path = tmp_path / "s.journal"
    _run(fake, path, trials=10)
    study, _, stats = _run(fake, path, trials=24)  # a new worker, a new pruner object
    assert stats.evaluated == 14 and StudyView.of(study).counted == 24
    _replay(study)  # decisions of the second session match a replay over both sessions


def test_two_workers_share_one_rung_table(fake, tmp_path):
    path = tmp_path / "s.journal"
    strategy, evaluator = RegularisedEvolution(fake.make_space(), 6, 2), fake.FidelityEvaluator()
    _study(fake, path, strategy, evaluator)  # created once, as `einnas search` does before its workers
    procs = [subprocess.Popen([sys.executable, str(fake.PATH), str(path), "s", "24", "0", "0.05", "fidelity"],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(o["evaluated"] for o in outs) == 24 and all(o["evaluated"] > 0 for o in outs)
    study = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    view = StudyView.of(study)
    assert view.counted == 24 and view.pruned > 0
    trials = [t for t in study.get_trials() if t.user_attrs.get("reason") != "surplus"]
    assert all("completed_rung_0" in t.system_attrs for t in trials)
    # every trial that continued past rung 0 was in the top third of the rung-0 values
    # written before its own (a subset of all of them, so at least its rank among all)
    values = sorted((t.system_attrs["completed_rung_0"] for t in trials), reverse=True)
    promoted = [t for t in trials if "completed_rung_1" in t.system_attrs or t.state.name == "COMPLETE"]
    assert len(promoted) < len(trials)
    for r in view.records:
        if r.pruned:
            assert r.attrs[RUNG_VALUE] == trials[[t.number for t in trials].index(r.number)].system_attrs[
                f"completed_rung_{r.attrs[RUNG]}"]
    assert values[0] in [t.system_attrs["completed_rung_0"] for t in promoted]  # the best continued


def _record(number, arch, state, value, rung=None):
    attrs = {} if rung is None else {RUNG: rung, RUNG_VALUE: value}
    return TrialRecord(
        number=number, state=state, value=value if state == "COMPLETE" else None, arch=arch.string,
        archid=arch.archid, params=arch.info.params, origin="init", parent=None, scored_by="trained",
        reason="pruned" if state == "PRUNED" else None, detail="", seconds=1.0, retried=False, retry_of=None,
        attrs=attrs,
    )


@pytest.mark.parametrize("members, winner", [
    # (state, value, rung): a full candidate beats better-looking pruned ones
    ([("COMPLETE", 0.5, None), ("PRUNED", 0.9, 1), ("PRUNED", 0.95, 0)], 0),
    # pruned at rung 1 beats pruned at rung 0 whatever the accuracies (other fidelity)
    ([("PRUNED", 0.6, 0), ("PRUNED", 0.4, 1), ("PRUNED", 0.9, 0)], 1),
    # at the same rung the accuracy decides
    ([("PRUNED", 0.6, 0), ("PRUNED", 0.7, 0), ("PRUNED", 0.65, 0)], 1),
    ([("COMPLETE", 0.6, None), ("COMPLETE", 0.8, None), ("PRUNED", 0.99, 1)], 1),
])
def test_tournament_compares_at_the_same_fidelity(fake, members, winner):
    space = fake.make_space()
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in members]
    records = [_record(i, a, state, value, rung) for i, (a, (state, value, rung)) in enumerate(zip(archs, members))]
    # tournament 30 of 3 members drawn with replacement: every member is in it
    strategy = RegularisedEvolution(space, population=3, tournament=30)
    proposal = strategy.propose(StudyView(records), 3, random.Random(1))
    assert proposal.origin == "mutation" and proposal.parent == winner


def test_only_full_evaluations_age_the_population(fake):
    # population 2: the best member (trial 0, trained to the end) is followed by one more
    # full member and five mutations stopped at a rung. Counting every scored trial it
    # would have aged out; counting full evaluations only it is still a parent.
    space = fake.make_space()
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(7)]
    records = [_record(0, archs[0], "COMPLETE", 0.97), _record(1, archs[1], "COMPLETE", 0.5)]
    records += [_record(i, archs[i], "PRUNED", 0.3, rung=0) for i in range(2, 7)]
    strategy = RegularisedEvolution(space, population=2, tournament=30)
    assert {strategy.propose(StudyView(records), 7, random.Random(s)).parent for s in range(5)} == {0}
    # a third full member pushes the oldest full one (trial 0) out, pruned ones or not
    records.append(_record(7, space.sample(rng), "COMPLETE", 0.6))
    assert {strategy.propose(StudyView(records), 8, random.Random(s)).parent for s in range(5)} == {7}
    # with fewer full members than places the latest pruned ones fill the population
    pruned = [_record(i, a, "PRUNED", v, rung=0) for i, (a, v) in enumerate(zip(archs[:3], (0.9, 0.2, 0.4)))]
    assert strategy.propose(StudyView(pruned), 3, random.Random(0)).parent == 2


def test_trials_and_best_read_a_study_with_pruned_trials(fake, tmp_path, capsys):
    from einnas.cli import main

    path = tmp_path / "s.journal"
    study, _, _ = _run(fake, path, trials=12)
    view = StudyView.of(study)
    assert main(["trials", "--storage", str(path), "--sort", "value", "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 12
    statuses = [r["status"] for r in rows]
    full = sum(s == "ok" for s in statuses)
    assert full == len(view.completed) and statuses[:full] == ["ok"] * full  # full-budget ones first
    pruned = [r for r in rows if r["status"].startswith("pruned")]
    assert len(pruned) == view.pruned and all(r["rung_value"] is not None and r["value"] is None for r in pruned)
    levels = [(r["rung"], r["rung_value"]) for r in pruned]
    assert levels == sorted(levels, reverse=True)  # then by rung and the accuracy there
    assert main(["best", "--storage", str(path), "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["number"] == view.best.number


def test_init_seeds_are_anchors_never_pruned(fake, tmp_path):
    # Six seeds first (sorted worst first by their final value, so successive halving would
    # stop most of them at rung 0), then mutations: every seed trains to the full budget,
    # the others are still pruned.
    space, evaluator = fake.make_space(), fake.FidelityEvaluator(epochs=9)
    archs = [space.sample(random.Random(i)) for i in range(6)]
    final = {a.archid: evaluator.evaluate(a, 0).value for a in archs}
    evaluator.calls.clear()
    archs.sort(key=lambda a: -final[a.archid])  # best first: later seeds lose every rung comparison
    strategy = RegularisedEvolution(space, 6, 2, [(f"s{i}", a) for i, a in enumerate(archs)])
    study = _study(fake, tmp_path / "s.journal", strategy, evaluator)
    run_worker(study, strategy, evaluator, seed=0, trials=18, rungs=RUNGS)
    view = StudyView.of(study)
    seeds = [r for r in view.records if r.origin.startswith("seed:")]
    assert len(seeds) == 6
    assert all(r.state == "COMPLETE" and len(r.attrs["curve"]) == 9 for r in seeds)
    assert any(r.pruned for r in view.records if not r.origin.startswith("seed:"))


def test_keeps_up_with_the_parent_at_the_same_epoch():
    parent = [0.10, 0.12, 0.45, 0.60]
    assert keeps_up(0.09, 1, parent) and keeps_up(0.44, 3, parent) and keeps_up(0.90, 3, parent)
    assert not keeps_up(0.40, 3, parent)  # more than the tolerance (0.02) behind
    assert not keeps_up(0.50, 5, parent)  # the parent's curve does not reach epoch 5
    assert not keeps_up(0.50, 1, None) and not keeps_up(0.50, 1, [])


def _rung0(study, value, parent_curve=None):
    trial = study.ask()
    if parent_curve is not None:
        trial.set_user_attr(PARENT_CURVE, parent_curve)
    trial.report(value, 1)
    return trial, trial.should_prune()


def test_a_slow_starting_mutation_of_a_slow_starting_parent_is_not_stopped(tmp_path):
    # The mnist1d case: a deep seed at chance (10%) after epoch 1 and best after 8, fast
    # shallow nets at 30% after epoch 1. Successive halving alone stops every mutation of
    # the seed at rung 0; compared with its parent, a mutation that learns as slowly goes on.
    study = optuna.create_study(direction="maximize", pruner=Rungs(epochs=8).pruner(),
                                storage=open_storage(str(tmp_path / "s.journal")))
    for value in (0.30, 0.31, 0.32, 0.33, 0.34, 0.35):
        trial, _ = _rung0(study, value)
        study.tell(trial, value)
    seed_curve = [0.10, 0.12, 0.45, 0.57, 0.63, 0.64, 0.71, 0.73]
    child, pruned = _rung0(study, 0.10, seed_curve)
    assert not pruned
    assert study.get_trials(deepcopy=False)[child.number].system_attrs["completed_rung_0"] == 0.10  # rung table as before
    _, pruned = _rung0(study, 0.05, seed_curve)  # behind its parent: stopped
    assert pruned
    _, pruned = _rung0(study, 0.10)  # no parent: successive halving decides
    assert pruned
