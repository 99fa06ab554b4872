"""Installed packages add strategies and evaluators by entry point (einnas.strategies, einnas.evaluators).

The plugin is a real distribution on sys.path (a module plus a dist-info folder with
entry_points.txt), as pip would install it; the CLI lists and uses it in a fresh process.
"""

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from einnas.errors import PluginError, UsageError
from einnas.search import EVALUATORS, STRATEGIES
from einnas.testing import EvaluatorContract, StrategyContract

PLUGIN = textwrap.dedent('''
    """A third-party search plugin: a strategy and an evaluator."""
    from einnas.search import Evaluation, Evaluator, Proposal, Strategy


    class Fresh(Strategy):
        """Always a fresh sample from the grammar."""

        name = "fresh"

        def propose(self, view, trial_number, rng):
            return Proposal(self.space.sample(rng), "fresh")


    class Smallness(Evaluator):
        """Scores a candidate by how few parameters it has: trains nothing."""

        scored_by = "smallness"

        def evaluate(self, arch, seed):
            return Evaluation(True, value=1.0 / (1.0 + arch.info.params / 1000.0), params=arch.info.params)


    class NotAStrategy:
        pass
''')
ENTRY_POINTS = textwrap.dedent('''
    [einnas.strategies]
    fresh = einnas_demo_plugin:Fresh
    broken = einnas_demo_plugin:NotAStrategy
    missing = einnas_demo_plugin_gone:Nothing

    [einnas.evaluators]
    smallness = einnas_demo_plugin:Smallness
''')


@pytest.fixture
def plugin_path(tmp_path):
    """A folder holding the installed plugin distribution."""
    site = tmp_path / "site"
    info = site / "einnas_demo_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "einnas_demo_plugin.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: einnas-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


@pytest.fixture
def installed(plugin_path, monkeypatch):
    """The plugin importable and its entry points visible in this process."""
    monkeypatch.syspath_prepend(str(plugin_path))
    yield
    for table in (STRATEGIES, EVALUATORS):
        for name in ("fresh", "broken", "missing", "smallness"):
            table._loaded.pop(name, None)
    sys.modules.pop("einnas_demo_plugin", None)


def _einnas(args, plugin_path, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "einnas.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_a_plugin_strategy_and_evaluator_are_listed_and_used_by_search(plugin_path, tmp_path):
    listed = _einnas(["search", "--help"], plugin_path, tmp_path)
    assert listed.returncode == 0, listed.stderr
    help_text = " ".join(listed.stdout.split())
    assert "all: re, random, sample, broken, fresh, missing" in help_text
    assert "all: train, surrogate, record, smallness" in help_text
    run = _einnas(["search", "--dataset", "digits", "--strategy", "fresh", "--evaluator", "smallness", "--trials", "3",
                   "--no-final", "--workers", "1", "-q", "--out", str(tmp_path / "run"), "-f", "json"],
                  plugin_path, tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["settings"]["strategy"] == "fresh" and report["settings"]["evaluator"] == "smallness"
    assert report["trials"]["counted"] == 3
    assert {row["origin"] for row in report["top"]} == {"fresh"}


def test_a_plugin_that_is_not_a_strategy_or_cannot_import_is_one_clear_error(plugin_path, tmp_path):
    for name, message in (("broken", "not a subclass of einnas.search.strategies.Strategy"),
                          ("missing", "plugin entry point missing = einnas_demo_plugin_gone:Nothing failed")):
        run = _einnas(["search", "--dataset", "digits", "--strategy", name, "--trials", "2", "--out",
                       str(tmp_path / name)], plugin_path, tmp_path)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
        assert not (tmp_path / name).exists()  # refused before anything was written


def test_the_registry_loads_entry_points_only_when_used(installed):
    names = list(STRATEGIES)
    assert names[:3] == ["re", "random", "sample"] and "fresh" in names
    assert "einnas_demo_plugin" not in sys.modules  # listing imports nothing
    assert STRATEGIES["fresh"].name == "fresh" and "einnas_demo_plugin" in sys.modules
    assert EVALUATORS["smallness"].scored_by == "smallness"
    with pytest.raises(PluginError, match="not a subclass"):
        STRATEGIES.get("broken")
    with pytest.raises(UsageError, match="--strategy 'nope': expected re, random, sample, broken, fresh or missing"):
        STRATEGIES.get("nope")
    assert metadata.entry_points(group="einnas.strategies")  # really installed, not monkeypatched


class TestPluginStrategyContract(StrategyContract):
    """What a plugin author writes: the shipped contract on their strategy."""

    @pytest.fixture
    def strategy(self, space, installed):
        return STRATEGIES["fresh"](space)


class TestPluginEvaluatorContract(EvaluatorContract):
    @pytest.fixture
    def evaluator(self, installed):
        return EVALUATORS["smallness"]()
