"""One command uses the machine: `einnas search` runs a worker per core, one display for all."""

import json
import re
import subprocess
import sys

from einnas.search.parallel import machine_cores

SMALL = ["--epochs", "1", "--seconds", "30", "--max-params", "30000", "--max-activations", "8000"]


def _search(*args, cwd):
    return subprocess.run([sys.executable, "-m", "einnas.cli", "search", "--dataset", "digits", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_default_workers_are_the_cores_with_one_display(tmp_path):
    proc = _search("--trials", "8", "--seed", "0", "--no-final", "--out", "run", *SMALL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["workers"] == machine_cores() and report["trials"]["counted"] == 8
    assert f"{machine_cores()} worker(s)" in proc.stdout and "worker process" not in proc.stderr
    # one display: each trial of the study is shown once, numbered 1..8, by this process
    shown = re.findall(r"^\[(\d+)/8\] trial (\d+) ", proc.stderr, flags=re.M)
    assert sorted(int(k) for k, _ in shown) == list(range(1, 9))
    assert len({n for _, n in shown}) == 8
    # every trial ran in a process of this command (the study records who ran it)
    from einnas.search import StudyView, open_existing

    study, _ = open_existing(str(tmp_path / "run" / "study.journal"), None)
    workers = {r.attrs["worker"]["pid"] for r in StudyView.of(study).records if r.counted}
    assert 1 <= len(workers) <= machine_cores()


def test_budget_too_small_for_any_candidate_is_one_line_exit_2(tmp_path):
    proc = _search("--trials", "3", "--seconds", "0.0001", "--out", "run", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--seconds 0.0001: too small for any candidate" in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before the study was made
