"""``report.html``: one self-contained page to look at a study, finished or running.

The page needs no network: CSS, JavaScript and SVG are inline. It shows the
optimisation history (each evaluated trial's validation accuracy by trial number,
the best so far, failed and pruned trials marked), the Pareto front of a
multi-objective study (an interactive scatter of two objectives, chosen with a
selector when there are three; hovering a point shows its archid, values and
architecture), the top architectures with their strings and training curves, and a
drawing of the best architecture's ONNX graph.

Everything plotted is also embedded as JSON in ``<script type="application/json"
id="einnas-data">`` (see :func:`report_data`), so users and tests can read it back.
Everything that comes from the study (study name, architecture strings, reasons) is
untrusted: Python escapes it for HTML, the JSON block escapes ``<``, ``>`` and ``&``,
and the page's script writes it only as text (``textContent``), never as markup.

Multi-objective studies follow the search's contract: the study's ``einnas`` settings
hold ``objectives`` (names in value order: ``accuracy`` maximised, ``latency`` in ms,
``params``, ``macs`` minimised; the directions are the study's own), and trials carry
``latency_ms`` and ``macs`` beside ``params``. A study without ``objectives`` is a
single-objective accuracy search.

Example::

    from einnas.search.html_report import write_html
    write_html(study, "report.html")          # or: einnas report --storage S -o report.html
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path

from einnas.search.records import CONFIG_ATTR, CURVE, RUNG_VALUE, StudyView, records_from_trials

#: The marker that says einnas wrote an HTML file (``einnas report`` replaces only such files).
GENERATOR = "einnas report"
TOP_SINGLE = 10  # rows of the top table of a single-objective study
TOP_FRONT = 20  # rows of the top table of a multi-objective study: the front, best accuracy first
ARCH_CHARS = 4000  # an architecture string is cut here in the page (the study keeps it whole)
LATENCY, MACS, LATENCY_SETTINGS = "latency_ms", "macs", "latency_settings"
#: What the page calls each objective of the search's contract (other names are shown as given).
OBJECTIVE_LABELS = {"accuracy": "validation accuracy", "latency": "latency (ms)", "params": "parameters",
                    "macs": "MACs"}
_ASSETS = Path(__file__).parent / "report_page"


class _OneValue:
    """A FrozenTrial seen with one value (``value`` = objective ``index``), so that
    :func:`records_from_trials` reads multi-objective trials too."""

    def __init__(self, trial, index: int):
        self.number, self.state = trial.number, trial.state
        self.user_attrs, self.system_attrs = trial.user_attrs, trial.system_attrs
        self.value = trial.values[index] if trial.values and index < len(trial.values) else None
        # one value, so records_from_trials takes it as the record's value (for a multi-objective
        # trial it would read the ``accuracy`` attribute, which studies made elsewhere may lack)
        self.values = None if self.value is None else (self.value,)


def _feasible(trial) -> bool:
    """Within the study's constraints (Optuna's: every constraint value <= 0; none: feasible)."""
    try:
        values = list(trial.constraints.values())  # Optuna 5
    except AttributeError:
        values = list(trial.system_attrs.get("constraints") or ())  # Optuna 4
    return all(isinstance(v, (int, float)) and v <= 0 for v in values)


def _finite(value):
    """A JSON-safe number: NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _arch(text) -> str | None:
    if not isinstance(text, str):
        return None
    return text if len(text) <= ARCH_CHARS else text[:ARCH_CHARS] + " …"


def objectives_of(study) -> list[dict]:
    """``[{name, label, direction}]`` in value order: the settings' ``objectives`` with the
    study's directions; a single-objective study is ``accuracy``, maximised."""
    settings = study.user_attrs.get(CONFIG_ATTR) or {}
    directions = [d.name.lower() for d in study.directions]
    names = settings.get("objectives") if isinstance(settings, dict) else None
    if not isinstance(names, list) or len(names) != len(directions) or not all(isinstance(n, str) for n in names):
        names = ["accuracy"] if len(directions) == 1 else [f"objective {i}" for i in range(len(directions))]
    predicted = isinstance(settings, dict) and settings.get("evaluator") == "predicted"
    out = []
    for name, direction in zip(names, directions):
        label = OBJECTIVE_LABELS.get(name, name)
        if name == "accuracy" and predicted:
            label = "predicted accuracy"  # a prediction is never labelled a measurement
        out.append({"name": name, "label": label, "direction": direction})
    return out


