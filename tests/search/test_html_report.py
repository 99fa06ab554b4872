"""report.html and `einnas report`: content, escaping, the CLI's rules, and the page in a real
headless Chromium (console errors, plotted data, hover). Studies are made by hand
(report_studies.py), single- and multi-objective, so no search runs here."""

from __future__ import annotations

import html
import io
import json
import os
import re
import sys
from pathlib import Path

import optuna
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # the hand-made studies and the DevTools-pipe driver beside this file

import report_studies as rs  # noqa: E402
from chromium_pipe import Chromium, find_chromium  # noqa: E402

from einnas.cli import main  # noqa: E402
from einnas.search.html_report import render_html, report_data  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
FRONT = {  # (accuracy, latency): trials 0, 1 and 3 are the front, 2 and 4 are dominated
    0: (0.90, 5.0), 1: (0.80, 2.0), 2: (0.70, 3.0), 3: (0.95, 10.0), 4: (0.85, 6.0),
}


def data_of(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="einnas-data">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


def known_front_study(storage=None, name="front"):
    study = optuna.create_study(directions=["maximize", "minimize"], storage=storage, study_name=name)
    study.set_user_attr("einnas", rs.settings(["accuracy", "latency"]))
    for number, (acc, lat) in FRONT.items():
        arch = rs.ARCHS[number]
        study.add_trial(optuna.trial.create_trial(values=[acc, lat], user_attrs={
            "arch": arch, "archid": rs.archid_of(arch), "params": 1000 * (number + 1), "latency_ms": lat,
            "macs": 5000, "curve": [acc / 2, acc], "origin": "init", "scored_by": "trained"}))
    return study


# --- content, without a browser ------------------------------------------------------------


def test_hostile_strings_are_escaped_everywhere():
    study = rs.make_study(("accuracy", "latency"), hostile=True, name='<b>"study"</b>&<script>x</script>')
    page = render_html(study)  # the hostile architecture is the best: the drawing's note shows it too
    assert rs.HOSTILE not in page
    assert "<img" not in page and "<script>window.pwned" not in page and "<!--" not in page
    assert html.escape(rs.HOSTILE) in page  # shown, as text
    assert page.count("<script") == 3  # the error hook, the data block and the page's script: none injected
    assert "<b>" not in page and html.escape('<b>"study"</b>') in page
    data = data_of(page)  # the JSON block survives the escaping and gives the exact strings back
    assert rs.HOSTILE in [p["arch"] for p in data["points"]]
    assert data["study"] == '<b>"study"</b>&<script>x</script>'
    assert data["top"][0]["arch"] == rs.HOSTILE and "no graph drawing" in page


def test_single_objective_study_has_history_and_top_but_no_front():
    study = rs.make_study(("accuracy",), n=12, failed=2, pruned=1)
    assert "objectives" not in study.user_attrs["einnas"]  # today's format
    page = render_html(study, graph=False)
    data = data_of(page)
    assert data["front"] is None and 'id="pareto"' not in page
    assert [o["name"] for o in data["objectives"]] == ["accuracy"]
    statuses = [p["status"] for p in data["history"]["points"]]
    assert len(statuses) == 15 and statuses.count("failed") == 2 and statuses.count("pruned") == 1
    values = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    assert data["top"][0]["values"] == [max(values)]
    assert data["history"]["best"][-1][1] == max(values)
    best = [b for _, b in data["history"]["best"]]
    assert best == sorted(best)  # best so far never falls
    assert len(data["top"]) == 10 and "Top architectures" in page


def test_multi_objective_front_is_the_non_dominated_set():
    study = known_front_study()
    data = report_data(study)
    numbers = {p["trial"]: p for p in data["points"]}
    assert {n for n, p in numbers.items() if p["front"]} == {0, 1, 3}
    assert sorted(data["front"]) == sorted(rs.archid_of(rs.ARCHS[n]) for n in (0, 1, 3))
    assert [row["trial"] for row in data["top"]] == [3, 0, 1]  # the front, best accuracy first
    assert data["objectives"][1] == {"name": "latency", "label": "latency (ms)", "direction": "minimize"}
    page = render_html(study, graph=False)
    assert 'id="pareto-x"' in page and "3 architectures on the front" in page


def test_a_budget_constraint_keeps_infeasible_trials_off_the_front_and_top():
    def study_with_budget(directions, values):
        study = optuna.create_study(directions=directions)
        study.set_user_attr("einnas", rs.settings(None if len(directions) == 1 else ["accuracy", "latency"]))
        for number, (vals, over) in enumerate(values):
            arch = rs.ARCHS[number]
            study.add_trial(optuna.trial.create_trial(
                values=vals, system_attrs={"constraints": [over]},
                user_attrs={"arch": arch, "archid": rs.archid_of(arch), "params": 10, "latency_ms": 1.0}))
        return study

    # trial 0 dominates everything but is over the latency budget (constraint value > 0)
    multi = report_data(study_with_budget(["maximize", "minimize"],
                                          [([0.99, 0.1], 3.0), ([0.8, 2.0], -1.0), ([0.7, 1.0], -1.0)]))
    assert [p["feasible"] for p in multi["points"]] == [False, True, True]
    assert sorted(multi["front"]) == sorted(rs.archid_of(rs.ARCHS[n]) for n in (1, 2))
    single = report_data(study_with_budget(["maximize"], [([0.99], 3.0), ([0.8], -1.0), ([0.7], 0.0)]))
    assert [r["trial"] for r in single["top"]] == [1, 2] and single["counts"]["infeasible"] == 1
    assert single["history"]["best"] == [[1, 0.8], [2, 0.8]]  # the best so far within the budget


def test_three_objectives_and_a_running_study():
    study = rs.make_study(("accuracy", "latency", "params"), n=20, running=2, waiting=1)
    page = render_html(study, graph=False)
    data = data_of(page)
    assert len(data["objectives"]) == 3 and all(len(p["values"]) == 3 for p in data["points"])
    assert data["counts"]["running"] == 2 and data["counts"]["waiting"] == 1
    assert "still running" in page
    assert len(data["history"]["points"]) == 20 + 2 + 1  # running and waiting trials are not plotted
    assert sorted(data["front"]) == sorted(t.user_attrs["archid"] for t in study.best_trials)


def test_empty_study_renders():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("einnas", rs.settings(["accuracy", "latency"]))
    page = render_html(study)  # with the graph: there is no best to draw
    data = data_of(page)
    assert data["points"] == [] and data["history"]["points"] == [] and data["front"] == []
    assert page.count("<p class=\"note\">no completed trial yet</p>") == 2  # the table and the drawing


def test_graph_of_the_best_architecture():
    study = known_front_study()
    page = render_html(study)  # the best (trial 3) built from its string with the built-in grammar
    svg = re.search(r'<svg id="graph" viewBox="0 0 (\d+) (\d+)"[^>]*data-nodes="(\d+)" data-edges="(\d+)"', page)
    assert svg and int(svg.group(3)) >= 3 and int(svg.group(4)) >= int(svg.group(3)) - 1
    assert 'data-op="Gemm"' in page  # the classifier head
    foreign = known_front_study(name="other")
    foreign.set_user_attr("einnas", dict(rs.settings(["accuracy", "latency"]), grammar_sha256="0" * 64))
    assert "give --grammar FILE" in render_html(foreign)


def test_a_deep_graph_wraps_into_columns_within_the_page_width():
    from onnx import TensorProto, helper

    from einnas.search._report_svg import GAP_Y, MAX_ROWS, MAX_WIDTH, NODE_H, graph_svg

    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"relu{i}") for i in range(200)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("t200", TensorProto.FLOAT, ["N", 8])])
    svg = graph_svg(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    width, height = map(int, re.search(r'viewBox="0 0 (\d+) (\d+)"', svg).groups())
    assert svg.count('<g class="node"') == 200 and svg.count("<path") == 199
    assert width <= MAX_WIDTH and height <= 16 + MAX_ROWS * (NODE_H + GAP_Y)  # columns, not a 7000-px strip


# --- the command line ------------------------------------------------------------------------


@pytest.fixture
def journal(tmp_path):
    from einnas.search import open_storage

    path = tmp_path / "study.journal"
    rs.make_study(("accuracy", "latency"), storage=open_storage(str(path)), name="multi")
    return path


def run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_a_report_and_follows_the_output_rule(journal, tmp_path, capsys):
    out = tmp_path / "r.html"
    code, stdout, err = run_cli(["report", "--storage", str(journal), "-o", str(out), "--no-graph"], capsys)
    assert code == 0 and "wrote" in stdout and err == ""
    assert data_of(out.read_text())["study"] == "multi"  # the only study, picked without --study-name
    first = out.read_bytes()
    code, _, err = run_cli(["report", "--storage", str(journal), "-o", str(out), "--no-graph"], capsys)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1 and out.read_bytes() == first
    code, _, _ = run_cli(["report", "--storage", str(journal), "-o", str(out), "--no-graph", "--force"], capsys)
    assert code == 0
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my own page</html>")
    for extra in ([], ["--force"]):  # a file einnas did not write is never replaced
        code, _, err = run_cli(["report", "--storage", str(journal), "-o", str(mine), "--no-graph", *extra], capsys)
        assert code == 2 and "not an einnas report" in err and mine.read_text() == "<html>my own page</html>"


def test_cli_bad_inputs_are_one_line_exit_2(journal, tmp_path, capsys):
    from einnas.search import open_storage

    out = tmp_path / "r.html"
    cases = [
        (["--storage", str(tmp_path / "missing.journal")], "no such study file"),
        (["--storage", str(tmp_path)], "is a folder"),
        (["--storage", str(journal), "--study-name", "nope"], "no study named 'nope'"),
    ]
    storage = open_storage(str(tmp_path / "two.journal"))
    rs.make_study(name="first", storage=storage, n=2)
    optuna.create_study(study_name="plain", storage=storage).enqueue_trial({})  # not made by einnas
    cases += [
        (["--storage", str(tmp_path / "two.journal")], "give --study-name (studies: first, plain)"),
        (["--storage", str(tmp_path / "two.journal"), "--study-name", "plain"], "not an einnas study"),
    ]
    bad = tmp_path / "bad.journal"
    bad.write_text("this is not a journal\n")
    cases.append((["--storage", str(bad)], "bad.journal"))
    for argv, message in cases:
        code, stdout, err = run_cli(["report", *argv, "-o", str(out), "--no-graph"], capsys)
        assert code == 2 and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not out.exists()


def test_optuna_dashboard_still_opens_a_multi_objective_study(journal):
    from wsgiref.util import setup_testing_defaults

    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    from einnas.search import open_storage

    storage = open_storage(str(journal), create=False)
    app = optuna_dashboard.wsgi(storage)

    def get(path):
        environ, status = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}, []
        setup_testing_defaults(environ)
        environ["wsgi.input"] = io.BytesIO()
        body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
        return status[0], body

    status, body = get("/api/studies")
    assert status.startswith("200")
    summary = json.loads(body)["study_summaries"][0]
    status, body = get(f"/api/studies/{summary['study_id']}")
    assert status.startswith("200")
    detail = json.loads(body)
    study = optuna.load_study(study_name="multi", storage=storage)
    assert detail["directions"] == ["maximize", "minimize"]
    assert sorted(t["number"] for t in detail["best_trials"]) == sorted(t.number for t in study.best_trials)
    keys = {a["key"] for a in detail["trials"][0]["user_attrs"]}
    assert {"arch", "archid", "latency_ms", "macs", "params"} <= keys


