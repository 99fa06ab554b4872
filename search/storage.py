"""Where a study lives, how workers join it safely, and how a dead worker's trial is retried.

Storage (``--storage``):

* a file path: an Optuna journal file (``JournalStorage`` + ``JournalFileBackend``),
  the embedded default, ``runs/<study>/study.journal``; many processes (and machines
  sharing the file over NFS) may append to it;
* ``sqlite:///file.db`` or a database URL (``postgresql://user@host/db``): an Optuna
  ``RDBStorage``. ``postgresql://`` uses psycopg 3 when psycopg2 is not installed.

Concurrent first use is safe: the journal serialises study creation itself; for a
database the schema and the study are created with retries, because several
workers creating them at once race (measured: 3 of 4 PostgreSQL workers fail
``CREATE TYPE`` without it).

Liveness: while a trial runs, its worker writes a ``heartbeat`` user attribute
every :data:`HEARTBEAT_INTERVAL` seconds (databases also get Optuna's own
heartbeat, ``heartbeat_interval``/``grace_period``; Optuna 5's JournalStorage has
none). A RUNNING trial is *lost* when its worker process is gone (same machine:
checked directly) or its heartbeat has not changed for :data:`GRACE_PERIOD`
seconds as seen by the observing worker (no clock comparison between machines).
A lost trial is failed — by exactly one worker, the storage decides who — and its
architecture is queued again as a WAITING trial, as Optuna's
``RetryHeartbeatStaleTrialCallback`` does (same ``failed_trial``/``retry_history``
system attributes).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import threading
import time
import warnings
from pathlib import Path

from einnas.errors import StudyError
from einnas.search.records import (
    ARCH, ARCHID, CONFIG_ATTR, DETAIL, FAILED_TRIAL, HEARTBEAT, IS_SEED, ORIGIN, PARAMS, PARENT, REASON, RETRY_HISTORY,
    WORKER,
)

HEARTBEAT_INTERVAL = 10  # seconds between two heartbeats of a running trial
GRACE_PERIOD = 60  # a heartbeat unchanged this long means the worker is gone
LOCK_GRACE_PERIOD = 10  # a journal lock held this long belongs to a killed worker (a write takes ms)
MAX_RETRY = 3  # an architecture whose worker dies this often is given up
RUNS_DIR = Path("runs")  # default run folders: runs/<study name>/study.journal
#: Settings recorded in the study but not required to match between workers.
INFO_KEYS = ("grammar_path", "plugins", "version", "created", "dataset_source")
#: The value of a setting in a study made before that setting was recorded.
SETTING_DEFAULTS = {"objectives": ["accuracy"], "max_latency": None, "latency": None}


def is_url(spec: str) -> bool:
    return "://" in spec


def describe_storage(spec: str) -> str:
    """The storage for messages, with any password hidden."""
    if not is_url(spec):
        return spec
    try:
        from sqlalchemy.engine import make_url

        return make_url(spec).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display; an unparsable URL fails later with a message
        return spec.split("@")[-1]


def _driver_url(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy; use psycopg 3 when only it is installed."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def open_storage(
    spec: str | os.PathLike, *, create: bool = True,
    heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD,
):
    """Open (and with ``create``, make) the storage named by ``spec``: a journal file path or
    a database URL. Raises :class:`StudyError` when it cannot be used."""
    spec = str(spec)
    if not spec.strip():
        raise StudyError("--storage is empty; give a journal file path or a database URL")
    if is_url(spec):
        _check_sqlite_file(spec, create)
        return _open_rdb(spec, heartbeat_interval, grace_period)
    import optuna

    path = Path(spec)
    if path.is_dir():
        raise StudyError(f"{spec}: is a folder; --storage takes a journal file path or a database URL")
    if path.exists() and not path.is_file():
        raise StudyError(f"{spec}: not a regular file; --storage takes a journal file path or a database URL")
    if not create and not path.is_file():
        raise StudyError(f"{spec}: no such study file")
    _check_journal(path)
    if create:
        _check_writable(path, spec)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # An absolute path: Optuna's symlink lock stores it, and with a relative one the lock
        # is a dangling link whose grace period never runs out (a worker killed while holding
        # it would block every other worker for good).
        file = os.path.abspath(path)
        lock = optuna.storages.journal.JournalFileSymlinkLock(file, grace_period=LOCK_GRACE_PERIOD)
        if create:
            repair_torn_journal(path, lock)
        backend = optuna.storages.journal.JournalFileBackend(file, lock_obj=lock)
        return optuna.storages.JournalStorage(backend)
    except OSError as error:
        raise StudyError(f"{spec}: cannot open journal file ({error.strerror or error})") from None
    except (ValueError, KeyError, TypeError, AssertionError) as error:  # JSON that is not an Optuna journal
        # (AssertionError: Optuna's replay meeting an unknown op_code.)
        raise StudyError(f"{spec}: not an Optuna journal file ({type(error).__name__}: {error})") from None


def _check_writable(path: Path, spec: str) -> None:
    """A search writes the journal and a lock file beside it: refuse early, in one line."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the first existing folder: mkdir will create the rest in it
    if path.exists() and not os.access(path, os.W_OK):
        raise StudyError(f"{spec}: journal file is write-protected; a search appends to it "
                         "(read it with 'einnas trials', or give another --storage)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StudyError(f"{spec}: folder {str(folder)!r} is write-protected; the journal and its lock "
                         "are written there (give another --out or --storage)")


