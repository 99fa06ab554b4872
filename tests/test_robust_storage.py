"""`einnas trials/best/report --storage X` on storages einnas did not make: one line, exit 2,
and nothing created or changed (an SQLite file that is someone else's database stays as it was)."""

from __future__ import annotations

import sqlite3

import optuna
import pytest

from einnas.cli import main

COMMANDS = (["trials"], ["best"], ["report", "-o", "REPORT"])


def _journal(path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def _einnas_study(storage, name="s"):
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    study.set_user_attr("einnas", {"dataset": "digits", "input_shape": [1, 8, 8], "num_classes": 10})
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"arch": "sequential(linear(16), norm)"}))
    return study


def _error(capsys, tmp_path, storage, command) -> str:
    argv = [a.replace("REPORT", str(tmp_path / "report.html")) for a in command] + ["--storage", storage]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert not (tmp_path / "report.html").exists()
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_foreign_sqlite_database_is_refused_and_left_untouched(command, tmp_path, capsys):
    # Before: Optuna added its tables to the user's database, then "give --study-name (studies: none)".
    db = tmp_path / "mine.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE customers (name TEXT)")
    before = db.read_bytes()
    line = _error(capsys, tmp_path, f"sqlite:///{db}", command)
    assert "without Optuna's tables (it has customers)" in line and "mine.db" in line
    assert db.read_bytes() == before


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_missing_sqlite_file_is_not_created(command, tmp_path, capsys):
    line = _error(capsys, tmp_path, f"sqlite:///{tmp_path}/missing.db", command)
    assert "missing.db: no such database file" in line
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_an_optuna_study_of_another_tool_is_not_an_einnas_study(command, tmp_path, capsys):
    # Before: `trials` listed it and `best` printed "None".
    study = optuna.create_study(storage=_journal(tmp_path / "other.journal"), study_name="theirs")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    line = _error(capsys, tmp_path, str(tmp_path / "other.journal"), command)
    assert "study 'theirs'" in line and "not an einnas study" in line


def test_settings_that_are_not_a_mapping_are_not_an_einnas_study(tmp_path, capsys):
    # Before: `best` crashed with AttributeError ('str' object has no attribute 'get').
    study = _einnas_study(_journal(tmp_path / "s.journal"))
    study.set_user_attr("einnas", "garbage")
    assert "not an einnas study" in _error(capsys, tmp_path, str(tmp_path / "s.journal"), ["best"])


def test_a_journal_entry_optuna_does_not_know_is_one_line(tmp_path, capsys):
    # Before: AssertionError ("Should not reach.") from Optuna's replay.
    path = tmp_path / "s.journal"
    _einnas_study(_journal(path))
    lines = path.read_text().splitlines(True)
    path.write_text("".join(lines[:2] + ['{"op_code": 99, "worker_id": "w"}\n'] + lines[2:]))
    line = _error(capsys, tmp_path, str(path), ["trials"])
    assert "s.journal: not an Optuna journal file" in line


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_text(""), "holds no study"),
    (lambda p: optuna.storages.RDBStorage(f"sqlite:///{p}"), "holds no study"),
])
def test_a_storage_without_studies_says_so(make, expected, tmp_path, capsys):
    path = tmp_path / "empty.db"
    make(path)
    spec = str(path) if path.stat().st_size == 0 else f"sqlite:///{path}"
    assert expected in _error(capsys, tmp_path, spec, ["trials"])


def test_empty_and_special_storage_names(tmp_path, capsys):
    assert "--storage is empty" in _error(capsys, tmp_path, "", ["trials"])
    assert "/dev/null: not a regular file" in _error(capsys, tmp_path, "/dev/null", ["trials"])


def test_an_einnas_sqlite_study_still_reads(tmp_path, capsys):
    _einnas_study(f"sqlite:///{tmp_path}/ok.db")
    assert main(["trials", "--storage", f"sqlite:///{tmp_path}/ok.db", "-f", "json"]) == 0
    assert '"value": 0.5' in capsys.readouterr().out


def test_a_search_may_still_create_a_new_sqlite_file(tmp_path):
    from einnas.search.storage import open_storage, stored_settings

    url = f"sqlite:///{tmp_path}/new.db"
    assert stored_settings(url, "s") is None and not (tmp_path / "new.db").exists()
    open_storage(url, create=True)
    assert (tmp_path / "new.db").is_file()