# --- in a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it with apt-get)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    with Chromium(executable) as chromium:
        yield chromium


def open_page(browser, study, tmp_path, name="report.html", **options):
    path = tmp_path / name
    path.write_text(render_html(study, **options), encoding="utf-8")
    before = len(browser.errors())
    browser.load(path.as_uri())
    return browser.errors()[before:]


COUNT = "document.querySelectorAll({!r}).length"


def test_page_in_chromium_holds_the_study(browser, tmp_path):
    study = rs.make_study(("accuracy", "latency"), n=30, failed=3, pruned=2, running=1, hostile=True)
    errors = open_page(browser, study, tmp_path)
    assert errors == [] and browser.evaluate("window.einnasErrors.length") == 0
    assert browser.evaluate("window.pwned === undefined")  # the hostile string stayed text
    assert browser.evaluate(COUNT.format("#history .pt")) == 35  # every evaluated trial, not the running one
    assert browser.evaluate(COUNT.format("#history .pt.failed")) == 3
    assert browser.evaluate(COUNT.format("#pareto circle.pt")) == 30
    shown = browser.evaluate("[...document.querySelectorAll('#pareto circle.front')].map(c => c.dataset.archid)")
    assert sorted(shown) == sorted(t.user_attrs["archid"] for t in study.best_trials)
    assert "no graph drawing" in browser.evaluate("document.body.textContent")  # the best does not parse
    # hover the hostile point: its architecture shows as text in the tooltip
    hostile = next(t.number for t in study.trials if t.user_attrs["arch"] == rs.HOSTILE)
    box = browser.evaluate(f"(() => {{ const c = document.querySelector('#pareto circle[data-trial=\"{hostile}\"]');"
                           "c.scrollIntoView({block: 'center'}); const b = c.getBoundingClientRect();"
                           "return [b.x + b.width / 2, b.y + b.height / 2]; })()")
    browser.hover(*box)
    tip = browser.evaluate("[document.getElementById('tip').hidden, document.getElementById('tip').textContent]")
    assert tip[0] is False and f"trial {hostile}" in tip[1] and rs.HOSTILE in tip[1]
    assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll


