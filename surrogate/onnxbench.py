"""Read ONNX-Bench-style data: a folder of ONNX files whose accuracy is in ``metadata_props``.

ONNX-Bench (Qin et al., 2025) stores each trained network as an ONNX file with
its CIFAR-10 accuracy, in percent, as the value of the first ``metadata_props``
entry, in folders per search space (``<space>_simplify/...``). :func:`read_folder`
turns such a folder into records that ``einnas surrogate fit`` accepts beside
the JSON Lines records of ``einnas bench build``:

* the accuracy is the entry named ``key`` if given, else the first of
  ``accuracy``, ``val_acc``, ``acc``, ``test_acc`` present, else the first entry;
* ``scale="auto"`` reads the whole folder as percent when any value exceeds 1.5
  (ONNX-Bench), else as a fraction;
* the group (``dataset`` field) of a file is ``PREFIX/<first sub-folder>``, so
  rankings are only compared within one search space (their labels come from
  different training protocols);
* every file is opened with the safe loader; an unreadable file or a missing or
  non-numeric label raises :class:`ModelError` naming the file, unless
  ``skip_bad=True`` (then it is skipped and counted in a ``log`` line).

Example::

    records = read_folder("onnx-bench/", prefix="onnxbench")
    # [{'onnx': '.../nb201/123.onnx', 'archid': 'onnx-3fa2...', 'dataset': 'onnxbench/nb201', 'val_acc': 0.9113, ...}]
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from einnas.errors import ModelError, UsageError

LABEL_KEYS = ("accuracy", "val_acc", "acc", "test_acc")


def _label(model, key: str | None, where: str) -> float:
    props = [(p.key, p.value) for p in model.metadata_props]
    if not props:
        raise ModelError(f"{where}: no metadata_props entry holds an accuracy")
    table = dict(props)
    if key is not None:
        if key not in table:
            raise ModelError(f"{where}: no metadata_props entry named {key!r} (has {', '.join(table)[:120]})")
        name, value = key, table[key]
    else:
        name = next((k for k in LABEL_KEYS if k in table), props[0][0])
        value = table[name]
    try:
        number = float(value)
    except ValueError:
        raise ModelError(f"{where}: metadata_props {name!r} = {value[:40]!r} is not a number") from None
    if number != number or number < 0:
        raise ModelError(f"{where}: metadata_props {name!r} = {value[:40]!r} is not an accuracy")
    return number


def read_folder(folder: str | Path, key: str | None = None, prefix: str | None = None, scale: str = "auto",
                skip_bad: bool = False, limit: int | None = None, log=None) -> list[dict]:
    """Records (``onnx``, ``archid``, ``dataset``, ``val_acc``, ``ok``...) for every ``*.onnx`` below ``folder``."""
    from einnas.surrogate.onnx_io import read_model

    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"ONNX folder {str(root)!r} does not exist")
    if scale not in ("auto", "percent", "fraction"):
        raise UsageError(f"scale {scale!r}: expected auto, percent or fraction")
    prefix = prefix or root.name
    files = sorted(p for p in root.rglob("*.onnx") if p.is_file())
    if limit is not None:
        files = files[:limit]
    if not files:
        raise UsageError(f"ONNX folder {str(root)!r} holds no .onnx files")
    records, skipped = [], 0
    for path in files:
        where = str(path)
        try:
            data = path.read_bytes()
            model = read_model(data)
            accuracy = _label(model, key, where)
        except (ModelError, OSError) as error:
            if not skip_bad:
                raise ModelError(str(error) if where in str(error) else f"{where}: {error}") from None
            skipped += 1
            continue
        relative = path.relative_to(root)
        group = f"{prefix}/{relative.parts[0]}" if len(relative.parts) > 1 else prefix
        records.append({
            "onnx": str(path), "archid": "onnx-" + hashlib.blake2b(data, digest_size=6).hexdigest(),
            "dataset": group, "val_acc": accuracy, "ok": True, "source": "onnx-folder",
        })
    percent = scale == "percent" or (scale == "auto" and any(r["val_acc"] > 1.5 for r in records))
    for r in records:
        if percent:
            r["val_acc"] = r["val_acc"] / 100.0
        if r["val_acc"] > 1.0:
            raise ModelError(f"{r['onnx']}: accuracy {r['val_acc']} is above 1 after scaling ({scale})")
    if skipped and log is not None:
        log(f"{root}: skipped {skipped} unreadable or unlabelled file(s)")
    return records
