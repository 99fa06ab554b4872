"""Training records for the predictor, read from wherever they live: studies, JSON Lines, ONNX folders.

A *record* is one trained architecture as a plain ``dict`` (JSON Lines v1 layout,
what ``einnas surrogate fit`` and the predictor read):

=================================  ===============================================================
``arch``, ``archid``               canonical architecture string and its id
``dataset``, ``input_shape``,      the task: dataset name, input shape without the batch axis,
``num_classes``, ``train_size``    classes, training-set size (``None`` in files older than studies)
``budget``                         ``epochs``, ``seconds``, ``batch_size``, ``lr``, ``max_params``,
                                   ``max_activations``
``ok``, ``val_acc``, ``test_acc``  the outcome (accuracies ``None`` when it failed)
``reason``, ``detail``             why it failed (``timeout``, ``nan_loss``, ...)
``params``, ``seconds``            parameter count, wall clock of the training
``index``, ``bench_seed``,         the trial number (or slot), the study (or build) seed, the training
``seed``, ``origin``, ``parent``   seed, ``sample``/``mutation``/..., the parent's archid
``grammar``, ``grammar_name``,     grammar sha256 and name (``einspace``, ``einspace_extra``, ...; studies
``device``, ``run``                only: see :func:`grammar_name`), device, provenance (command, date,
                                   versions, machine)
``study``                          the study it came from (records read from a study only)
=================================  ===============================================================

:func:`load_records` accepts, several at once:

* an Optuna **journal file** or a **database URL** (``sqlite:///FILE``,
  ``postgresql+psycopg://...``): every trial of an einnas study that was *trained*
  and evaluated (COMPLETE, or failed with a reason) is a record — ``einnas bench
  build`` studies and every ``einnas search`` study alike; predicted trials
  (``scored_by=predicted``), surplus, lost, running and waiting trials are not.
  With ``study_names`` only those studies are read, else all of the storage's
  studies, each of which must be an einnas study;
* a run folder holding ``study.journal`` (what ``einnas search`` writes);
* a **JSON Lines** file (``einnas bench export``, and the v1 files the old
  ``bench build`` wrote). A malformed line is an error naming how many and where,
  unless ``skip_bad_lines`` (then they are skipped and counted in a ``log`` line).
  An unfinished last line (no newline: a writer is appending) is left out with a
  ``log`` line;
* a folder of **ONNX files** with the accuracy in ``metadata_props`` (ONNX-Bench
  style, :mod:`einnas.surrogate.onnxbench`).

Example::

    records = load_records(["runs/digits-re-s0", "bench.journal", "sqlite:///bench.db", "old.jsonl"])
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Iterable, Sequence

from einnas.errors import StudyError, UsageError

#: Version of the record layout (JSON Lines ``v``).
RECORD_VERSION = 1
#: The budget fields of a record.
BUDGET_KEYS = ("epochs", "seconds", "batch_size", "lr", "max_params", "max_activations")
#: Study user attribute with the provenance of a ``bench build`` (command, date, versions, machine).
RUN_ATTR = "einnas_run"
MAX_LINE_BYTES = 1 << 20  # a record is a few kB; a longer line is not one
MAX_FILE_BYTES = 4 << 30
SHOWN_LINES = 5  # line numbers named in a malformed-file message

Log = Callable[[str], None] | None


def load_records(sources: Sequence[str], label_key: str | None = None, log: Log = None, *,
                 study_names: Sequence[str] | None = None, skip_bad_lines: bool = False) -> list[dict]:
    """All records of ``sources`` (see the module docstring), in order.

    Raises :class:`UsageError` (missing path, malformed lines, a folder that is neither
    a run folder nor an ONNX folder, no records at all), :class:`StudyError` (a storage
    that cannot be read, a study that is not an einnas study) or
    :class:`~einnas.errors.ModelError` (an unreadable ONNX file).
    """
    out: list[dict] = []
    for source in sources:
        records = read_source(str(source), label_key=label_key, log=log, study_names=study_names,
                              skip_bad_lines=skip_bad_lines)
        if log is not None:
            log(f"{source}: {len(records)} records")
        out.extend(records)
    if not out:
        raise UsageError(f"no records in {', '.join(map(str, sources)) or '(no sources given)'}")
    return out


def read_source(source: str, label_key: str | None = None, log: Log = None, *,
                study_names: Sequence[str] | None = None, skip_bad_lines: bool = False) -> list[dict]:
    """The records of one source: a storage URL, a journal, a run folder, a JSON Lines file or an ONNX folder."""
    from einnas.search.storage import is_url

    if is_url(source):
        if source.startswith("sqlite:///") and not source.endswith(":memory:"):
            path = Path(source[len("sqlite:///"):])
            if not path.is_file():
                raise UsageError(f"records {source!r}: no such database file {str(path)!r}")
        return read_storage(source, study_names)
    path = Path(source)
    if path.is_dir():
        if (path / "study.journal").is_file():
            return read_storage(str(path / "study.journal"), study_names)
        if next(path.rglob("*.onnx"), None) is not None:
            from einnas.surrogate.onnxbench import read_folder

            return read_folder(path, key=label_key, log=log)
        raise UsageError(f"records {source!r}: a folder with neither study.journal nor .onnx files "
                         "(expected a study, a JSON Lines file or a folder of ONNX files)")
    if not path.is_file():
        raise UsageError(f"records {source!r}: no such file or folder")
    if is_journal(path):
        return read_storage(source, study_names)
    return read_jsonl(path, skip_bad_lines=skip_bad_lines, log=log)


def is_journal(path: Path) -> bool:
    """Whether ``path`` starts like an Optuna journal file (its first line is a journal entry)."""
    try:
        with open(path, "rb") as file:
            first = file.readline(MAX_LINE_BYTES)
    except OSError as error:
        raise UsageError(f"records {str(path)!r}: cannot read ({error.strerror or error})") from None
    try:
        entry = json.loads(first)
    except ValueError:
        return False
    return isinstance(entry, dict) and "op_code" in entry


# --- JSON Lines -----------------------------------------------------------------------------


def _is_record(row) -> bool:
    if not isinstance(row, dict) or not isinstance(row.get("arch"), str) or not isinstance(row.get("archid"), str):
        return False
    for key in ("val_acc", "test_acc"):
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            return False
    return isinstance(row.get("ok", True), bool)


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:SHOWN_LINES]))
    return f"line{'s' if len(numbers) > 1 else ''} {shown}" + (", ..." if len(numbers) > SHOWN_LINES else "")


def read_jsonl(path: str | Path, skip_bad_lines: bool = False, log: Log = None) -> list[dict]:
    """The records of a JSON Lines file, one JSON object with ``arch`` and ``archid`` per line.

    A line that is not such a record is *malformed*: with ``skip_bad_lines`` it is
    skipped and counted in a ``log`` line, else :class:`UsageError` says how many and
    which. Blank lines are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"records {str(path)!r}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UsageError(f"records {str(path)!r}: {path.stat().st_size:,} bytes, over the {MAX_FILE_BYTES:,} limit")
    rows, bad, torn = [], [], None
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            line = raw.strip()
            if not line:
                continue
            row = None
            if len(raw) <= MAX_LINE_BYTES:
                try:
                    row = json.loads(line)
                except ValueError:  # JSONDecodeError and UnicodeDecodeError
                    pass
            if _is_record(row):
                rows.append(row)
            elif not raw.endswith(b"\n"):
                torn = number  # the last line, still being appended (or cut by a kill)
            else:
                bad.append(number)
    where = str(path)
    if bad and not skip_bad_lines:
        raise UsageError(f"records {where!r}: {len(bad)} malformed line{'s' if len(bad) > 1 else ''} "
                         f"({_lines(bad)}; each line must be a JSON record with arch and archid); "
                         "fix them or pass --skip-bad-lines")
    if log is not None:
        if bad:
            log(f"{where}: skipped {len(bad)} malformed line{'s' if len(bad) > 1 else ''} ({_lines(bad)})")
        if torn is not None:
            log(f"{where}: left out the unfinished last line {torn} (no newline: being written?)")
    return rows


