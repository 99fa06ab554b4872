"""The Pareto front of a multi-objective search, retrained and exported.

At the end of a multi-objective search the run folder gets:

* ``pareto.csv`` — every member of the front (COMPLETE, within the constraints,
  non-dominated on the study's objectives; the same trials as Optuna's
  ``study.best_trials``), most accurate first: validation accuracy, latency (ms),
  parameters, MACs, the final retrain's test accuracy, its ONNX file, the string;
* ``pareto/<archid>.onnx`` — front members retrained with the final protocol (train +
  valid, ``--final-epochs``, as ``best.onnx``) and exported with their trained weights.

Retraining costs a final retrain per member, so at most ``limit`` members are retrained
(``--pareto-export``, default 8): when the front is larger, members spread evenly along
it by accuracy (both ends included); the others are listed with an empty ``onnx`` (or the file an
earlier finish of the same study wrote: the retrain is seeded, so it is the same). The
most accurate member is the one ``best.onnx`` holds: it is copied, not retrained again.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from einnas.search.pareto import pareto_front
from einnas.search.records import LATENCY_MS, MACS, StudyView, TrialRecord

COLUMNS = ("trial", "archid", "accuracy", "latency_ms", "params", "macs", "test_acc", "onnx", "arch")


def front_records(view: StudyView, objectives) -> list[TrialRecord]:
    """The Pareto front of the study's COMPLETE, feasible trials, most accurate first."""
    members = [r for r in view.completed if r.feasible and objectives.minimise(r) is not None]
    keep = pareto_front([objectives.minimise(r) for r in members])
    return sorted((members[i] for i in keep), key=lambda r: (-(r.value or 0.0), r.number))


def spread(front: list, limit: int) -> list:
    """``limit`` members spread evenly along ``front`` (its order), both ends included."""
    if limit <= 0:
        return []
    if len(front) <= limit:
        return list(front)
    if limit == 1:
        return [front[0]]
    picks = sorted({round(i * (len(front) - 1) / (limit - 1)) for i in range(limit)})
    return [front[i] for i in picks]


def row(record: TrialRecord) -> dict:
    return {"trial": record.number, "archid": record.archid, "accuracy": record.value,
            "latency_ms": record.attrs.get(LATENCY_MS), "params": record.params, "macs": record.attrs.get(MACS),
            "test_acc": None, "onnx": "", "arch": record.arch}


def retrain_one(record: TrialRecord, space, dataset, config, *, seed: int, device, onnx_path: Path,
                metadata: dict | None = None):
    """Retrain one trial's architecture in final mode and export it; returns the test
    accuracy (None when the retrain failed: nothing is written then)."""
    from einnas.search.report import export_final, train_final

    arch = space.parse(record.arch)
    trained, module = train_final(arch, dataset, config, seed=seed, device=device)
    if not trained.ok:
        return None
    export_final(module, arch, dataset, onnx_path, {
        "dataset": dataset.name, "val_acc": record.value, "test_acc": trained.test_acc, "trial": record.number,
        "latency_ms": record.attrs.get(LATENCY_MS), **(metadata or {})})
    return trained.test_acc


def export_front(view: StudyView, objectives, space, dataset, config, out: Path, *, seed: int, device="auto",
                 limit: int = 8, final=None, metadata: dict | None = None) -> list[dict]:
    """Write ``pareto.csv`` and ``pareto/<archid>.onnx`` (module docstring); returns the rows."""
    from einnas._util import write_atomic

    front = front_records(view, objectives)
    rows = [row(r) for r in front]
    chosen = {r.number for r in spread(front, limit)}
    folder = out / "pareto"
    for record, entry in zip(front, rows):
        path = folder / f"{record.archid}.onnx"
        if record.number not in chosen:
            if path.is_file():  # exported by an earlier finish: the same seeded retrain, the same weights
                entry["onnx"] = str(Path("pareto") / path.name)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        best = out / "best.onnx"
        if final is not None and final.ok and final.onnx and final.number == record.number and best.is_file():
            shutil.copyfile(best, path)  # best.onnx is this member, already retrained
            entry["test_acc"] = final.test_acc
        else:
            entry["test_acc"] = retrain_one(record, space, dataset, config, seed=seed, device=device,
                                            onnx_path=path, metadata=metadata)
            if entry["test_acc"] is None:
                continue
        entry["onnx"] = str(Path("pareto") / path.name)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "pareto.csv", buffer.getvalue().encode())
    return rows
