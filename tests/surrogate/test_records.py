"""Records from studies (journal, sqlite), JSON Lines v1 files and run folders; bad input is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from einnas.errors import StudyError, UsageError
from einnas.surrogate.records import grammar_name, load_records, read_jsonl

optuna.logging.set_verbosity(optuna.logging.WARNING)
SHIPPED = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "bench_digits.jsonl"
ARCHS = ["sequential(linear(16), linear(32))", "sequential(linear(32), norm)", "sequential(linear(16), norm)",
         "sequential(linear(64), linear(16))", "sequential(norm, linear(16))", "sequential(linear(16), linear(16))"]
SETTINGS = {"dataset": "digits", "input_shape": [1, 8, 8], "num_classes": 10, "seed": 4, "strategy": "re",
            "evaluator": "trained", "epochs": 2, "seconds": 9.0, "batch_size": 64, "lr": 0.01, "max_params": 5000,
            "limits": {"max_params": 5000, "max_activations": 7000}, "grammar_sha256": "ab" * 32,
            "grammar_path": "einspace.lark (built-in)", "version": "0.1.0", "created": "2026-12-01 10:00:00"}


def _attrs(i: int, **kw) -> dict:
    from einnas.grammar import parse_arch

    arch = parse_arch(ARCHS[i])
    return {"arch": arch.string, "archid": arch.archid, "params": 100 + i, "origin": "random", "seconds": 0.5, **kw}


def _fill(storage, name="s", settings=SETTINGS) -> list[str]:
    """A study with one trial of each kind; returns the archids that are records, in order."""
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    if settings is not None:
        study.set_user_attr("einnas", settings)
    trials = [
        (TrialState.COMPLETE, 0.81, _attrs(0, scored_by="trained", test_acc=0.79)),
        (TrialState.FAIL, None, _attrs(1, scored_by="trained", reason="timeout", detail="over 9 s")),
        (TrialState.COMPLETE, 0.95, _attrs(2, scored_by="predicted")),  # a predicted score is no record
        (TrialState.PRUNED, None, _attrs(3, scored_by="trained", reason="surplus")),
        (TrialState.FAIL, None, _attrs(4)),  # lost: its worker died before it was scored
        (TrialState.COMPLETE, 0.5, _attrs(5, scored_by="trained", origin="mutation", parent=0)),
    ]
    for state, value, attrs in trials:
        study.add_trial(create_trial(state=state, value=value, user_attrs=attrs))
    return [trials[i][2]["archid"] for i in (0, 1, 5)]


def _check(records, archids, study="s"):
    assert [r["archid"] for r in records] == archids
    good, failed, child = records
    assert good["ok"] and good["val_acc"] == 0.81 and good["test_acc"] == 0.79 and good["reason"] is None
    assert not failed["ok"] and failed["val_acc"] is None and failed["reason"] == "timeout"
    assert failed["detail"] == "over 9 s"
    assert child["parent"] == good["archid"] and child["origin"] == "mutation" and child["index"] == 5
    for r in records:
        assert r["dataset"] == "digits" and r["input_shape"] == [1, 8, 8] and r["num_classes"] == 10
        assert r["budget"] == {"epochs": 2, "seconds": 9.0, "batch_size": 64, "lr": 0.01, "max_params": 5000,
                               "max_activations": 7000}
        assert r["study"] == study and r["bench_seed"] == 4 and r["grammar"] == "ab" * 32
        assert isinstance(r["seed"], int) and r["v"] == 1 and r["grammar_name"] == "einspace"
    from einnas.search import training_seed

    assert good["seed"] == training_seed(4, good["archid"])  # the search loop's training seed


def test_journal_file_gives_trained_evaluated_trials_only(tmp_path):
    from einnas.search import open_storage

    archids = _fill(open_storage(str(tmp_path / "s.journal")))
    _check(load_records([str(tmp_path / "s.journal")]), archids)


def test_sqlite_url_and_study_name_filter(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    from einnas.search import open_storage

    storage = open_storage(url)
    archids = _fill(storage, "one")
    _fill(storage, "two")
    assert len(load_records([url])) == 6  # every einnas study of the storage
    _check(load_records([url], study_names=["one"]), archids, study="one")
    with pytest.raises(StudyError, match="no study named 'three'"):
        load_records([url], study_names=["three"])
    with pytest.raises(UsageError, match="no such database file"):
        load_records([f"sqlite:///{tmp_path / 'missing.db'}"])
    assert not (tmp_path / "missing.db").exists()  # reading never creates a database


def test_a_study_that_is_not_an_einnas_study_is_named(tmp_path):
    from einnas.search import open_storage

    storage = open_storage(str(tmp_path / "mixed.journal"))
    _fill(storage, "ours")
    _fill(storage, "foreign", settings=None)
    with pytest.raises(StudyError, match="study 'foreign' in .*mixed.journal: not an einnas study"):
        load_records([str(tmp_path / "mixed.journal")])
    assert len(load_records([str(tmp_path / "mixed.journal")], study_names=["ours"])) == 3


def test_search_loop_study_and_run_folder(tmp_path):
    """A study written by the search's own worker loop is training data, read from its run folder."""
    from einnas.grammar import Limits, load_grammar
    from einnas.search import (
        Evaluation, Evaluator, RegularisedEvolution, SearchSpace, StudyView, open_storage, open_study, run_worker,
    )

    class Scored(Evaluator):
        scored_by = "trained"

        def evaluate(self, arch, seed):
            return Evaluation(True, value=(int(arch.archid[:4], 16) % 100) / 100, params=arch.info.params)

    space = SearchSpace(load_grammar(), (1, 8, 8), 10, Limits(max_params=20_000, max_activations=20_000))
    strategy = RegularisedEvolution(space, 3, 2)
    run = tmp_path / "runs" / "digits-re-s2"
    settings = {**SETTINGS, "seed": 2, **strategy.settings()}
    study = open_study(open_storage(str(run / "study.journal")), "digits-re-s2", settings, seed=2, shown="x")
    run_worker(study, strategy, Scored(), seed=2, trials=7)
    (run / "best.onnx").write_bytes(b"")  # a run folder holds ONNX files too: the journal wins
    records = load_records([str(run)])
    view = StudyView.of(study)
    assert [r["archid"] for r in records] == [t.archid for t in view.records] and len(records) == 7
    assert [r["val_acc"] for r in records] == [t.value for t in view.records]
    mutations = [r for r in records if r["origin"] == "mutation"]
    assert mutations and all(r["parent"] in {x["archid"] for x in records} for r in mutations)


