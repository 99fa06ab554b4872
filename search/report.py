"""The end of a search: retrain the best in final mode, export it, write the report and plot.

Files written to the run folder (each atomically: never half-written):

* ``best.onnx`` — the best architecture with its final-mode trained weights;
* ``report.json`` and ``report.md`` — settings, counts, the top architectures, the
  final retrain (test accuracy);
* ``history.png`` — every trial's score by trial number and the best so far.

Any number of workers may finish the same study; the final retrain is seeded, so
they write the same files.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from einnas.search.loop import training_seed
from einnas.search.records import StudyView, TrialRecord

FINAL_CANDIDATES = 3  # when the best fails its final retrain, try the next ones


@dataclass
class FinalResult:
    """The best architecture retrained on train + valid and scored on test."""

    number: int
    archid: str
    ok: bool
    test_acc: float | None
    epochs: int
    seconds: float
    reason: str | None = None
    detail: str = ""
    onnx: str | None = None
    tried: list[int] = field(default_factory=list)
    shift: int = 0  # pixels of random translation in the retrain (TrainConfig.shift)


def retrain_best(
    view: StudyView, space, dataset, config, *, seed: int, device="auto", onnx_path: Path | None = None,
    metadata: dict | None = None,
) -> FinalResult | None:
    """Retrain the best completed trial in final mode (train + valid → test) and export it.

    If it fails (NaN, out of memory), the next best is tried, up to
    :data:`FINAL_CANDIDATES`. Returns None when the study has no completed trial.
    """
    tried: list[int] = []
    result = None
    for record in view.top(FINAL_CANDIDATES):
        tried.append(record.number)
        arch = space.parse(record.arch)
        trained, module = train_final(arch, dataset, config, seed=seed, device=device)
        epochs = trained.epochs_run if trained.ok else config.epochs  # fit_seconds may have cut them
        result = FinalResult(
            record.number, arch.archid, trained.ok, trained.test_acc, epochs, trained.seconds,
            trained.reason, trained.detail, tried=list(tried), shift=config.shift,
        )
        if not trained.ok:
            if config.fit_seconds is not None:  # the next candidate fits in what this one left
                config = replace(config, fit_seconds=config.fit_seconds - trained.seconds)
            continue
        if onnx_path is not None:
            export_final(module, arch, dataset, onnx_path, {
                "dataset": dataset.name, "val_acc": record.value, "test_acc": trained.test_acc,
                "trial": record.number, **(metadata or {})})
            result.onnx = str(onnx_path)
        return result
    return result


def train_final(arch, dataset, config, *, seed: int, device="auto"):
    """Train ``arch`` from scratch in final mode (train + valid, test accuracy) with the
    search's seed for it; returns the ``TrainResult`` and the trained module."""
    from einnas.evaluate import train
    from einnas.grammar import build_network

    holder: dict = {}

    def factory():
        holder["module"] = build_network(arch, dataset.input_shape, dataset.num_classes)
        return holder["module"]

    trained = train(factory, dataset, config, seed=training_seed(seed, arch.archid), device=device, final=True)
    return trained, holder.get("module")


def export_final(module, arch, dataset, onnx_path: Path, metadata: dict) -> None:
    """Export a module of :func:`train_final` to ONNX with its architecture in the metadata."""
    from einnas.grammar.export import export_onnx

    export_onnx(module.to("cpu"), dataset.input_shape, dataset.num_classes, onnx_path,
                metadata={"arch": arch.string, "archid": arch.archid, **metadata})


def plot_history(view: StudyView, path: Path, title: str = "") -> bool:
    """Write a PNG: each trial's score by number (failures at the bottom) and the best so far.

    Returns False (with a warning) when matplotlib, an optional extra, is not installed:
    a finished search still writes its study, ONNX file and report.
    """
    import importlib.util
    import io
    import warnings

    if importlib.util.find_spec("matplotlib") is None:
        warnings.warn("no history.png: the plot needs matplotlib (pip install 'einnas[plot]')", RuntimeWarning,
                      stacklevel=2)
        return False
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from einnas._util import write_atomic

    done = [r for r in view.records if r.counted]
    ok = [r for r in done if r.value is not None]
    pruned = [r for r in done if r.pruned]
    failed = [r for r in done if r.value is None and not r.pruned]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if ok:
        ax.scatter([r.number for r in ok], [r.value for r in ok], s=16, color="tab:blue", label="trial (validation accuracy)")
        best, xs, ys = -1.0, [], []
        for r in done:
            if r.value is not None and r.value > best:
                best = r.value
            if best >= 0:
                xs.append(r.number)
                ys.append(best)
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    if pruned:
        ax.scatter([r.number for r in pruned], [r.attrs.get("rung_value") or 0.0 for r in pruned], s=10,
                   color="tab:orange", alpha=0.6, label=f"stopped at a rung ({len(pruned)}), accuracy there")
    if failed:
        ax.scatter([r.number for r in failed], [0.0] * len(failed), marker="x", s=16, color="tab:gray",
                   label=f"failed ({len(failed)})")
    ax.set_xlabel("trial number")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title or "search history")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_atomic(path, buffer.getvalue())
    return True


def _row(r: TrialRecord, rank: int | None = None) -> dict:
    row = {"trial": r.number, "val_acc": r.value, "params": r.params, "archid": r.archid, "origin": r.origin,
           "parent": r.parent, "seconds": r.seconds, "arch": r.arch}
    if rank is not None:
        row = {"rank": rank, **row}
    return row


