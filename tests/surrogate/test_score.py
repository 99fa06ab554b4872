"""`einnas score`: any ONNX file gets a prediction or one clear line; OOD notes; the shipped predictor."""

from __future__ import annotations

import glob
import json
import math
import os

import numpy as np
import pytest

from einnas.errors import ModelError
from einnas.surrogate.features import DescriptionCache, describe_file
from einnas.surrogate.predictor import FitConfig, featurize, fit, save_atomic
from einnas.surrogate.score import PRETRAINED, Scorer, load_predictor

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def predictor_dir(tmp_path_factory):
    """A tiny predictor (with proxy features) fitted on 24 sampled digits-shaped architectures, synthetic labels."""
    from einnas.grammar import Limits, load_grammar, sample

    folder = tmp_path_factory.mktemp("predictor")
    archs = sample(load_grammar(), 24, seed=0, input_shape=SHAPE, num_classes=10,
                   limits=Limits(max_params=20_000, max_activations=20_000))
    records = [{"arch": a.string, "archid": a.archid, "dataset": "digits", "ok": True, "input_shape": list(SHAPE),
                "num_classes": 10, "budget": {"epochs": 8, "seconds": 30.0},
                "val_acc": 0.1 + 0.8 / (1 + math.exp(-(math.log(a.info.params) - 7)))} for a in archs]
    data = featurize(records, None, DescriptionCache(None), holdout=0.0)
    predictor = fit(data, FitConfig(members=3, trees=40, gate_trees=20), grid=(), meta={"holdout": 0.0})
    save_atomic(predictor, folder / "p")
    return folder / "p"


@pytest.fixture(scope="module")
def scorer(predictor_dir):
    return Scorer(load_predictor(predictor_dir)).warm_up()


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    from einnas.grammar import resolve_arch
    from einnas.grammar.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    export_onnx(resolve_arch("resnet18"), (3, 32, 32), 10, folder / "resnet18.onnx")
    export_onnx("sequential(linear(64), linear(32))", SHAPE, 10, folder / "small.onnx")
    export_onnx("sequential(linear(64), linear(32))", SHAPE, 4, folder / "four_classes.onnx")
    (folder / "garbage.onnx").write_bytes(os.urandom(256))
    (folder / "empty.onnx").write_bytes(b"")
    return folder


def test_scores_an_exported_architecture(scorer, onnx_files):
    [s] = scorer.score_files([onnx_files / "small.onnx"])
    assert s.error is None and 0.0 < s.mean <= 1.0 and s.std >= 0.0
    assert s.params > 0 and s.as_dict()["predicted_accuracy"] == round(s.mean, 4)
    assert s.target.startswith("validation accuracy on digits") and "after 8 epochs" in s.target
    assert 0.0 <= s.rank <= 100.0


def test_rank_orders_files_like_their_predictions(scorer, onnx_files, tmp_path):
    from einnas.grammar.export import export_onnx

    paths = []
    for i, arch in enumerate(["sequential(linear(16), identity)", "sequential(linear(64), linear(32))",
                              "sequential(sequential(linear(256), leakyrelu), sequential(linear(128), leakyrelu))"]):
        export_onnx(arch, SHAPE, 10, tmp_path / f"m{i}.onnx")
        paths.append(tmp_path / f"m{i}.onnx")
    scores = scorer.score_files(paths)
    expected = [scorer.predictor.predict([describe_file(p)], tasks=[scorer.predictor.default_task()]).expected[0]
                for p in paths]
    by_rank = np.argsort([s.rank for s in scores], kind="stable")
    assert [expected[i] for i in by_rank] == sorted(expected)


def test_far_from_training_data_gets_a_note(scorer, onnx_files):
    [s] = scorer.score_files([onnx_files / "resnet18.onnx"])
    assert s.error is None and s.ood
    assert "far from the training data" in s.note and "parameters" in s.note


def test_hostile_and_broken_files_get_one_line(scorer, onnx_files, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [0.0] * 4)
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../../etc/passwd")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weight])
    escaping = tmp_path / "escaping.onnx"
    escaping.write_bytes(helper.make_model(graph).SerializeToString())
    paths = [onnx_files / "garbage.onnx", onnx_files / "empty.onnx", tmp_path / "missing.onnx", tmp_path, escaping]
    results = scorer.score_files(paths)
    for path, r in zip(paths, results):
        assert r.error and "\n" not in r.error and r.mean is None, (path, r)
    assert onnx.__version__  # onnx was importable for the hostile file


