"""Objectives, latency and constraints: parsing, the evaluator wrapper, and a tiny
multi-objective search on digits end to end (front, constraints, resume with 2 workers,
pareto export, ``einnas best``, bad options)."""

import csv
import json
import subprocess
import sys

import numpy as np
import optuna
import pytest

from einnas.errors import ModelError, UsageError
from einnas.evaluate import latency as latency_module
from einnas.evaluate.latency import LatencySettings, arch_latency, export_for_timing, measure_latency
from einnas.search import Evaluation, Evaluator, open_storage
from einnas.search.objectives import ObjectiveEvaluator, Objectives, parse_objectives
from einnas.search.pareto import dominates
from einnas.search.records import LATENCY_MS, LATENCY_SETTINGS, MACS, StudyView

optuna.logging.set_verbosity(optuna.logging.WARNING)
FAST = ["--workers", "1", "--epochs", "1", "--seconds", "30", "--threads", "1", "--max-params", "30000",
        "--max-activations", "8000", "--init", "random", "--population", "4"]
MAX_LATENCY = 0.2  # ms: tiny digits candidates take 0.01-0.1 ms, so some are feasible and the front is not empty


def test_parse_objectives_and_bad_values():
    assert parse_objectives("accuracy, latency") == ("accuracy", "latency")
    assert parse_objectives("macs,accuracy,params") == ("macs", "accuracy", "params")
    for bad, words in (("accuracy,foo", "unknown objective 'foo'"), ("accuracy,accuracy", "given twice"),
                       ("accuracy,latency,params,macs", "at most three"), ("latency,params", "accuracy must be"),
                       ("accuracy,", "names separated")):
        with pytest.raises(UsageError, match=words):
            parse_objectives(bad)
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(UsageError, match="--max-latency"):
            Objectives(("accuracy",), max_latency=bad)
    o = Objectives(("latency", "accuracy"), max_latency=2)
    assert o.directions == ["minimize", "maximize"] and o.multi and o.measures_latency and not o.default
    assert Objectives().default and not Objectives().measures_latency


def test_measure_latency_median_and_settings(fake):
    space = fake.make_space()
    import random

    arch = space.sample(random.Random(3))
    model = export_for_timing(arch, space.input_shape, space.num_classes)
    result = measure_latency(model, space.input_shape, LatencySettings(batch=2, threads=1, repeats=7, warmup=2))
    assert result.ms > 0 and result.seconds > 0
    assert result.settings == {"batch": 2, "threads": 1, "repeats": 7, "warmup": 2, "provider": "CPUExecutionProvider"}
    with pytest.raises(ModelError, match="onnxruntime"):
        measure_latency(b"not an onnx model", space.input_shape)


def test_arch_latency_exports_each_architecture_once(fake, monkeypatch):
    """The surrogate's ranking times a candidate; the trial that trains it reuses the figure."""
    import random

    space = fake.make_space()
    first, second = space.sample(random.Random(3)), space.sample(random.Random(4))
    assert first.archid != second.archid
    exports, seen = [], []
    real = latency_module.export_for_timing
    monkeypatch.setattr(latency_module, "export_for_timing", lambda *a: exports.append(a[0].archid) or real(*a))
    monkeypatch.setattr(latency_module, "_MEASURED", type(latency_module._MEASURED)())
    settings = LatencySettings(repeats=5, warmup=1)
    timed = arch_latency(first, space.input_shape, space.num_classes, settings, on_export=seen.append)
    again = arch_latency(first, space.input_shape, space.num_classes, settings, on_export=seen.append)
    assert exports == [first.archid] and len(seen) == 1 and seen[0].graph.node
    assert again.ms == timed.ms and again.settings == timed.settings and timed.seconds > 0 and again.seconds == 0
    arch_latency(first, space.input_shape, space.num_classes, LatencySettings(batch=2, repeats=5, warmup=1))
    arch_latency(second, space.input_shape, space.num_classes, settings)
    assert exports == [first.archid, first.archid, second.archid]  # other settings, other architecture: timed


class _Fixed(Evaluator):
    scored_by = "trained"

    def __init__(self, ok=True):
        self.ok = ok

    def evaluate(self, arch, seed):
        if not self.ok:
            return Evaluation(False, reason="nan_loss", detail="fake", params=arch.info.params)
        return Evaluation(True, value=0.75, params=arch.info.params, seconds=1.0)