def test_three_objectives_switch_axes_in_chromium(browser, tmp_path):
    study = rs.make_study(("accuracy", "latency", "params"), n=25)
    assert open_page(browser, study, tmp_path) == []
    assert browser.evaluate(COUNT.format("#pareto-x option")) == 3
    label = "() => [...document.querySelectorAll('#pareto .axis text')].map(t => t.textContent).join('|')"
    assert "latency (ms)" in browser.evaluate(f"({label})()")
    browser.evaluate("(() => { const s = document.getElementById('pareto-x'); s.value = '2';"
                     "s.dispatchEvent(new Event('change')); })()")
    assert "parameters (minimize)" in browser.evaluate(f"({label})()")
    assert browser.evaluate(COUNT.format("#pareto circle.pt")) == 25
    assert browser.evaluate(COUNT.format("#pareto circle.front")) == len(study.best_trials)
    nodes = browser.evaluate("document.getElementById('graph').dataset.nodes")
    assert browser.evaluate(COUNT.format("#graph g.node")) == int(nodes) >= 3  # the best's ONNX graph, drawn
    assert browser.errors() == []


def test_single_and_empty_studies_in_chromium(browser, tmp_path):
    study = rs.make_study(("accuracy",), n=8, failed=1, pruned=0)
    assert open_page(browser, study, tmp_path, "single.html", graph=False) == []
    assert browser.evaluate(COUNT.format("#history .pt")) == 9 and browser.evaluate(COUNT.format("#pareto")) == 0
    assert browser.evaluate(COUNT.format("#history path.best")) == 1
    assert browser.evaluate(COUNT.format("#top tbody tr")) == 8
    empty = optuna.create_study(directions=["maximize", "minimize"])
    empty.set_user_attr("einnas", rs.settings(["accuracy", "latency"]))
    assert open_page(browser, empty, tmp_path, "empty.html") == []
    assert browser.evaluate(COUNT.format("#history .pt")) == 0
    assert "no evaluated trial yet" in browser.evaluate("document.getElementById('history').textContent")


def test_a_script_error_is_caught(browser, tmp_path):
    """The checks above can fail: a page whose script throws is reported by both hooks."""
    study = rs.make_study(n=3)
    path = tmp_path / "broken.html"
    path.write_text(render_html(study, graph=False).replace('JSON.parse(document.getElementById("einnas-data")',
                                                             'JSON.parse(document.getElementById("missing")'))
    before = len(browser.errors())
    browser.send("Page.navigate", {"url": path.as_uri()}, session=True)
    browser.wait_event("Page.loadEventFired")
    browser.evaluate("1")
    assert any("TypeError" in e for e in browser.errors()[before:])
    assert browser.evaluate("window.einnasErrors.length") == 1
