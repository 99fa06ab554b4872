"""Storage: journal files and PostgreSQL with several workers at once, errors, the dashboard."""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from einnas.errors import StudyError
from einnas.search import StudyView, open_existing, open_storage
from einnas.search.storage import describe_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run_workers(fake, storage: str, name: str, trials: int, workers: int = 4, sleep: float = 0.05):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [
        subprocess.Popen([sys.executable, str(fake.PATH), storage, name, str(trials), "0", str(sleep)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(workers)
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-3000:]
        outs.append(json.loads(out))
    return outs


def _check_exact(storage, name: str, trials: int, outs: list[dict]):
    study = optuna.load_study(study_name=name, storage=storage)
    view = StudyView.of(study)
    numbers = [t.number for t in study.get_trials()]
    assert len(numbers) == len(set(numbers))  # trial numbers unique
    assert view.counted == trials  # none lost, none extra
    evaluated = [a for out in outs for a in out["archids"]]
    assert len(evaluated) == trials == sum(out["evaluated"] for out in outs)
    assert len(set(evaluated)) == trials  # no architecture evaluated twice
    assert sorted(r.archid for r in view.records if r.counted) == sorted(evaluated)
    assert sum(out["evaluated"] > 0 for out in outs) >= 2  # the workers really shared the work
    # anything beyond the counted trials was never evaluated and says why
    assert all(r.status == "surplus" for r in view.records if not r.counted)


def test_four_workers_on_one_journal_file(fake, tmp_path):
    path = str(tmp_path / "shared.journal")
    outs = _run_workers(fake, path, "shared", trials=16)
    _check_exact(open_storage(path, create=False), "shared", 16, outs)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


@pytest.fixture
def postgres_url():
    """A private PostgreSQL server on a Unix socket in a temporary folder, stopped afterwards."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    pytest.importorskip("psycopg")
    folder = tempfile.mkdtemp(prefix="einnas-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(folder, "data")
    try:
        subprocess.run(as_user + [initdb, "-D", data, "-A", "trust", "-U", "einnas"], check=True,
                       capture_output=True, timeout=120)
        subprocess.run(as_user + [pg_ctl, "-D", data, "-o", f"-p {port} -k {folder} -c listen_addresses=''",
                                  "-l", os.path.join(folder, "log"), "-w", "start"],
                       check=True, capture_output=True, timeout=120)
        yield f"postgresql://einnas@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_four_workers_on_postgresql_created_at_once(fake, postgres_url):
    # a fresh database: the four workers race to create the schema and the study
    outs = _run_workers(fake, postgres_url, "pg", trials=16)
    storage = open_storage(postgres_url, create=False)
    _check_exact(storage, "pg", 16, outs)
    assert getattr(storage, "get_heartbeat_interval")() is not None  # Optuna's heartbeat is on


def test_storage_errors(tmp_path):
    with pytest.raises(StudyError, match="no such study file"):
        open_storage(str(tmp_path / "missing.journal"), create=False)
    assert not (tmp_path / "missing.journal").exists()  # reading never creates
    with pytest.raises(StudyError, match="is a folder"):
        open_storage(str(tmp_path))
    bad = tmp_path / "bad.journal"
    bad.write_text("this is not a journal\n")
    with pytest.raises(StudyError, match="not an Optuna journal"):
        open_storage(str(bad))
    with pytest.raises(StudyError, match="give --storage"):
        open_existing(None, None)
    with pytest.raises(StudyError, match="nosuchdriver"):
        open_storage("nosuchdriver://x/y")
    assert "secret" not in describe_storage("postgresql://me:secret@db.example/nas")


def test_study_opens_in_optuna_dashboard(fake, tmp_path):
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    from einnas.search import RegularisedEvolution, open_study, run_worker

    path = str(tmp_path / "dash.journal")
    strategy, evaluator = RegularisedEvolution(fake.make_space(), 4, 2), fake.FakeEvaluator(fail_every=3)
    study = open_study(open_storage(path), "dash", fake.settings_for(strategy, evaluator, 0), shown=path)
    run_worker(study, strategy, evaluator, seed=0, trials=5)
    app = wsgi(open_storage(path, create=False))

    def get(url):
        environ = {"PATH_INFO": url, "HTTP_ACCEPT_ENCODING": "gzip"}
        setup_testing_defaults(environ)
        status = []
        body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
        return status[0], body

    status, body = get("/api/studies")
    assert status.startswith("200") and json.loads(body)["study_summaries"][0]["study_name"] == "dash"
    status, body = get("/api/studies/0")
    assert status.startswith("200")
    detail = json.loads(body)
    assert len(detail["trials"]) == 5
    attrs = {a["key"] for a in detail["trials"][0]["user_attrs"]}
    assert {"arch", "archid", "params", "scored_by"} <= attrs


def test_lock_left_by_a_killed_worker_is_taken_over(tmp_path, monkeypatch):
    from einnas.search import storage as storage_module

    monkeypatch.setattr(storage_module, "LOCK_GRACE_PERIOD", 3)
    monkeypatch.chdir(tmp_path)
    journal = Path("runs") / "x" / "study.journal"  # relative, as the default run folder is
    optuna.create_study(storage=open_storage(str(journal)), study_name="x")
    os.symlink(os.path.abspath(journal), str(journal) + ".lock")  # as a worker killed mid-write leaves it
    optuna.create_study(storage=open_storage(str(journal)), study_name="y")  # waits out the grace period
    assert not os.path.lexists(str(journal) + ".lock")  # the dead worker's lock was taken over and released
    assert {s.study_name for s in open_storage(str(journal)).get_all_studies()} == {"x", "y"}


def _fake_search(fake, journal, trials, name="s"):
    from einnas.search import RegularisedEvolution, open_study, run_worker

    strategy, evaluator = RegularisedEvolution(fake.make_space(), 4, 2), fake.FakeEvaluator()
    study = open_study(open_storage(str(journal)), name, fake.settings_for(strategy, evaluator, 0), seed=0,
                       shown=str(journal))
    # a short grace period: the cut may leave the last trial RUNNING, lost after it
    run_worker(study, strategy, evaluator, seed=0, trials=trials, grace_period=1, poll=0.2)
    return study


def test_journal_cut_inside_a_line_is_repaired_and_keeps_every_complete_trial(fake, tmp_path):
    journal = tmp_path / "cut.journal"
    _fake_search(fake, journal, trials=5)
    data = journal.read_bytes()
    complete = data[: data.rstrip(b"\n").rfind(b"\n") + 1]  # every entry but the last
    journal.write_bytes(complete + data[len(complete): len(complete) + 17])  # a crash mid-write
    before = StudyView.of(optuna.load_study(study_name="s", storage=open_storage(str(journal), create=False)))
    with pytest.warns(RuntimeWarning, match="removed a cut last line of 17 bytes"):
        study = _fake_search(fake, journal, trials=8)  # a restart appends to the journal
    backups = list(tmp_path.glob("cut.journal.torn-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == data[len(complete): len(complete) + 17]
    # the file reads again from a fresh process's point of view, with every trial kept
    after = StudyView.of(optuna.load_study(study_name="s", storage=open_storage(str(journal), create=False)))
    assert after.counted == 8 == StudyView.of(study).counted
    kept = {r.number: r.archid for r in before.records if r.counted}
    assert len(kept) >= 4 and all(after.records[n].archid == a for n, a in kept.items())


def test_journal_entry_missing_only_its_line_end_is_completed(fake, tmp_path):
    journal = tmp_path / "nl.journal"
    _fake_search(fake, journal, trials=3)
    journal.write_bytes(journal.read_bytes().rstrip(b"\n"))
    with pytest.warns(RuntimeWarning, match="lacked its line end"):
        _fake_search(fake, journal, trials=4)
    view = StudyView.of(optuna.load_study(study_name="s", storage=open_storage(str(journal), create=False)))
    assert view.counted == 4 and not list(tmp_path.glob("nl.journal.torn-*"))


def test_write_protected_journal_or_folder_is_one_clear_error(fake, tmp_path, monkeypatch):
    journal = tmp_path / "ro" / "study.journal"
    _fake_search(fake, journal, trials=2)
    import einnas.search.storage as storage

    real = os.access
    monkeypatch.setattr(storage.os, "access", lambda p, mode: False if str(p) == str(journal) else real(p, mode))
    with pytest.raises(StudyError, match="journal file is write-protected"):
        open_storage(str(journal))
    assert open_storage(str(journal), create=False) is not None  # reading it still works
    monkeypatch.setattr(storage.os, "access", lambda p, mode: False if str(p) == str(tmp_path / "ro") else real(p, mode))
    with pytest.raises(StudyError, match="is write-protected; the journal and its lock"):
        open_storage(str(tmp_path / "ro" / "other.journal"))
