"""A fitted predictor as a folder: ``model.safetensors`` + ``meta.json``, never pickle.

``model.safetensors`` holds the tree arrays and the text head's weights;
``meta.json`` the feature names, configuration, training data (tasks, sizes,
budgets), selection, held-out metrics, the training ranges the
out-of-distribution note compares against, the reference distribution of the
rank score, and provenance (command, seed, date, versions, record hashes).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from einnas.errors import ModelError

FORMAT = "einnas-predictor"
FORMAT_VERSION = 3  # 3: compact trees (boosting.Trees.tensors) and fallback members
#: Largest files a predictor folder may hold (the shipped one: about 0.1 MB of meta, 2 MB of weights).
MAX_META_BYTES, MAX_WEIGHTS_BYTES = 64 * 2**20, 1 * 2**30


def save(tensors: dict, meta: dict, folder: str | Path) -> Path:
    """Write ``model.safetensors`` and ``meta.json`` into ``folder`` (created)."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(folder / "model.safetensors"))
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load(folder: str | Path) -> tuple[dict, dict]:
    """``(tensors, meta)`` of a predictor folder; :class:`ModelError` when it is missing or not one."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    folder = Path(folder)
    meta_path, weights = folder / "meta.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise ModelError(f"predictor {str(folder)!r}: expected meta.json and model.safetensors in it")
    for path, limit in ((meta_path, MAX_META_BYTES), (weights, MAX_WEIGHTS_BYTES)):
        if path.stat().st_size > limit:
            raise ModelError(f"predictor {str(folder)!r}: {path.name} is {path.stat().st_size:,} bytes, "
                             f"over the limit of {limit:,}")
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(weights))
    except (ValueError, OSError, SafetensorError) as error:
        raise ModelError(f"predictor {str(folder)!r}: unreadable ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"predictor {str(folder)!r}: not an {FORMAT} folder")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"predictor {str(folder)!r}: format v{meta.get('format_version')}, this einnas reads "
                         f"v{FORMAT_VERSION}; refit it with 'einnas surrogate fit'")
    return tensors, meta


def save_atomic(predictor, folder: str | Path) -> Path:
    """Save into a temporary folder beside ``folder``, then move the files in (never half-written)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        predictor.save(tmp)
        folder.mkdir(exist_ok=True)
        for name in ("model.safetensors", "meta.json"):  # weights first: meta.json marks a complete folder
            os.chmod(tmp / name, 0o644)  # safetensors writes 0600; a predictor is meant to be shared
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def provenance(seed: int, records: Sequence[str], argv: Sequence[str] | None = None) -> dict:
    """Command (``argv`` after ``einnas``; default: this process's), seed, date, versions and record files."""
    from importlib import metadata

    files = []
    for path in map(Path, records):
        if path.is_dir():  # an ONNX folder: hash the names and sizes of its files
            listing = "".join(f"{p.relative_to(path)}:{p.stat().st_size}\n" for p in sorted(path.rglob("*.onnx")))
            digest = hashlib.sha256(listing.encode()).hexdigest()[:16]
        elif path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        else:  # a study URL
            digest = None
        files.append({"file": path.name, "sha256_16": digest})
    try:
        version = metadata.version("einnas")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"command": " ".join(["einnas", *(sys.argv[1:] if argv is None else argv)]), "seed": seed,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "einnas": version, "record_files": files}
