"""einnas bench build: a search with the sampling strategy in a study (exact counts, resume, workers),
its records and export; the ONNX-folder reader."""

from __future__ import annotations

import json
import os
import random

import optuna
import pytest

from einnas.errors import ModelError, StudyError, UsageError
from einnas.search import StudyView, TrialRecord, open_storage
from einnas.surrogate.bench import BenchConfig, build, export
from einnas.surrogate.onnxbench import read_folder
from einnas.surrogate.records import load_records

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Tiny networks and one epoch: each trial trains in well under a second (as tests/search's FAST).
TINY = dict(dataset="digits", epochs=1, seconds=20, max_params=3000, max_activations=3000, threads=1)
FAST = ["--epochs", "1", "--seconds", "20", "--threads", "1", "--max-params", "3000", "--max-activations", "3000"]


def config(tmp_path, trials, seed=0, name="b", **kw) -> BenchConfig:
    given = dict(TINY, storage=str(tmp_path / f"{name}.journal"), study_name=name, command="einnas bench build (test)")
    return BenchConfig(trials=trials, seed=seed, **{**given, **kw})


def view_of(path, name="b") -> StudyView:
    return StudyView.of(optuna.load_study(study_name=name, storage=open_storage(str(path), create=False)))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    summary = build(config(tmp, 5), quiet=True)
    return tmp, summary


def test_build_gives_exactly_n_trials_with_task_budget_and_provenance(built):
    tmp, summary = built
    view = view_of(tmp / "b.journal")
    assert view.counted == 5 == len(view.records) == summary["records"] and summary["study"] == "b"
    assert len({r.archid for r in view.records}) == 5
    study = optuna.load_study(study_name="b", storage=open_storage(str(tmp / "b.journal"), create=False))
    settings = study.user_attrs["einnas"]
    assert settings["task"] == {"dataset": "digits", "input_shape": [1, 8, 8], "num_classes": 10,
                                "train_size": 1077, "valid_size": 360, "test_size": 360}
    assert settings["budget"] == {"epochs": 1, "seconds": 20, "batch_size": 256, "lr": 0.04, "max_params": 3000,
                                  "max_activations": 3000}
    assert settings["strategy"] == "sample" and settings["mutate_fraction"] == 0.3 and settings["seed"] == 0
    assert len(settings["grammar_sha256"]) == 64
    assert study.user_attrs["einnas_run"]["command"] == "einnas bench build (test)"
    from einnas.search import training_seed

    for r in view.records:
        assert r.scored_by == "trained" and r.origin == "sample" and r.params <= 3000  # too few scored to mutate
        assert r.attrs["train_seed"] == training_seed(0, r.archid)
        assert r.attrs["run"]["torch"] and r.attrs["run"]["date"] and r.attrs["device"] == "cpu"
        assert (r.state == "COMPLETE") == (r.attrs["test_acc"] is not None)


def test_records_of_a_build(built):
    tmp, _ = built
    records = load_records([str(tmp / "b.journal")])
    assert len(records) == 5 and [r["index"] for r in records] == [0, 1, 2, 3, 4]
    for r in records:
        assert r["dataset"] == "digits" and r["train_size"] == 1077 and r["budget"]["epochs"] == 1
        assert r["ok"] == (r["val_acc"] is not None) and (r["ok"] or r["reason"]) and r["study"] == "b"
        assert r["run"]["command"] == "einnas bench build (test)" and len(r["archid"]) == 12
        assert r["grammar_name"] == "einspace"
        assert (0 <= r["test_acc"] <= 1) if r["ok"] else r["test_acc"] is None


def test_einnas_trials_reads_a_build(built, capsys):
    from einnas.cli import main

    tmp, _ = built
    assert main(["trials", "--storage", str(tmp / "b.journal"), "--study-name", "b", "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in rows] == [0, 1, 2, 3, 4] and {r["origin"] for r in rows} == {"sample"}


def test_export_round_trips_and_guards_foreign_files(built, tmp_path, capsys):
    from einnas.cli import main

    tmp, _ = built
    out = tmp_path / "records.jsonl"
    assert main(["bench", "export", "--storage", str(tmp / "b.journal"), "-o", str(out)]) == 0
    assert "5 records" in capsys.readouterr().out
    assert load_records([str(out)]) == load_records([str(tmp / "b.journal")])
    assert export(str(tmp / "b.journal"), out) == 5  # its own file: replaced without --force
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"mine": 1}\n')
    assert main(["bench", "export", "--storage", str(tmp / "b.journal"), "-o", str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert "notes.jsonl" in err and "--force" in err and "\n" not in err
    assert foreign.read_text() == '{"mine": 1}\n'  # nothing lost
    assert main(["bench", "export", "--storage", str(tmp / "b.journal"), "-o", str(foreign), "--force"]) == 0
    assert len(load_records([str(foreign)])) == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    with pytest.raises(UsageError, match="not a study"):  # JSON Lines in, JSON Lines out: not an export
        export(str(foreign), tmp_path / "again.jsonl")


def test_resume_continues_to_n_and_extends(tmp_path):
    first = build(config(tmp_path, 4, timeout=0.05), quiet=True)  # stops after its first trial
    assert first["records"] < 4
    done = [r.archid for r in view_of(tmp_path / "b.journal").records]
    again = build(config(tmp_path, 4), quiet=True)  # the same command again: continues to 4
    view = view_of(tmp_path / "b.journal")
    assert again["records"] == 4 == view.counted and [r.archid for r in view.records][: len(done)] == done
    assert build(config(tmp_path, 4), quiet=True)["this_worker"] == 0  # nothing left to do
    build(config(tmp_path, 6), quiet=True)  # a larger --trials extends the build
    assert view_of(tmp_path / "b.journal").counted == 6


def test_same_seed_same_architectures(tmp_path):
    ids = lambda name: [r.archid for r in view_of(tmp_path / f"{name}.journal", name).records]  # noqa: E731
    build(config(tmp_path, 3, seed=5, name="x"), quiet=True)
    build(config(tmp_path, 3, seed=5, name="y"), quiet=True)
    build(config(tmp_path, 3, seed=6, name="z"), quiet=True)
    assert ids("x") == ids("y") != ids("z")


def test_two_workers_give_exactly_n(tmp_path):
    summary = build(config(tmp_path, 6), workers=2, quiet=True)
    view = view_of(tmp_path / "b.journal")
    assert summary["records"] == 6 == view.counted
    assert len({r.archid for r in view.records if r.counted}) == 6
    workers = {r.attrs["worker"]["pid"] for r in view.records if r.counted}
    assert os.getpid() not in workers and len(workers) >= 1


def test_killed_command_resumes_to_exactly_n(tmp_path):
    """SIGTERM takes the workers with it; the same command again retries their trials and stops at N."""
    import signal
    import subprocess
    import sys
    import time

    # batch size 4: each trial takes a second or more, so the build is caught training
    # (with FAST alone a fast machine finished all trials before the first poll)
    n = 12
    command = [sys.executable, "-m", "einnas.cli", "bench", "build", "--dataset", "digits", "--trials", str(n),
               "--storage", "k.journal", "--workers", "2", "-q", *FAST, "--batch-size", "4"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            if view_of(tmp_path / "k.journal", "digits-bench-s0").counted >= 2:
                break
        except (KeyError, StudyError):  # the file or the study is not there yet
            continue
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    first = view_of(tmp_path / "k.journal", "digits-bench-s0")
    assert 2 <= first.counted < n, "the build finished before it could be killed"
    for pid in {r.attrs["worker"]["pid"] for r in first.records if "worker" in r.attrs}:
        with pytest.raises(ProcessLookupError):  # no worker left behind
            os.kill(pid, 0)
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    view = view_of(tmp_path / "k.journal", "digits-bench-s0")
    assert view.counted == n and view.running == 0
    assert len({r.archid for r in view.records if r.counted}) == n
    assert all(r.state == "FAIL" and not r.counted for r in view.records if r.status.startswith("lost"))


def _view(n_scored: int) -> StudyView:
    from einnas.grammar import Limits, load_grammar, sample

    archs = sample(load_grammar(), n_scored, seed=1, input_shape=(1, 8, 8), limits=Limits(max_params=3000))
    return StudyView([TrialRecord(i, "COMPLETE", i / 100, a.string, a.archid, a.info.params, "sample", None,
                                  "trained", None, "", 0.1, False, None, {}) for i, a in enumerate(archs)])


def test_sample_strategy_mutates_the_best_trials():
    from einnas.grammar import Limits, load_grammar
    from einnas.search import SearchSpace
    from einnas.search.strategies import STRATEGIES, SampleAndMutate

    space = SearchSpace(load_grammar(), (1, 8, 8), 10, Limits(max_params=3000, max_activations=3000))
    assert STRATEGIES["sample"] is SampleAndMutate
    always = SampleAndMutate(space, mutate_fraction=1.0, top_fraction=0.1)
    proposals = [always.propose(_view(30), 30, random.Random(k)) for k in range(12)]
    assert {p.origin for p in proposals} == {"mutation"}
    assert {p.parent for p in proposals} <= {29, 28, 27, 26, 25}  # the best 5 (10% of 30 is fewer)
    assert {p.origin for p in (always.propose(_view(4), 4, random.Random(k)) for k in range(5))} == {"sample"}
    never = SampleAndMutate(space, mutate_fraction=0.0)
    assert {never.propose(_view(30), 30, random.Random(k)).origin for k in range(5)} == {"sample"}
    a = always.propose(_view(30), 30, random.Random(3))
    assert a.arch.archid == always.propose(_view(30), 30, random.Random(3)).arch.archid  # the rng decides


def test_bad_options_and_mismatched_resume(tmp_path, capsys):
    from einnas.cli import main

    with pytest.raises(UsageError):
        build(config(tmp_path, 2, mutate_fraction=2.0))
    with pytest.raises(UsageError, match="bench export"):
        build(config(tmp_path, 2, storage=str(tmp_path / "r.jsonl")))
    build(config(tmp_path, 1), quiet=True)
    with pytest.raises(StudyError, match="epochs"):  # the budget is fixed per build
        build(config(tmp_path, 2, epochs=2), quiet=True)
    base = ["bench", "build", "--trials", "1", "-q", *FAST]
    assert main([*base, "--dataset", "nope", "--storage", str(tmp_path / "n.journal")]) == 2
    assert main([*base, "--dataset", "digits", "--out", str(tmp_path / "old.jsonl")]) == 2
    assert main([*base, "--dataset", "digits", "--storage", str(tmp_path / "b.journal"), "--study-name", "b",
                 "--lr", "0.1"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("einnas bench build: error:") for e in errors)
    assert "lr" in errors[2] and view_of(tmp_path / "b.journal").counted == 1  # nothing changed


# --- ONNX-Bench-style folders -------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory):
    from einnas.grammar.export import export_onnx

    root = tmp_path_factory.mktemp("onnxbench")
    (root / "space_a").mkdir()
    (root / "space_b").mkdir()
    archs = ["sequential(linear(16), linear(32))", "sequential(linear(32), norm)", "sequential(linear(16), norm)"]
    for i, arch in enumerate(archs):
        export_onnx(arch, (1, 8, 8), 10, root / "space_a" / f"{i}.onnx", metadata={"accuracy": str(80.0 + i)})
    export_onnx("sequential(linear(64), linear(16))", (1, 8, 8), 10, root / "space_b" / "0.onnx", metadata={"accuracy": "55.5"})
    return root


def test_reads_accuracy_from_metadata_props_in_percent(onnx_folder):
    records = read_folder(onnx_folder, prefix="bench")
    assert len(records) == 4
    by_group = {}
    for r in records:
        by_group.setdefault(r["dataset"], []).append(r["val_acc"])
        assert r["ok"] and r["archid"].startswith("onnx-") and os.path.isfile(r["onnx"])
    assert sorted(by_group) == ["bench/space_a", "bench/space_b"]
    assert sorted(by_group["bench/space_a"]) == pytest.approx([0.80, 0.81, 0.82])
    with pytest.raises(ModelError, match="above 1"):  # 10 classes read as a fraction is no accuracy
        read_folder(onnx_folder, scale="fraction", key="num_classes")


def test_first_entry_is_the_label_when_no_known_key(tmp_path):
    from einnas.grammar.export import export_onnx

    export_onnx("sequential(linear(16), linear(16))", (1, 8, 8), 10, tmp_path / "a.onnx")  # first entry: input_shape "1,8,8"
    with pytest.raises(ModelError, match="a.onnx"):
        read_folder(tmp_path)
    [record] = read_folder(tmp_path, key="num_classes", scale="percent")
    assert record["val_acc"] == pytest.approx(0.10)


def test_bad_files_name_the_file_or_are_skipped(onnx_folder, tmp_path):
    import shutil

    shutil.copytree(onnx_folder, tmp_path / "copy")
    (tmp_path / "copy" / "space_a" / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="bad.onnx"):
        read_folder(tmp_path / "copy")
    lines = []
    assert len(read_folder(tmp_path / "copy", skip_bad=True, log=lines.append)) == 4
    assert "skipped 1" in lines[0]
    with pytest.raises(UsageError):
        read_folder(tmp_path / "nothing-here")


def test_surrogate_fit_accepts_an_onnx_folder(onnx_folder, tmp_path):
    from einnas.surrogate.predictor import featurize, load_records

    records = load_records([str(onnx_folder)])
    data = featurize(records, None, None)
    assert len(data.y) == 4
    assert set(data.groups) == {f"{onnx_folder.name}/space_a", f"{onnx_folder.name}/space_b"}
    assert data.chance == pytest.approx([0.1] * 4)  # classes read from the graph's output