def test_every_backend_test_model_gets_a_score_or_one_line(scorer):
    import onnx

    from einnas.surrogate.describe import describe

    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    paths = sorted(glob.glob(os.path.join(root, "**", "*.onnx"), recursive=True))
    if not paths:
        pytest.skip("this onnx installation ships no backend test data")
    results = scorer.score_files(paths)
    assert len(results) == len(paths)
    for path, r in zip(paths, results):
        try:
            describe(path)
            accepted = True
        except ModelError:
            accepted = False
        if accepted:
            assert r.error is None and math.isfinite(r.mean) and math.isfinite(r.std), (path, r)
        else:
            assert r.error and "\n" not in r.error, (path, r)
    assert sum(r.error is None for r in results) >= 0.9 * len(paths)


def test_cli_score_table_json_and_exit_status(predictor_dir, onnx_files, capsys):
    from einnas.cli import main

    good = [str(onnx_files / "small.onnx"), str(onnx_files / "resnet18.onnx")]
    assert main(["score", *good, "--predictor", str(predictor_dir)]) == 0
    out = capsys.readouterr().out
    assert "small.onnx" in out and "far from the training data" in out
    assert "predicted: validation accuracy on digits" in out and "after 8 epochs" in out
    import re

    row = next(line for line in out.splitlines() if "small.onnx" in line)
    assert re.search(r"small\.onnx +\d{1,3}\.\d% +± \d{1,3}\.\d ", row)  # the one accuracy format of tables
    assert "rank" in out.splitlines()[2]  # the table header names the rank column
    assert main(["score", *good, str(onnx_files / "garbage.onnx"), "--predictor", str(predictor_dir), "-f", "json"]) == 2
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [("error" in r) for r in rows] == [False, False, True]
    assert rows[0]["predicts"].startswith("validation accuracy on digits") and 0 <= rows[0]["rank_percentile"] <= 100
    assert len(captured.err.strip().splitlines()) == 1 and "garbage.onnx" in captured.err


def test_cli_bad_predictor_folder_is_one_line(tmp_path, onnx_files, capsys):
    from einnas.cli import main

    assert main(["score", str(onnx_files / "small.onnx"), "--predictor", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("einnas score: error:") and "\n" not in err


def test_missing_shipped_predictor_is_a_clear_error(monkeypatch, tmp_path):
    import einnas.surrogate.score as score

    monkeypatch.setattr(score, "PRETRAINED", tmp_path)
    with pytest.raises(ModelError, match="no shipped predictor"):
        load_predictor("default")


@pytest.mark.skipif(not (PRETRAINED / "meta.json").is_file(), reason="no shipped predictor in this checkout")
def test_shipped_predictor_scores_seeds_out_of_the_box(onnx_files):
    shipped = Scorer()
    [r18, small] = shipped.score_files([onnx_files / "resnet18.onnx", onnx_files / "small.onnx"])
    assert r18.error is None and small.error is None
    assert 0.0 < small.mean <= 1.0
    meta = shipped.predictor.meta
    assert meta["heldout"] and meta["provenance"]["command"].startswith("einnas surrogate fit")


def test_cli_dataset_conditions_on_the_task(predictor_dir, onnx_files, capsys):
    from einnas.cli import main

    assert main(["score", str(onnx_files / "small.onnx"), "--predictor", str(predictor_dir), "--dataset", "digits",
                 "--no-proxies", "-f", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert "digits (1x8x8, 10 classes, 1077 training samples)" in row["predicts"]


@pytest.mark.parametrize("model, dataset", [("small.onnx", "mnist1d"), ("four_classes.onnx", "digits"),
                                            ("resnet18.onnx", "digits")])
def test_cli_dataset_shape_mismatch_is_one_line_exit_2(predictor_dir, onnx_files, capsys, model, dataset):
    from einnas.cli import main

    assert main(["score", str(onnx_files / model), "--predictor", str(predictor_dir), "--dataset", dataset]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and model in err and dataset in err and captured.out == ""


def test_proxies_that_cannot_be_computed_are_said(predictor_dir, tmp_path, capsys):
    """A file whose op no converter knows is scored anyway, with 'scored without proxies: <reason>'."""
    import onnx
    from onnx import TensorProto, helper

    from einnas.cli import main

    w = helper.make_tensor("w", TensorProto.FLOAT, [64, 10], [0.01] * 640)
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["m"]),
             helper.make_node("Frobnicate", ["m"], ["y"], domain="com.example")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], [w])
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                       helper.make_opsetid("com.example", 1)]), path)
    assert main(["score", str(path), "--predictor", str(predictor_dir), "-f", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert "scored without proxies: " in row["note"] and row["proxies"].startswith("unavailable")
    assert 0.0 < row["predicted_accuracy"] <= 1.0
    assert main(["score", str(path), "--predictor", str(predictor_dir), "--no-proxies", "-f", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert "scored without proxies: turned off" in row["note"]