def _torn_tail(path: Path) -> tuple[int, bytes] | None:
    """``(offset, bytes)`` of an unterminated last line, or None when the file ends a line."""
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return None
        file.seek(size - 1)
        if file.read(1) == b"\n":
            return None
        block, start = 1 << 16, size
        while start > 0:  # scan back for the end of the last complete line
            low = max(0, start - block)
            file.seek(low)
            chunk = file.read(start - low)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                start = low + cut + 1
                break
            start = low
        file.seek(start)
        return start, file.read()


def repair_torn_journal(path: Path, lock=None) -> str | None:
    """Mend a journal whose last line was cut by a crash mid-write, before anyone appends.

    Optuna appends the next entry onto an unterminated line, which makes that line (and so
    the whole file) unreadable from then on. A tail that is a complete entry missing only
    its newline gets the newline; any other tail is cut off, every complete entry before
    it kept, and the cut bytes saved next to the journal (``<journal>.torn-<time>``).
    Done under the journal's lock, so a worker mid-write is not mistaken for a crash.
    Returns a one-line note of what was done, or None.
    """
    if not path.is_file() or _torn_tail(path) is None:
        return None
    if lock is not None:
        lock.acquire()
    try:
        torn = _torn_tail(path)  # again under the lock: a writer may have finished meanwhile
        if torn is None:
            return None
        offset, tail = torn
        try:
            entry = json.loads(tail)
        except ValueError:
            entry = None
        if isinstance(entry, dict) and "op_code" in entry:
            with open(path, "ab") as file:
                file.write(b"\n")
                file.flush()
                os.fsync(file.fileno())
            note = f"{path}: the last journal entry lacked its line end (a crash mid-write); completed it"
        else:
            backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            backup.write_bytes(tail)
            with open(path, "r+b") as file:
                file.truncate(offset)
                file.flush()
                os.fsync(file.fileno())
            note = (f"{path}: removed a cut last line of {len(tail)} bytes (a crash mid-write), "
                    f"kept every complete entry; the cut bytes are in {backup.name}")
    finally:
        if lock is not None:
            lock.release()
    warnings.warn(note, RuntimeWarning, stacklevel=3)
    return note


def _check_journal(path: Path) -> None:
    """Refuse a file that is not an Optuna journal (Optuna would skip a bad last line)."""
    try:
        with open(path, "rb") as file:
            first = file.readline(1 << 20)
    except FileNotFoundError:
        return
    except OSError as error:
        raise StudyError(f"{path}: cannot read journal file ({error.strerror or error})") from None
    if not first:
        return
    try:
        entry = json.loads(first)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or "op_code" not in entry:
        raise StudyError(f"{path}: not an Optuna journal file (its first line is not a journal entry)")