def test_json_lines_v1_files_load_unchanged(tmp_path):
    lines = SHIPPED.read_text().splitlines()[:6]
    copy = tmp_path / "digits.jsonl"
    copy.write_text("\n".join(lines) + "\n\n")  # a blank line is no record and no error
    records = load_records([str(copy)])
    assert records == [json.loads(line) for line in lines]
    assert {"arch", "archid", "dataset", "input_shape", "num_classes", "budget", "ok", "val_acc"} <= set(records[0])


def test_malformed_lines_are_counted_and_located(tmp_path):
    lines = SHIPPED.read_text().splitlines()[:4]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], "{not json", lines[1], '{"arch": "x"}', lines[2], "[1, 2]", lines[3]]) + "\n")
    with pytest.raises(UsageError) as info:
        load_records([str(bad)])
    message = str(info.value)
    assert "bad.jsonl" in message and "3 malformed lines" in message and "lines 2, 4, 6" in message
    assert "--skip-bad-lines" in message
    notes: list[str] = []
    records = load_records([str(bad)], skip_bad_lines=True, log=notes.append)
    assert [r["archid"] for r in records] == [json.loads(line)["archid"] for line in lines]
    assert any("skipped 3 malformed lines (lines 2, 4, 6)" in n for n in notes)


def test_unfinished_last_line_is_left_out_and_said(tmp_path):
    lines = SHIPPED.read_text().splitlines()[:2]
    growing = tmp_path / "growing.jsonl"
    growing.write_text(lines[0] + "\n" + lines[1][:40])  # a writer is half-way through line 2
    notes: list[str] = []
    assert len(read_jsonl(growing, log=notes.append)) == 1
    assert any("unfinished last line 2" in n for n in notes)


def test_missing_paths_and_folders_that_are_neither(tmp_path):
    with pytest.raises(UsageError, match="no such file or folder"):
        load_records([str(tmp_path / "nope.jsonl")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="neither study.journal nor .onnx"):
        load_records([str(tmp_path / "empty")])
    (tmp_path / "none.jsonl").write_text("")
    with pytest.raises(UsageError, match="no records in"):
        load_records([str(tmp_path / "none.jsonl")])


@pytest.mark.parametrize("case", ["missing", "malformed", "foreign"])
def test_cli_bad_records_one_line_exit_2(tmp_path, capsys, case):
    from einnas.cli import main
    from einnas.search import open_storage

    if case == "missing":
        source, expect = tmp_path / "missing.jsonl", "no such file"
    elif case == "malformed":
        source, expect = tmp_path / "bad.jsonl", "1 malformed line (line 1"
        source.write_text("oops\n" + SHIPPED.read_text().splitlines()[0] + "\n")
    else:
        source, expect = tmp_path / "other.journal", "study 'theirs'"
        _fill(open_storage(str(source)), "theirs", settings=None)
    out = tmp_path / "predictor"
    assert main(["surrogate", "fit", str(source), "-o", str(out), "--no-text", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("einnas surrogate fit: error:") and expect in err and "\n" not in err
    assert not out.exists()
    assert main(["surrogate", "eval", "--records", str(source), "-q"]) == 2
    assert expect in capsys.readouterr().err


def test_grammar_name_of_v1_records_and_studies():
    [shipped] = [json.loads(SHIPPED.read_text().splitlines()[0])]
    assert grammar_name(shipped) == "einspace"  # the default grammar: no --grammar in its command
    corpus = dict(shipped, run={"command": "einnas bench build --grammar grammar/spaces/einspace_extra.lark --n 4"})
    assert grammar_name(corpus) == "einspace_extra"
    assert grammar_name(dict(shipped, run={"command": "einnas bench build --grammar=cnn"})) == "cnn"
    assert grammar_name({"grammar_name": "resnet", "run": corpus["run"]}) == "resnet"  # a study's own name wins


def test_every_shipped_records_file_loads():
    data = SHIPPED.parent
    files = sorted(data.glob("*.jsonl")) + sorted(data.glob("corpus/**/*.jsonl"))
    assert len(files) >= 2
    for path in files:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        records = load_records([str(path)])
        # every line is a record (an unfinished last line of a corpus being built may be left out)
        assert len(lines) - 1 <= len(records) <= len(lines)
        assert all(r["input_shape"] and r["num_classes"] and "budget" in r for r in records)
