"""Checks the command line makes before any work: outputs that would destroy a file or
cannot be written, and inputs that are not what an option takes. Each raises
:class:`einnas.errors.UsageError` with one line naming the option and the path.

The output rule, the same for every command: a missing file is written; an existing
file of the same kind is replaced only with ``--force``; anything else (a folder, a
file of another kind, a place that cannot be written) is never touched.
"""

from __future__ import annotations

import json

from einnas.errors import UsageError


def check_output_file(path: str, flag: str, *, force: bool, kind: str, is_kind) -> None:
    """Refuse, before any work, an output path that cannot be written or would destroy a file.

    The rule for every command: a missing file is written; an existing file of the same
    ``kind`` (``is_kind(path)``) is replaced only with ``--force``; anything else (a folder,
    a file of another kind, a folder that cannot be written) is never touched.
    """
    import os
    from pathlib import Path

    if not path or not path.strip():
        raise UsageError(f"{flag} {path!r}: expected a file name")
    target = Path(path)
    if target.is_dir() or path.endswith(os.sep):
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: folder {str(folder)!r} does not exist")
    if target.exists():
        if not is_kind(target):
            raise UsageError(f"{flag} {path}: exists and is not {kind}; einnas does not replace it "
                             "(choose another name or remove it yourself)")
        if not force:
            raise UsageError(f"{flag} {path}: exists; give --force to replace it")
    check_writable_folder(folder, flag, path)


def check_output_folder(path: str, flag: str) -> None:
    """A folder einnas writes its own files into (a run folder): created if missing, and
    probed for writing before any work."""
    from pathlib import Path

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{flag} {path}: is a file, not a folder")
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{flag} {path}: cannot create the folder ({error.strerror or error})") from None
    try:
        check_writable_folder(folder, flag, path)
    finally:  # a probe leaves nothing behind: the run creates its folder when it writes into it
        for p in created:
            try:
                p.rmdir()
            except OSError:
                break


def check_writable_folder(folder, flag: str, path: str) -> None:
    """Probe that ``folder`` takes new files (permissions, read-only or pseudo file systems)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(f"{flag} {path}: cannot write in {str(folder)!r} ({error.strerror or error})") from None


def is_onnx_file(path) -> bool:
    """An ONNX model: a ModelProto with an IR version and a graph (read without external data)."""
    try:
        import onnx

        if path.stat().st_size > 2**31:
            return False
        model = onnx.load(str(path), load_external_data=False)
        return model.ir_version > 0 and model.HasField("graph")
    except Exception:  # noqa: BLE001 - anything that does not parse is not an ONNX file
        return False


def is_records_file(path) -> bool:
    """A JSON Lines records file: empty, or its first line a JSON object."""
    try:
        with open(path, "rb") as file:
            first = file.readline(1 << 20)
        return not first.strip() or isinstance(json.loads(first), dict)
    except (OSError, ValueError):
        return False


def check_predictor_out(out: str, force: bool) -> None:
    from pathlib import Path

    folder = Path(out)
    if not out.strip():
        raise UsageError(f"-o {out!r}: expected a folder name")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"-o {out}: is a file; a predictor is a folder (give a new folder name)")
    if folder.is_dir() and any(folder.iterdir()):
        if not (folder / "meta.json").is_file():
            raise UsageError(f"-o {out}: folder is not empty and holds no predictor; einnas does not write into it")
        if not force:
            raise UsageError(f"-o {out}: holds a predictor; give --force to replace it")
    parent = folder.parent if str(folder.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    check_writable_folder(parent, "-o", out)


def check_records_inputs(paths, flag: str) -> None:
    """One line, before any work, for a --records input that is not records: a missing
    path, an ONNX or other binary file where a JSON Lines file belongs."""
    from pathlib import Path

    for text in paths:
        if "://" in text:
            continue  # a database URL: the records reader opens it, with its own messages
        path = Path(text)
        if path.is_dir():
            continue  # a run folder or an ONNX folder: read by the records reader, with its own messages
        if not path.is_file():
            raise UsageError(f"{flag} {path}: no such file or folder")
        try:
            with open(path, "rb") as file:
                first = file.readline(1 << 20)
            text = first.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            text = None
        # a text file is left to the records reader, which counts and locates malformed lines
        if text is None or path.suffix.lower() == ".onnx":
            hint = " (for ONNX files give their folder)" if path.suffix.lower() == ".onnx" else ""
            raise UsageError(f"{flag} {path}: not a JSON Lines records file; expected the output of "
                             f"'einnas bench build' (a study journal or JSON Lines) or a folder of ONNX files{hint}")


def fitted_records(predictor, source: str) -> list[str]:
    """The records a predictor was fitted on, found again from its meta.json (for ``surrogate eval DIR``)."""
    from pathlib import Path

    from einnas.surrogate.score import PRETRAINED

    folder = PRETRAINED if source in (None, "default") else Path(source)
    found = [folder / rel for rel in predictor.meta.get("records_paths") or []]
    found = [str(p) for p in found if p.exists()]
    if not found:  # older predictors name the files only: look beside the predictor and here
        names = [f.get("file") for f in (predictor.meta.get("provenance") or {}).get("record_files", [])]
        places = [Path("."), folder.parent, Path(__file__).parent / "benchmarks" / "data"]
        found = [next((str(place / name) for place in places if (place / name).is_file()), None) for name in names]
        found = [] if None in found else found  # all of them, or say what is missing
    if not found:
        raise UsageError(f"{source}: the records it was fitted on are not found; give --records FILE ... "
                         "(the JSON Lines files or ONNX folders of 'surrogate fit')")
    return found
