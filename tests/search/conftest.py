import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"einnas_search_tests_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fake():
    """The fake worker module: FakeEvaluator, make_space, settings_for, its path."""
    module = _load("fake_worker")
    module.PATH = HERE / "fake_worker.py"
    return module
