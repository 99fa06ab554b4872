"""The one place where einnas reaches past Optuna's public API.

Everything else in einnas uses public Optuna names only (``study.tell``,
``study.add_trial``, ``trial.set_user_attr``, ``optuna.storages.fail_stale_trials``,
the storage classes). What Optuna offers no public way to do is done here, one
function each, with the reason beside it and a test in ``tests/test_optuna_adapter.py``,
so an Optuna upgrade that moves these internals breaks this file and its tests only.
Checked against Optuna 5.0.
"""

from __future__ import annotations


def record_heartbeat(trial) -> bool:
    """Record Optuna's own storage heartbeat for a running ``trial`` (an ``optuna.trial.Trial``
    from ``study.ask()``); False when its storage keeps no heartbeat (journal files).

    Why private: Optuna records heartbeats only inside ``Study.optimize`` (a private
    thread helper), and ``BaseHeartbeat.record_heartbeat`` takes the storage's internal
    trial id, which no public attribute exposes (``trial.number`` is per study). The
    search loop runs its own ask/tell loop, so it beats here; without it a database's
    ``fail_stale_trials`` would fail every running trial after the grace period.
    """
    storage = trial.storage  # set by Trial.__init__; not in the documented API
    if getattr(storage, "get_heartbeat_interval", lambda: None)() is None:
        return False
    storage.record_heartbeat(trial._trial_id)
    return True