def _sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///FILE`` URL (None for other URLs and in-memory databases)."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - an unparsable URL fails in _open_rdb with its message
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _check_sqlite_file(url: str, create: bool) -> None:
    """An ``sqlite:///FILE`` that a read must not create, or that is someone else's database:
    Optuna would create the file, or add its tables to a database it does not own."""
    import sqlite3

    path = _sqlite_path(url)
    if path is None:
        return
    shown = describe_storage(url)
    if not path.exists():
        if not create:
            raise StudyError(f"{shown}: no such database file")
        return
    if not path.is_file():
        raise StudyError(f"{shown}: {path} is not a regular file")
    if path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as error:
        raise StudyError(f"{shown}: not an SQLite database ({error})") from None
    if tables and "studies" not in tables:
        listed = ", ".join(sorted(tables)[:5]) + (" ..." if len(tables) > 5 else "")
        raise StudyError(f"{shown}: an SQLite database without Optuna's tables (it has {listed}); "
                         "einnas leaves it alone: give another --storage")


def _open_rdb(url: str, heartbeat_interval: int, grace_period: int):
    import optuna
    import sqlalchemy.exc

    shown = describe_storage(url)
    jitter = random.Random()  # back-off only; search randomness never comes from here
    last: Exception | None = None
    for attempt in range(12):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    _driver_url(url), heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                    heartbeat_stale_trial_callback=retry_lost_trial,
                )
        except (sqlalchemy.exc.ArgumentError, ImportError) as error:
            raise StudyError(f"--storage {shown}: {_first_line(error)}") from None
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
            # Several workers creating the schema at once race (duplicate type/table/version
            # row); the loser retries and finds the schema made.
            last = error
            time.sleep(0.1 * (attempt + 1) + 0.2 * jitter.random())
    raise StudyError(f"--storage {shown}: cannot open the database ({_first_line(last)})")


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _plain(data: dict) -> dict:
    return json.loads(json.dumps(data))


def open_study(storage, name: str, settings: dict, *, seed: int = 0, shown: str = "",
               directions: list[str] | None = None):
    """Create the study ``name`` or join it, checking it was made for the same search.

    ``settings`` (grammar sha256, dataset, input shape, strategy, seed, ...) is
    stored in the study's ``einnas`` user attribute by the first worker; a worker
    whose settings differ (other than :data:`INFO_KEYS`) gets a :class:`StudyError`.
    ``directions`` (a multi-objective search, ``objectives.py``): the Optuna directions;
    default one maximised objective.
    """
    import optuna
    import sqlalchemy.exc

    settings = _plain(settings)
    jitter = random.Random()
    for attempt in range(12):
        try:
            study = optuna.create_study(
                storage=storage, study_name=name, directions=list(directions or ["maximize"]), load_if_exists=True,
                sampler=optuna.samplers.RandomSampler(seed),
            )
            break
        except (optuna.exceptions.DuplicatedStudyError, sqlalchemy.exc.SQLAlchemyError,
                optuna.exceptions.StorageInternalError) as error:
            last = error  # two workers creating the same study at once: the loser loads it
            time.sleep(0.1 * (attempt + 1) + 0.2 * jitter.random())
    else:
        raise StudyError(f"study {name!r} in {shown}: cannot be created ({_first_line(last)})")
    wanted = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
              for d in (directions or ["maximize"])]
    if study.directions != wanted and not directions:
        raise StudyError(f"study {name!r} in {shown}: not an einnas search study (its objective is not maximised)")
    if study.directions != wanted:
        raise StudyError(f"study {name!r} in {shown} was made for other objectives ({len(study.directions)} "
                         f"direction(s)); use the same --objectives or another --study-name")
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        if study.get_trials(deepcopy=False):
            raise StudyError(f"study {name!r} in {shown}: has trials but was not made by einnas search")
        study.set_user_attr(CONFIG_ATTR, settings)
        stored = study.user_attrs.get(CONFIG_ATTR)  # another worker may have written first
    check_settings(stored, settings, name, shown)
    return study


