"""ONNX files from strangers: `einnas score` / `describe` give a result or one line, and read nothing outside the model's folder."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from einnas.surrogate.score import Scorer


def _mlp(inputs: int = 64, classes: int = 10) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", inputs])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(inputs, 32)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(32, classes)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [x], [y], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def scorer():
    return Scorer()


def _external(folder, monkeypatch):
    """A model whose weights live in ``w.bin`` beside it; the process runs from another folder."""
    folder.mkdir()
    onnx.save(_mlp(), folder / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    elsewhere = folder.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return folder / "model.onnx", elsewhere


def test_external_weights_beside_the_model_are_used_for_proxies(scorer, tmp_path, monkeypatch):
    # Before the fix onnx2torch resolved "w.bin" against the working directory: the file
    # was scored without proxies from anywhere but its own folder.
    path, _ = _external(tmp_path / "model", monkeypatch)
    [s] = scorer.score_files([path])
    assert s.error is None and s.proxies == "", s.proxies


def test_external_weights_are_never_read_from_the_working_directory(scorer, tmp_path, monkeypatch):
    from einnas.surrogate.proxies import proxies_for_onnx

    path, elsewhere = _external(tmp_path / "model", monkeypatch)
    (elsewhere / "w.bin").write_bytes((path.parent / "w.bin").read_bytes())
    (path.parent / "w.bin").unlink()
    [s] = scorer.score_files([path])
    assert s.error is None and "w.bin" in s.proxies and "missing" in s.proxies
    from einnas.errors import ModelError

    with pytest.raises(ModelError, match="missing"):
        proxies_for_onnx(path)


def test_a_network_past_the_proxy_limits_is_scored_without_proxies(scorer, tmp_path, monkeypatch):
    # VGG-19 took about two minutes in the proxies; the limit keeps `score` from hanging on it.
    from einnas.surrogate import proxyfeatures

    onnx.save(_mlp(), tmp_path / "m.onnx")
    monkeypatch.setattr(proxyfeatures, "MAX_PROXY_MACS", 1000)
    monkeypatch.setattr(proxyfeatures, "compute_onnx", lambda *a, **k: pytest.fail("proxies computed"))
    [s] = scorer.score_files([tmp_path / "m.onnx"])
    assert s.error is None and "over the proxies' limit of 1k" in s.proxies
    assert "MACs per sample" in s.note


def test_proxy_limits_let_the_light_zoo_sizes_through_where_cheap():
    from einnas.surrogate.proxyfeatures import too_large

    assert too_large(1_250_000, 349_000_000) is None  # SqueezeNet: seconds
    assert "parameters" in too_large(143_667_240, 19_600_000_000)  # VGG-19: minutes
    assert "MACs" in too_large(25_000_000, 4_090_000_000)  # ResNet-50


def test_jacov_of_a_one_element_input_warns_nothing():
    import warnings

    import torch

    from einnas.surrogate.proxies import _jacov_from

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _jacov_from(torch.ones(4, 1))


def test_score_cli_mixes_good_and_bad_files_one_line_each(tmp_path):
    onnx.save(_mlp(), tmp_path / "good.onnx")
    (tmp_path / "text.onnx").write_text("not a model\n")
    (tmp_path / "empty.onnx").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "einnas.cli", "score", "--no-proxies", str(tmp_path / "good.onnx"),
                           str(tmp_path / "text.onnx"), str(tmp_path / "empty.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in proc.stderr
    assert "text.onnx" in errors[0] and "empty.onnx" in errors[1]
    assert "good.onnx" in proc.stdout