def build_report(
    view: StudyView, *, study_name: str, storage: str, settings: dict, final: FinalResult | None,
    files: dict, seconds: float | None = None, top: int = 10,
) -> dict:
    """The search report as plain data (what ``report.json`` holds)."""
    counts = {
        "counted": view.counted, "completed": len(view.completed), "pruned": view.pruned, "failed": view.failed,
        "lost": sum(r.lost for r in view.records), "surplus": sum(r.status == "surplus" for r in view.records),
        "running": view.running, "waiting": view.waiting, "total": len(view.records),
    }
    reasons: dict[str, int] = {}
    for r in view.records:
        if r.failed:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
    return {
        "study": study_name, "storage": storage, "settings": settings, "trials": counts,
        "failure_reasons": reasons,
        "best": _row(view.best) if view.best else None,
        "final": None if final is None else final.__dict__,
        "top": [_row(r, i) for i, r in enumerate(view.top(top), 1)],
        "files": files, "seconds": seconds, "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _pct(v) -> str:
    from einnas._util import format_accuracy

    return format_accuracy(v)


def report_markdown(report: dict) -> str:
    """``report.md``: the same content for people."""
    s, t, final = report["settings"], report["trials"], report["final"]
    predicted = s.get("evaluator") == "predicted"  # a prediction is never labelled a measurement
    label = "predicted accuracy" if predicted else "validation accuracy"
    lines = [
        f"# einnas search: {report['study']}", "",
        f"- dataset: {s.get('dataset')} (input {s.get('input_shape')}, {s.get('num_classes')} classes)",
        f"- strategy: {s.get('strategy')}" + (f", init {s.get('init')}, population {s.get('population')}, "
                                               f"tournament {s.get('tournament')}" if s.get("strategy") == "re" else ""),
        (f"- evaluator: predicted by the surrogate (nothing trained; accuracies are predictions); seed {s.get('seed')}"
         if predicted else
         f"- evaluator: {s.get('evaluator')}, {s.get('epochs')} epochs, batch {s.get('batch_size')}, "
         f"{s.get('seconds')} s per trial; seed {s.get('seed')}"),
        f"- grammar: {s.get('grammar_path')} (sha256 {str(s.get('grammar_sha256'))[:12]}…)",
        f"- storage: `{report['storage']}`",
        f"- trials: {t['counted']} evaluated ({t['completed']} trained to the full budget, "
        f"{t.get('pruned', 0)} stopped at a rung, {t['failed']} failed"
        + (f": {', '.join(f'{k} {v}' for k, v in sorted(report['failure_reasons'].items()))}" if report["failure_reasons"] else "")
        + f"), {t['lost']} lost and retried, {t['surplus']} surplus",
    ]
    if s.get("fidelity"):
        f = s["fidelity"]
        lines.append(f"- multi-fidelity: successive halving, rungs at epochs {f['rungs']}, keep 1/{f['eta']}")
    if report.get("seconds") is not None:
        lines.append(f"- wall clock: {report['seconds']:.1f} s")
    best = report["best"]
    if best:
        size = f", {best['params']:,} parameters" if best["params"] is not None else ""
        lines += ["", "## Best", "", f"- trial {best['trial']}, archid `{best['archid']}`{size}",
                  f"- {label}: {_pct(best['val_acc'])}"]
        if final:
            shifted = f", shifts of up to {final['shift']} px" if final.get("shift") else ""
            status = (f"test accuracy {_pct(final['test_acc'])} after {final['epochs']} epochs on train + valid"
                      f"{shifted} ({final['seconds']:.1f} s), trial {final['number']}" if final["ok"]
                      else f"failed: {final['reason']}: {final['detail']}")
            lines.append(f"- final retrain: {status}")
        lines += ["", "```", best["arch"], "```"]
    if report["top"]:
        lines += ["", "## Top architectures", "", f"| rank | trial | {'predicted' if predicted else 'val acc'} "
                  "| params | archid | origin |",
                  "| ---: | ---: | ---: | ---: | --- | --- |"]
        for row in report["top"]:
            lines.append(f"| {row['rank']} | {row['trial']} | {_pct(row['val_acc'])} | {row['params']} | "
                         f"`{row['archid']}` | {row['origin']} |")
    if report.get("pareto"):  # a multi-objective search (search/front.py)
        lines += ["", f"## Pareto front ({' vs '.join(s.get('objectives') or [])})", "",
                  "| trial | val acc | latency ms | params | MACs | test acc | archid | onnx |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for row in report["pareto"]:
            latency = f"{row['latency_ms']:.3f}" if isinstance(row.get("latency_ms"), (int, float)) else ""
            test = _pct(row["test_acc"]) if row.get("test_acc") is not None else ""
            lines.append(f"| {row['trial']} | {_pct(row['accuracy'])} | {latency} | {row['params']} | "
                         f"{row['macs'] if row.get('macs') is not None else ''} | {test} | `{row['archid']}` | "
                         f"{row['onnx'] or ''} |")
    if report["files"]:
        lines += ["", "## Files", ""] + [f"- {k}: `{v}`" for k, v in report["files"].items() if v]
    return "\n".join(lines) + "\n"


def write_report(report: dict, folder: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``folder``."""
    from einnas._util import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "report.json", folder / "report.md"
    write_atomic(json_path, (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(md_path, report_markdown(report).encode())
    return json_path, md_path