def report_data(study, *, top: int | None = None) -> dict:
    """Everything the page plots, as plain JSON-ready data (what ``#einnas-data`` holds).

    ``history.points``: one per evaluated trial (``status`` ok / pruned / failed; a
    failed one has ``value`` None); ``front``: the archids of ``study.best_trials`` for a
    multi-objective study (None for one objective); ``points``: every completed trial
    with all its values; ``top``: the table's rows.
    """
    trials = study.get_trials(deepcopy=False)
    objectives = objectives_of(study)
    names = [o["name"] for o in objectives]
    main = names.index("accuracy") if "accuracy" in names else 0  # the history's objective
    view = StudyView(records_from_trials(_OneValue(t, main) for t in trials))
    frozen = {t.number: t for t in trials}
    maximise = objectives[main]["direction"] == "maximize"
    feasible = {t.number: _feasible(t) for t in trials}  # --max-latency / --max-params budgets

    history, best, best_line = [], None, []
    for r in view.records:
        if not r.counted:
            continue
        if r.state == "COMPLETE" and _finite(r.value) is not None:
            status, value = "ok", r.value
            if feasible[r.number] and (best is None or (value > best if maximise else value < best)):
                best = value  # the best so far is the best within the budget
        elif r.pruned:
            status, value = "pruned", _finite(r.attrs.get(RUNG_VALUE))
        else:
            status, value = "failed", None
        history.append({"trial": r.number, "value": value, "status": status, "archid": r.archid,
                        "reason": r.reason if status == "failed" else None, "feasible": feasible[r.number]})
        if best is not None:
            best_line.append([r.number, best])

    multi = len(objectives) > 1
    points = []
    for r in view.records:
        t = frozen[r.number]
        if r.state != "COMPLETE" or not t.values or any(_finite(v) is None for v in t.values):
            continue
        points.append(_row(r, t))
    front = None
    if multi:
        front_numbers = {t.number for t in study.best_trials}
        front = [p["archid"] for p in points if p["trial"] in front_numbers]
        for p in points:
            p["front"] = p["trial"] in front_numbers
        ranked = sorted((p for p in points if p["front"]),
                        key=lambda p: (-p["values"][main] if maximise else p["values"][main], p["trial"]))
        top_rows = ranked[: top or TOP_FRONT]
    else:
        within = StudyView([r for r in view.records if feasible[r.number]])
        top_rows = [_row(r, frozen[r.number]) for r in within.top(top or TOP_SINGLE)]
    counts = {
        "evaluated": view.counted, "completed": len(view.completed), "pruned": view.pruned, "failed": view.failed,
        "running": view.running, "waiting": view.waiting, "lost": sum(r.lost for r in view.records),
        "total": len(view.records), "infeasible": sum(r.counted and not feasible[r.number] for r in view.records),
    }
    settings = study.user_attrs.get(CONFIG_ATTR) or {}
    return {
        "study": study.study_name, "objectives": objectives, "main": main, "counts": counts,
        "settings": {k: settings.get(k) for k in ("dataset", "strategy", "evaluator", "epochs", "seed", "init",
                                                   "input_shape", "num_classes", "surrogate")
                     if isinstance(settings, dict) and settings.get(k) is not None},
        "history": {"objective": main, "points": history, "best": best_line},
        "points": points, "front": front, "top": top_rows,
        "columns": {"latency_ms": any(p.get("latency_ms") is not None for p in top_rows),
                    "macs": any(p.get("macs") is not None for p in top_rows)},
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _row(r, t) -> dict:
    """One completed trial: what the scatter's tooltip and the top table show."""
    a = t.user_attrs
    curve = a.get(CURVE)
    return {
        "trial": r.number, "archid": r.archid, "values": [_finite(v) for v in t.values or []],
        "params": _finite(r.params), "latency_ms": _finite(a.get(LATENCY)), "macs": _finite(a.get(MACS)),
        "origin": r.origin if isinstance(r.origin, str) else None, "arch": _arch(r.arch), "feasible": _feasible(t),
        "curve": [_finite(v) for v in curve] if isinstance(curve, list) else None,
    }


def _json_block(data: dict) -> str:
    """JSON that cannot end its ``<script>`` element nor open markup (``</script>``, ``<!--``)."""
    text = json.dumps(data, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_html(study, *, grammar=None, onnx_path=None, graph: bool = True, top: int | None = None) -> str:
    """The report page of ``study`` (an Optuna study made by einnas) as one HTML string.

    ``grammar`` parses the best architecture for its graph drawing (default: the study's
    built-in space, found by the grammar's SHA-256); ``onnx_path`` is an ONNX file of that
    architecture to draw instead of building one (used when its ``archid`` matches);
    ``graph=False`` leaves the drawing out (no torch import).
    """
    from einnas.search import _report_svg as svg

    data = report_data(study, top=top)
    best = data["top"][0] if data["top"] else None
    drawing = svg.graph_section(study, best, grammar=grammar, onnx_path=onnx_path) if graph else \
        '<p class="note">graph drawing left out</p>'
    esc = html.escape
    objectives = data["objectives"]
    c = data["counts"]
    running = c["running"] + c["waiting"]
    title = f"einnas: {data['study']}"
    settings = ", ".join(f"{k} {v}" for k, v in data["settings"].items())
    summary = (f"{c['evaluated']} trials evaluated ({c['completed']} completed, {c['pruned']} pruned, "
               f"{c['failed']} failed), {c['lost']} lost, {running} running or waiting"
               + (f"; {c['infeasible']} over the budget (grey)" if c["infeasible"] else ""))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="generator" content="{GENERATOR}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{(_ASSETS / 'report.css').read_text(encoding='utf-8')}</style>",
        # first: errors of the page's own script become visible (and testable) in the page
        "<script>window.einnasErrors=[];window.onerror=function(m,s,l,c){window.einnasErrors.push(String(m)+' ('+l+':'+c+')');"
        "var e=document.getElementById('einnas-errors');if(e){e.hidden=false;var li=document.createElement('li');"
        "li.textContent=String(m);e.appendChild(li);}};</script>",
        "</head><body><main>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{esc(settings)}</p>' if settings else "",
        f'<p class="meta">objectives: {esc(", ".join(o["label"] + " (" + o["direction"] + ")" for o in objectives))}'
        f"; {esc(summary)}; written {esc(data['written'])}</p>",
        f'<p class="note running">The study is still running: this page is a snapshot ({running} trials running '
        "or waiting); run <code>einnas report</code> again to refresh it.</p>" if running else "",
        '<ul id="einnas-errors" class="errors" hidden></ul>',
        '<section><h2>Optimisation history</h2><div id="history" class="plot"></div>'
        f'<p class="note">{esc(objectives[data["main"]]["label"])} of each evaluated trial by trial number; '
        "the line is the best so far. Pruned trials (stopped at a rung) are shown at their accuracy there, "
        "failed ones as crosses at the bottom.</p></section>",
    ]
    if data["front"] is not None:
        parts.append(
            '<section><h2>Pareto front</h2><div class="controls">'
            '<label>x <select id="pareto-x"></select></label> <label>y <select id="pareto-y"></select></label>'
            f'</div><div id="pareto" class="plot"></div><p class="note">{len(data["front"])} architectures on the '
            f"front (filled) among {len(data['points'])} completed trials; hover a point for its architecture.</p>"
            "</section>")
    parts.append(_top_table(data))
    parts.append(f"<section><h2>Best architecture</h2>{drawing}</section>")
    parts += [
        '<div id="tip" class="tip" hidden></div>',
        f'<script type="application/json" id="einnas-data">{_json_block(data)}</script>',
        f"<script>{(_ASSETS / 'report.js').read_text(encoding='utf-8')}</script>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _fmt(value, name: str) -> str:
    if value is None:
        return "-"
    if name == "accuracy":
        return f"{100 * value:.1f}%"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    return f"{int(value):,}"


def _top_table(data: dict) -> str:
    from einnas.search._report_svg import sparkline

    esc, objectives = html.escape, data["objectives"]
    names = [o["name"] for o in objectives]
    extra = [(key, label) for key, label in (("params", "params"), ("latency_ms", "latency (ms)"), ("macs", "MACs"))
             if key.split("_")[0] not in names and (key == "params" or data["columns"][key])]
    head = ["#", "trial"] + [o["label"] for o in objectives] + [label for _, label in extra] + ["curve", "architecture"]
    title = "Pareto front, best accuracy first" if data["front"] is not None else "Top architectures"
    if not data["top"]:
        return f'<section><h2>{title}</h2><p class="note">no completed trial yet</p></section>'
    rows = []
    for rank, row in enumerate(data["top"], 1):
        cells = [str(rank), str(row["trial"])]
        cells += [esc(_fmt(v, n)) for v, n in zip(row["values"], names)]
        cells += [esc(_fmt(row.get(key), key)) for key, _ in extra]
        cells.append(sparkline(row.get("curve")))
        arch = row.get("arch") or ""
        short = arch if len(arch) <= 120 else arch[:120] + " …"
        body = (f"<code>{esc(arch)}</code>" if len(arch) <= 120 else
                f"<details><summary><code>{esc(short)}</code></summary><code>{esc(arch)}</code></details>")
        cells.append(f'<span class="archid">{esc(str(row.get("archid")))}</span> {body}')
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    return (f'<section><h2>{title}</h2><table id="top"><thead><tr>{header}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></section>")


def check_study(study, shown: str) -> None:
    """Raise :class:`~einnas.errors.StudyError` for a study einnas did not make (no settings)."""
    from einnas.errors import StudyError

    if not isinstance(study.user_attrs.get(CONFIG_ATTR), dict):
        raise StudyError(f"study {study.study_name!r} in {shown}: not an einnas study (no {CONFIG_ATTR!r} settings)")


def write_html(study, path, **options) -> Path:
    """Render the page (:func:`render_html` options) and write it to ``path`` atomically."""
    from einnas._util import write_atomic

    path = Path(path)
    write_atomic(path, render_html(study, **options).encode("utf-8"))
    return path


def is_report_file(path) -> bool:
    """An HTML page einnas wrote (its generator marker near the top)."""
    try:
        with open(path, "rb") as file:
            head = file.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">' in head