# --- studies --------------------------------------------------------------------------------


def read_storage(spec: str, study_names: Sequence[str] | None = None) -> list[dict]:
    """Records of the einnas studies in a storage (journal path or database URL)."""
    import optuna

    from einnas.search.records import CONFIG_ATTR
    from einnas.search.storage import describe_storage, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shown = describe_storage(spec)
    storage = open_storage(spec, create=False)
    try:
        summaries = storage.get_all_studies()
    except Exception as error:  # noqa: BLE001 - a database that is not an Optuna one: say so in one line
        raise StudyError(f"{shown}: cannot read its studies ({str(error).strip().splitlines()[0][:200]})") from None
    names = [s.study_name for s in summaries]
    listed = ", ".join(names) or "none"
    if study_names:
        chosen = [n for n in names if n in set(study_names)]
        if not chosen:
            wanted = ", ".join(map(repr, study_names))
            raise StudyError(f"{shown}: no study named {wanted} (studies: {listed})")
    else:
        chosen = names
        if not chosen:
            raise StudyError(f"{shown}: holds no study")
    out = []
    for summary in summaries:
        if summary.study_name not in chosen:
            continue
        settings = summary.user_attrs.get(CONFIG_ATTR)
        if not isinstance(settings, dict):
            raise StudyError(f"study {summary.study_name!r} in {shown}: not an einnas study (no {CONFIG_ATTR!r} "
                             "settings attribute)" + ("" if study_names else "; give --study-name to pick studies"))
        study_id = storage.get_study_id_from_name(summary.study_name)
        trials = storage.get_all_trials(study_id, deepcopy=False)
        out.extend(study_records(summary.study_name, settings, trials, summary.user_attrs.get(RUN_ATTR)))
    return out


