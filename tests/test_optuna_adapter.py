"""einnas._optuna: each use of a private Optuna name has a test here, so an Optuna upgrade that
moves one fails in this file. Also guards that no other module reaches into Optuna's privates."""

import re
import time
from pathlib import Path

import optuna
import pytest

from einnas import _optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
PACKAGE = Path(_optuna.__file__).parent


def _rdb(tmp_path, interval=1, grace=1):
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=interval,
                                      grace_period=grace)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_record_heartbeat_keeps_a_database_trial_alive(tmp_path):
    study = optuna.create_study(storage=_rdb(tmp_path), study_name="s")
    beating, silent = study.ask(), study.ask()
    assert _optuna.record_heartbeat(beating) is True
    assert _optuna.record_heartbeat(silent) is True
    time.sleep(2.2)  # past the 1 s grace period
    assert _optuna.record_heartbeat(beating) is True  # a fresh beat: this one is alive
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[beating.number] == optuna.trial.TrialState.RUNNING
    assert states[silent.number] == optuna.trial.TrialState.FAIL  # its last beat is stale


def test_record_heartbeat_is_a_no_op_without_storage_heartbeats(tmp_path):
    backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.journal"))
    study = optuna.create_study(storage=optuna.storages.JournalStorage(backend))
    trial = study.ask()
    assert _optuna.record_heartbeat(trial) is False
    assert study.get_trials()[0].state == optuna.trial.TrialState.RUNNING


def test_no_private_optuna_name_outside_the_adapter():
    """``study._storage``, ``trial._trial_id``, ``optuna.<module>._private``: only in _optuna.py."""
    pattern = re.compile(r"\._storage\b|\._trial_id\b|\._study_id\b|optuna(\.\w+)*\._\w+|from optuna[\w.]*\._")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_optuna.py" or ".venv" in path.parts or path.name == Path(__file__).name:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