def check_settings(stored: dict, settings: dict, name: str, shown: str) -> None:
    """Raise :class:`StudyError` naming each setting that differs from the stored one."""
    keys = sorted((set(stored) | set(settings)) - set(INFO_KEYS))
    stored = {**SETTING_DEFAULTS, **stored}  # studies made before a setting existed had its default
    diffs = [k for k in keys if stored.get(k) != settings.get(k)]
    if diffs:
        parts = "; ".join(f"{k}: study {stored.get(k)!r}, this search {settings.get(k)!r}" for k in diffs)
        raise StudyError(
            f"study {name!r} in {shown} was made for another search ({parts}); "
            "use the same options or another --study-name"
        )


def stored_settings(spec: str, name: str) -> dict | None:
    """The settings stored in study ``name`` of storage ``spec``, or None when there is no
    such study yet (nothing is created). Lets a search adopt what it derived the first time
    (the RE population from the first ``--trials``) so that asking for more trials extends
    the study instead of being refused."""
    if not is_url(spec) and not Path(spec).is_file():
        return None
    if is_url(spec) and _sqlite_path(spec) is not None and not _sqlite_path(spec).exists():
        return None  # a new database file, made by the search itself
    storage = open_storage(spec, create=False)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return storage.get_study_user_attrs(study_id).get(CONFIG_ATTR)