def budget_of(settings: dict) -> dict:
    """The training budget of a study, from its ``einnas`` settings."""
    if isinstance(settings.get("budget"), dict):
        return {k: settings["budget"].get(k) for k in BUDGET_KEYS}
    limits = settings.get("limits") or {}
    return {
        "epochs": settings.get("epochs"), "seconds": settings.get("seconds"),
        "batch_size": settings.get("batch_size"), "lr": settings.get("lr"),
        "max_params": settings.get("max_params", limits.get("max_params")),
        "max_activations": limits.get("max_activations"),
    }


def study_records(study_name: str, settings: dict, trials: Iterable, run: dict | None = None) -> list[dict]:
    """The records of one einnas study's trials (Optuna ``FrozenTrial`` objects).

    Only trained, evaluated trials are records: COMPLETE ones (``ok``) and those that
    failed with a reason; predicted, surplus, lost, running and waiting trials are not.
    """
    from einnas.search.loop import training_seed
    from einnas.search.records import records_from_trials

    task = settings.get("task") if isinstance(settings.get("task"), dict) else {}
    grammar_name = settings.get("grammar_name") or _stem(settings.get("grammar_path"))
    budget = budget_of(settings)
    seed = settings.get("seed")
    trials = records_from_trials(trials)
    archid_of = {t.number: t.archid for t in trials}
    out = []
    for t in trials:
        if not t.counted or t.scored_by != "trained" or not t.arch or not t.archid:
            continue
        ok = t.state == "COMPLETE"
        attrs = t.attrs
        train_seed = attrs.get("train_seed")
        if train_seed is None and isinstance(seed, int):
            train_seed = training_seed(seed, t.archid)  # the loop's rule, for studies that do not store it
        out.append({
            "v": RECORD_VERSION, "arch": t.arch, "archid": t.archid,
            "dataset": settings.get("dataset"), "input_shape": settings.get("input_shape"),
            "num_classes": settings.get("num_classes"), "train_size": task.get("train_size"),
            "budget": dict(budget), "ok": ok, "val_acc": t.value if ok else None,
            "test_acc": attrs.get("test_acc") if ok else None, "params": t.params, "seconds": t.seconds,
            "reason": None if ok else t.reason, "detail": (t.detail or None) if not ok else None,
            "index": t.number, "bench_seed": seed, "seed": train_seed, "origin": t.origin,
            "parent": archid_of.get(t.parent) if isinstance(t.parent, int) else t.parent,
            "grammar": settings.get("grammar_sha256"), "grammar_name": grammar_name, "device": attrs.get("device"),
            "run": attrs.get("run") or run or {"einnas": settings.get("version"), "date": settings.get("created")},
            "study": study_name,
        })
    return out


def _stem(path) -> str | None:
    """``grammar/spaces/cnn.lark`` -> ``cnn``; ``einspace.lark (built-in)`` -> ``einspace``."""
    if not isinstance(path, str) or not path.strip():
        return None
    return Path(path.split(" (")[0]).stem or None


def grammar_name(record: dict) -> str:
    """The grammar (architecture family) a record was sampled from: its ``grammar_name``, else
    the ``--grammar`` of the command that made it (v1 files), else ``einspace`` (the default)."""
    name = record.get("grammar_name")
    if isinstance(name, str) and name:
        return name
    words = str((record.get("run") or {}).get("command") or "").split()
    for i, word in enumerate(words):
        if word == "--grammar" and i + 1 < len(words):
            return _stem(words[i + 1]) or "einspace"
        if word.startswith("--grammar="):
            return _stem(word.split("=", 1)[1]) or "einspace"
    return "einspace"