def test_objective_evaluator_values_in_order_and_constraint(fake):
    import random

    space = fake.make_space()
    arch = space.sample(random.Random(5))
    wrapped = ObjectiveEvaluator(_Fixed(), Objectives(("params", "accuracy", "latency"), max_latency=1000.0),
                                 space.input_shape, space.num_classes)
    e = wrapped.evaluate(arch, 0)
    latency = e.extra[LATENCY_MS]
    assert e.values == [float(arch.info.params), 0.75, latency]  # the objectives' order
    assert e.constraints == {"latency_ms": pytest.approx(latency - 1000.0)} and e.constraints["latency_ms"] < 0
    assert set(e.extra[LATENCY_SETTINGS]) == {"batch", "threads", "repeats", "warmup", "provider"}
    assert isinstance(e.extra[MACS], int) and e.extra[MACS] > 0
    assert e.seconds > 1.0  # the measurement is part of the candidate's evaluation time
    failed = ObjectiveEvaluator(_Fixed(ok=False), Objectives(("accuracy", "latency")), space.input_shape,
                                space.num_classes).evaluate(arch, 0)
    assert not failed.ok and failed.values is None and LATENCY_MS in failed.extra  # still measured and recorded


def einnas(*args, cwd, check=True):
    proc = subprocess.run([sys.executable, "-m", "einnas.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _study(path):
    storage = open_storage(str(path), create=False)
    return optuna.load_study(study_name=storage.get_all_studies()[0].study_name, storage=storage)


@pytest.fixture(scope="module")
def mo_run(tmp_path_factory):
    """4 trials with the final step (front retrained, at most 2 exported), then resumed to 7 with 2 workers."""
    cwd = tmp_path_factory.mktemp("mo")
    common = ["--dataset", "digits", "--seed", "1", "--objectives", "accuracy,latency",
              "--max-latency", str(MAX_LATENCY), "--out", "run", *FAST]
    first = einnas("search", "--trials", "4", "--final-epochs", "1", "--pareto-export", "2", "-f", "json",
                   *common, cwd=cwd)
    first_report = json.loads(first.stdout)
    front_then = sorted(t.number for t in _study(cwd / "run" / "study.journal").best_trials)
    args = list(common)
    args[args.index("--workers") + 1] = "2"
    einnas("search", "--trials", "7", "--no-final", *args, cwd=cwd)
    return cwd, first_report, front_then


def test_front_is_non_dominated_feasible_and_measured(mo_run):
    cwd, _, _ = mo_run
    study = _study(cwd / "run" / "study.journal")
    settings = study.user_attrs["einnas"]
    assert settings["objectives"] == ["accuracy", "latency"] and settings["max_latency"] == MAX_LATENCY
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    view = StudyView.of(study)
    assert view.counted == 7 == len({r.archid for r in view.records if r.counted})  # exact, no duplicates
    front = study.best_trials
    assert front
    for t in front:
        assert t.values[1] == t.user_attrs[LATENCY_MS] <= MAX_LATENCY  # the constraint holds on the front
        assert t.values[0] == t.user_attrs["accuracy"]
        assert set(t.user_attrs[LATENCY_SETTINGS]) == {"batch", "threads", "repeats", "warmup", "provider"}
        assert t.constraints["latency_ms"] == pytest.approx(t.user_attrs[LATENCY_MS] - MAX_LATENCY)
        for u in front:
            assert not dominates((-u.values[0], u.values[1]), (-t.values[0], t.values[1]))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(isinstance(t.user_attrs.get(LATENCY_MS), float) and isinstance(t.user_attrs.get(MACS), int)
               for t in complete)
    # every feasible complete trial off the front is dominated by a front member
    for t in complete:
        if t.user_attrs[LATENCY_MS] <= MAX_LATENCY and t.number not in {f.number for f in front}:
            assert any(dominates((-f.values[0], f.values[1]), (-t.values[0], t.values[1])) for f in front)
    assert settings["selection"] == "pareto" and settings["fidelity"] is None  # no pruning: Optuna's is single-objective


def test_pareto_export_csv_and_onnx(mo_run):
    import onnxruntime as ort

    cwd, report, front_then = mo_run
    first = report["pareto"]  # the first run's front, retrained (at most 2) and exported
    assert sorted(r["trial"] for r in first) == front_then
    exported = [r for r in first if r["onnx"]]
    assert len(exported) == min(2, len(first)) and first[0]["onnx"]  # the most accurate is always exported
    accs = [r["accuracy"] for r in first]
    assert accs == sorted(accs, reverse=True)
    for r in exported:
        path = cwd / "run" / r["onnx"]
        assert path.name == f"{r['archid']}.onnx"
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {"x": np.zeros((1, 1, 8, 8), np.float32)})[0]
        assert out.shape == (1, 10)
        assert 0 <= r["test_acc"] <= 1
    # the resumed run (--no-final) rewrote pareto.csv for the front it ended with
    rows = list(csv.DictReader(open(cwd / "run" / "pareto.csv")))
    now = sorted(t.number for t in _study(cwd / "run" / "study.journal").best_trials)
    assert sorted(int(r["trial"]) for r in rows) == now
    for r in rows:
        assert bool(r["onnx"]) == (cwd / "run" / "pareto" / f"{r['archid']}.onnx").is_file()


def test_best_lists_the_front(mo_run):
    cwd, _, _ = mo_run
    storage = str(cwd / "run" / "study.journal")
    numbers = sorted(t.number for t in _study(cwd / "run" / "study.journal").best_trials)
    data = json.loads(einnas("best", "--storage", storage, "-f", "json", cwd=cwd).stdout)
    assert sorted(r["number"] for r in data) == numbers
    assert all(r["latency_ms"] <= MAX_LATENCY and r["feasible"] for r in data)
    table = einnas("best", "--storage", storage, cwd=cwd).stdout
    assert f"{len(numbers)} trials (accuracy vs latency)" in table and "latency_ms" in table.splitlines()[1]


@pytest.mark.parametrize("option, words", [
    (["--objectives", "accuracy,speed"], "unknown objective 'speed'"),
    (["--objectives", "accuracy,latency,accuracy"], "accuracy given twice"),
    (["--objectives", "accuracy,latency,params,macs"], "at most three"),
    (["--max-latency", "-2"], "--max-latency must be a positive"),
    (["--max-latency", "2s"], "expected milliseconds"),
])
def test_bad_objective_options_exit_2_with_one_line(tmp_path, option, words):
    proc = einnas("search", "--dataset", "digits", "--trials", "2", "--out", "r", *option, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # refused before any work


def test_latency_budget_single_objective_with_pruning(fake, tmp_path):
    """``--objectives accuracy --max-latency``: one objective, constraints on every trial,
    multi-fidelity still on, and the best (ours and Optuna's) within the budget."""
    from einnas.search import open_study, run_worker
    from einnas.search.fidelity import Rungs
    from einnas.search.pareto import ParetoEvolution

    objectives = Objectives(("accuracy",), max_latency=MAX_LATENCY / 4)
    space = fake.make_space()
    strategy = ParetoEvolution(space, 4, 2, objectives=objectives)
    evaluator = ObjectiveEvaluator(fake.FidelityEvaluator(), objectives, space.input_shape, space.num_classes)
    path = str(tmp_path / "s.journal")
    study = open_study(open_storage(path), "s", fake.settings_for(strategy, evaluator, 0), shown=path)
    run_worker(study, strategy, evaluator, seed=0, trials=10, rungs=Rungs(epochs=9))
    assert len(study.directions) == 1
    view = StudyView.of(study)
    assert view.counted == 10 and view.pruned >= 1  # successive halving still stops candidates
    measured = [t for t in study.trials if LATENCY_MS in t.user_attrs]
    assert len(measured) == 10 and all("latency_ms" in t.constraints for t in measured)
    feasible = [t for t in study.trials if t.state.name == "COMPLETE" and t.constraints["latency_ms"] <= 0]
    infeasible = [t for t in study.trials if t.state.name == "COMPLETE" and t.constraints["latency_ms"] > 0]
    assert feasible
    assert study.best_trial.value == max(t.value for t in feasible)
    assert StudyView.of(study).best.number == study.best_trial.number
    assert all(r.number not in {t.number for t in infeasible} for r in view.top(10))


class _FailsWithCurve(Evaluator):
    """Every other candidate fails after two epochs (a timeout, say): a curve but no score."""

    scored_by = "trained"

    def evaluate(self, arch, seed):
        if int(arch.archid, 16) % 2:
            return Evaluation(False, reason="timeout", detail="fake", params=arch.info.params, curve=[0.1, 0.2])
        return Evaluation(True, value=0.5, params=arch.info.params, curve=[0.3, 0.5])


def test_multi_objective_failures_are_trials_and_the_search_goes_on(fake, tmp_path):
    from einnas.search import open_study, run_worker
    from einnas.search.pareto import ParetoEvolution

    objectives = Objectives(("accuracy", "params"))
    space = fake.make_space()
    strategy = ParetoEvolution(space, 3, 2, objectives=objectives)
    evaluator = ObjectiveEvaluator(_FailsWithCurve(), objectives, space.input_shape, space.num_classes)
    path = str(tmp_path / "s.journal")
    study = open_study(open_storage(path), "s", fake.settings_for(strategy, evaluator, 0), shown=path,
                       directions=objectives.directions)
    run_worker(study, strategy, evaluator, seed=0, trials=8)
    view = StudyView.of(study)
    assert view.counted == 8 and view.failed >= 1 and len(view.completed) >= 1
    for t in study.trials:
        assert t.intermediate_values == {}  # no report() in a multi-objective study
        if t.state.name == "COMPLETE":
            assert t.values == [0.5, float(t.user_attrs["params"])] and MACS in t.user_attrs


def test_a_candidate_that_cannot_be_timed_is_a_failed_trial_with_its_reason(fake, monkeypatch):
    import random

    import einnas.evaluate.latency as latency

    def broken(*args, **kwargs):
        raise ModelError("onnxruntime cannot time the model: unsupported op")

    monkeypatch.setattr(latency, "arch_latency", broken)
    space = fake.make_space()
    base = _Fixed()
    e = ObjectiveEvaluator(base, Objectives(("accuracy", "latency")), space.input_shape,
                           space.num_classes).evaluate(space.sample(random.Random(1)), 0)
    assert not e.ok and e.reason == "latency_failed" and "unsupported op" in e.detail and e.values is None


def test_multi_objective_study_prunes_at_rungs_by_the_objectives(fake, tmp_path):
    """Optuna's pruners are single-objective; a multi-objective study compares candidates at
    each rung by their objectives (MO-ASHA): some stop, each records its rung points, and
    each decision is the one ``pareto.promotes`` gives on the points before it."""
    from einnas.search import open_study, run_worker
    from einnas.search.fidelity import Rungs, keeps_up
    from einnas.search.pareto import ParetoEvolution, promotes
    from einnas.search.records import RUNG_POINTS

    objectives = Objectives(("accuracy", "params"))
    space = fake.make_space()
    seed_arch = space.sample(__import__("random").Random(99))
    strategy = ParetoEvolution(space, 4, 2, [("s", seed_arch)], objectives=objectives)
    evaluator = ObjectiveEvaluator(fake.FidelityEvaluator(epochs=9), objectives, space.input_shape,
                                   space.num_classes)
    path = str(tmp_path / "s.journal")
    study = open_study(open_storage(path), "s", fake.settings_for(strategy, evaluator, 0), shown=path,
                       directions=objectives.directions)
    run_worker(study, strategy, evaluator, seed=0, trials=16, rungs=Rungs(epochs=9))
    view = StudyView.of(study)
    assert view.counted == 16 and view.pruned >= 2 and view.completed
    trials = sorted((t for t in study.trials if RUNG_POINTS in t.user_attrs), key=lambda t: t.number)
    assert len(trials) == 16  # every candidate (the seed too) reached rung 0 and recorded its point
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert trials[0].user_attrs.get("is_seed") and trials[0].state.name == "COMPLETE"
    for i, t in enumerate(trials):  # one worker: the points at rung 0 before a trial are its predecessors'
        point = t.user_attrs[RUNG_POINTS]["0"]
        assert point == [-t.user_attrs["curve"][0], t.user_attrs["params"]]
        before = [u.user_attrs[RUNG_POINTS]["0"] for u in trials[:i]]
        continued = t.state.name == "COMPLETE" or t.user_attrs.get("rung", 0) > 0
        if i == 0:
            continue  # the seed is never stopped
        expected = promotes(point, before, 3) or keeps_up(-point[0], 1, t.user_attrs.get("parent_curve"))
        assert continued == expected, t.number
    front = {t.number for t in study.best_trials}
    assert front and all(study.trials[n].state.name == "COMPLETE" for n in front)