def load_study(storage, name: str | None, shown: str):
    """Load an existing study; with no name, the storage's only study."""
    import optuna

    names = [s.study_name for s in storage.get_all_studies()]
    if name is None:
        if not names:
            raise StudyError(f"{shown}: holds no study")
        if len(names) != 1:
            raise StudyError(f"{shown}: give --study-name (studies: {', '.join(names)})")
        name = names[0]
    if name not in names:
        raise StudyError(f"{shown}: no study named {name!r} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=name, storage=storage)


def open_existing(storage: str | None, study_name: str | None, out: str | None = None):
    """The study a read command names: ``--storage``, else ``<out>/study.journal``, else
    ``runs/<study-name>/study.journal``. Returns ``(study, storage as shown)``."""
    if storage is None:
        if out:
            storage = str(Path(out) / "study.journal")
        elif study_name:
            storage = str(RUNS_DIR / study_name / "study.journal")
        else:
            raise StudyError("give --storage FILE_OR_URL or --study-name NAME")
    shown = describe_storage(storage)
    study = load_study(open_storage(storage, create=False), study_name, shown)
    if not isinstance(study.user_attrs.get(CONFIG_ATTR), dict):  # another tool's Optuna study
        raise StudyError(f"study {study.study_name!r} in {shown}: not an einnas study (no {CONFIG_ATTR!r} settings)")
    return study, shown


# --- worker liveness ------------------------------------------------------------------------


def _machine() -> str:
    """The host plus kernel boot and PID namespace, so that a PID means one process."""
    from einnas._util import machine_id

    return machine_id()


def worker_identity() -> dict:
    """Who runs a trial: written on the trial as the ``worker`` attribute."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "machine": _machine()}


def _process_gone(pid: int) -> bool:
    from einnas._util import process_gone

    return process_gone(pid)


class StaleMonitor:
    """Decides which RUNNING trials are lost; remembers when it last saw each heartbeat change.

    Timing uses only this process's clock: a heartbeat is stale when its value has
    not changed for ``grace_period`` seconds of observation.
    """

    def __init__(self, grace_period: float = GRACE_PERIOD):
        self.grace_period = grace_period
        self.machine = _machine()
        self._seen: dict[int, tuple[object, float]] = {}

    def is_lost(self, trial) -> bool:
        worker = trial.user_attrs.get(WORKER)
        if isinstance(worker, dict) and worker.get("machine") == self.machine and worker.get("pid") != os.getpid():
            if _process_gone(int(worker.get("pid", 0))):
                return True
        beat = trial.user_attrs.get(HEARTBEAT, str(trial.datetime_start))
        now = time.monotonic()
        seen = self._seen.get(trial.number)
        if seen is None or seen[0] != beat:
            self._seen[trial.number] = (beat, now)
            return False
        return now - seen[1] > self.grace_period


def fail_lost_trials(study, monitor: StaleMonitor) -> int:
    """Fail the study's lost RUNNING trials and queue their architectures again.

    Safe with many workers: only the worker whose FAIL the storage accepts queues the
    retry. Returns how many trials this call failed.
    """
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # Optuna's own heartbeat (databases; a no-op for journals)
    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if monitor.is_lost(trial) and release_trial(study, trial):
            failed += 1
    return failed


def release_trial(study, trial) -> bool:
    """Fail a RUNNING trial (anything with its ``number``) that will not finish and queue its
    architecture again.

    Returns False when the trial had already finished (another worker got there first):
    ``study.tell`` refuses a finished trial (ValueError), and the storage refuses the
    loser of two workers failing it at the same moment (``UpdateFinishedTrialError``).
    """
    import optuna

    try:
        frozen = study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        return False
    retry_lost_trial(study, frozen)
    return True


#: ``reason`` of an architecture given up after its worker died :data:`MAX_RETRY` + 1 times.
WORKER_DIED = "worker_died"


def retry_lost_trial(study, trial) -> None:
    """Queue a lost trial's architecture as a new WAITING trial (at most :data:`MAX_RETRY` times).

    Retries are counted by archid over the whole study, not along one chain of retries:
    an architecture that kills its worker (the OOM killer) may come back as a fresh
    proposal too (an ``--init`` seed is proposed until the study holds it). After the cap
    the architecture is recorded as a failed trial with reason :data:`WORKER_DIED`, so it
    holds its archid, counts as evaluated and the search moves on.
    Used as RDBStorage's ``heartbeat_stale_trial_callback`` too.
    """
    import optuna

    if ARCH not in trial.user_attrs:
        return  # lost before it had an architecture: nothing to retry
    archid = trial.user_attrs.get(ARCHID)
    lost = sorted({t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
                   if t.user_attrs.get(ARCHID) == archid and not t.user_attrs.get(REASON)} | {trial.number})
    history = list(trial.system_attrs.get(RETRY_HISTORY, ())) + [trial.number]
    attrs = {k: trial.user_attrs[k] for k in (ARCH, ARCHID, PARAMS, ORIGIN, PARENT, IS_SEED) if k in trial.user_attrs}
    if len(lost) > MAX_RETRY or len(history) > MAX_RETRY:
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            user_attrs={**attrs, REASON: WORKER_DIED,
                        DETAIL: f"its worker died {len(lost)} times while evaluating it (trials "
                                f"{', '.join(map(str, lost))}); given up after {MAX_RETRY} retries"},
            system_attrs={FAILED_TRIAL: lost[0], RETRY_HISTORY: lost},
        ))
        return
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, user_attrs=attrs,
        system_attrs={FAILED_TRIAL: history[0], RETRY_HISTORY: history},
    ))


class Heartbeat:
    """While entered, keeps a running ``trial`` (from ``study.ask()``) alive: a ``heartbeat``
    attribute (and Optuna's own heartbeat on databases) every ``interval`` seconds, from a
    daemon thread."""

    def __init__(self, trial, interval: float = HEARTBEAT_INTERVAL):
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        import optuna

        from einnas._optuna import record_heartbeat

        try:
            record_heartbeat(self.trial)
            self.trial.set_user_attr(HEARTBEAT, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # failed as lost by another worker; the tell will say so
        return True

    def __enter__(self) -> "Heartbeat":
        self.beat()
        self._thread = threading.Thread(target=self._run, name=f"einnas-heartbeat-{self.trial.number}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.beat():
                    return
            except Exception:  # noqa: BLE001 - a storage hiccup must not kill the training thread
                continue

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
