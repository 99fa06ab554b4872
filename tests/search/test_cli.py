"""`einnas search`, `trials` and `best` end to end, with the real trainer on digits."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from einnas.search import StudyView, open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Tiny candidates and one epoch keep each trial around a second on two cores.
FAST = ["--workers", "1", "--epochs", "1", "--seconds", "30", "--threads", "1", "--max-params", "30000", "--max-activations", "8000"]


def einnas(*args, cwd, timeout=400, check=True):
    proc = subprocess.run([sys.executable, "-m", "einnas.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _view(journal: Path) -> StudyView:
    storage = open_storage(str(journal), create=False)
    studies = storage.get_all_studies()
    if not studies:  # the file is there, the study not yet
        return StudyView([])
    return StudyView.of(optuna.load_study(study_name=studies[0].study_name, storage=storage))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("search")
    proc = einnas("search", "--dataset", "digits", "--trials", "6", "--seed", "0", "--final-epochs", "2",
                  "--out", "run", "-f", "json", *FAST, cwd=cwd)
    return cwd, json.loads(proc.stdout), proc


def test_search_writes_onnx_report_and_plot(first_run):
    import onnx

    cwd, report, proc = first_run
    out = cwd / "run"
    assert report["trials"]["counted"] == 6 and report["study"] == "digits-re-s0"
    assert report["settings"]["dataset"] == "digits" and report["settings"]["input_shape"] == [1, 8, 8]
    assert report["best"]["val_acc"] > 0 and report["final"]["ok"] and report["final"]["test_acc"] is not None
    assert report["final"]["shift"] == 0  # 8x8 digits: no translation by default
    model = onnx.load(str(out / "best.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["archid"] == report["final"]["archid"] and meta["dataset"] == "digits"
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "report.json").read_text())["best"] == report["best"]
    assert "## Top architectures" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()  # the page to look at, its graph drawn from best.onnx
    data = json.loads(page.split('id="einnas-data">', 1)[1].split("</script>", 1)[0])
    assert len(data["history"]["points"]) == 6 and data["top"][0]["archid"] == report["best"]["archid"]
    assert '<svg id="graph"' in page and report["files"]["report_html"].endswith("report.html")
    view = _view(out / "study.journal")
    assert view.counted == 6 and all(r.scored_by == "trained" for r in view.records)
    assert all(isinstance(r.attrs.get("curve"), list) for r in view.records if r.state == "COMPLETE")


def test_trials_and_best_read_the_study(first_run):
    cwd, report, _ = first_run
    journal = str(cwd / "run" / "study.journal")
    rows = json.loads(einnas("trials", "--storage", journal, "-f", "json", cwd=cwd).stdout)
    assert [r["number"] for r in rows] == list(range(6))
    table = einnas("trials", "--storage", journal, "--sort", "value", "--limit", "3", cwd=cwd).stdout
    assert table.splitlines()[0].split()[:3] == ["number", "status", "value"] and len(table.splitlines()) == 4
    best = einnas("best", "--storage", journal, "--arch-only", cwd=cwd).stdout.strip()
    assert best == report["best"]["arch"]
    top = einnas("best", "--storage", journal, "-n", "2", cwd=cwd).stdout
    assert top.startswith("1. trial ") and "\n2. trial " in top


def test_same_command_same_architectures(first_run, tmp_path):
    cwd, report, _ = first_run
    einnas("search", "--dataset", "digits", "--trials", "6", "--seed", "0", "--no-final", "--out", "again",
           "-q", *FAST, cwd=tmp_path)
    first = [r.archid for r in _view(cwd / "run" / "study.journal").records]
    again = [r.archid for r in _view(tmp_path / "again" / "study.journal").records]
    assert first == again


def test_user_errors_exit_2(first_run):
    cwd, _, _ = first_run
    proc = einnas("search", "--dataset", "digits", "--eta", "1", cwd=cwd, check=False)
    assert proc.returncode == 2 and "--eta must be 2 or more" in proc.stderr
    # another seed on the same study: refused, nothing written
    proc = einnas("search", "--dataset", "digits", "--trials", "6", "--seed", "1", "--study-name", "digits-re-s0",
                  "--out", "run", *FAST, cwd=cwd, check=False)
    assert proc.returncode == 2 and "made for another search" in proc.stderr and "seed" in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line, no traceback
    proc = einnas("trials", "--storage", "nothing.journal", cwd=cwd, check=False)
    assert proc.returncode == 2 and "no such study file" in proc.stderr


def test_sigkill_then_rerun_keeps_and_completes(tmp_path):
    # batches of 4 make each trial take a second or more even on a fast machine: long enough to be caught in
    # the middle of one (with the FAST settings a trial takes well under 0.1 s)
    command = ["search", "--dataset", "digits", "--trials", "8", "--seed", "3", "--no-final", "-q", *FAST,
               "--epochs", "4", "--batch-size", "4"]
    journal = tmp_path / "runs" / "digits-re-s3" / "study.journal"
    proc = subprocess.Popen([sys.executable, "-m", "einnas.cli", *command], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    before = None
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if journal.exists():
            view = _view(journal)
            if view.counted >= 2 and any(r.state == "RUNNING" and r.arch for r in view.records):  # training
                before = view
                break
    if before is None:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no trial was caught training (exit status {proc.returncode}): {err.decode()[-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {r.number: r.archid for r in before.records if r.counted}
    einnas(*command, cwd=tmp_path)
    after = _view(journal)
    assert after.counted == 8
    for number, archid in done_before.items():  # completed trials are kept as they were
        assert after.records[number].counted and after.records[number].archid == archid
    counted = [r.archid for r in after.records if r.counted]
    assert len(counted) == len(set(counted)) == 8  # none evaluated twice
    lost = [r for r in after.records if r.lost]
    assert len(lost) == 1  # the killed trial
    if lost[0].arch:  # killed while training (almost always): its architecture was queued again
        retry = [r for r in after.records if r.retry_of == lost[0].number]
        assert lost[0].retried and len(retry) == 1 and retry[0].counted and retry[0].archid == lost[0].archid


def test_unwritable_out_is_refused_before_any_trial(tmp_path):
    (tmp_path / "afile").write_text("mine")
    for out, message in (("/proc/einnas-run", "cannot create the folder"), ("afile", "is a file")):
        proc = einnas("search", "--dataset", "digits", "--trials", "2", "--out", out, *FAST, cwd=tmp_path,
                      check=False, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no study, no run folder
    assert (tmp_path / "afile").read_text() == "mine"


def test_asking_a_finished_study_for_more_trials_extends_it(tmp_path, capsys):
    from einnas.cli import main

    base = ["search", "--dataset", "digits", "--seed", "0", "--no-final", "--out", str(tmp_path / "run"), "-q",
            "-f", "json", *FAST]
    assert main([*base, "--trials", "12"]) == 0  # population derived from 12 trials: 4
    first = json.loads(capsys.readouterr().out)
    assert first["trials"]["counted"] == 12 and first["settings"]["population"] == 4
    code = main([*base, "--trials", "15"])  # 15 alone would derive population 5
    captured = capsys.readouterr()
    assert code == 0, captured.err
    again = json.loads(captured.out)
    assert again["trials"]["counted"] == 15 and again["settings"]["population"] == 4
    assert _view(tmp_path / "run" / "study.journal").counted == 15
