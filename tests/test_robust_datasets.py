"""A user's own dataset: labels that would wrap or explode the head, empty samples, extreme values,
and `einnas score --dataset D` on files that do not fit it (one line each, the others scored)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from einnas.errors import DatasetError
from einnas.evaluate import from_arrays, load_dataset

X = np.random.default_rng(0).normal(size=(20, 1, 4, 4)).astype(np.float32)
Y = np.arange(20) % 3


def _arrays(x=X, y=Y):
    return (x, y), (x, y), (x, y)


@pytest.mark.parametrize("labels, what", [
    (np.where(Y == 0, 2**63 + 5, Y).astype(np.uint64), "9223372036854775813"),  # wrapped to negative by int64
    (np.where(Y == 0, 1e20, Y).astype(np.float64), "100000000000000000000"),  # cast to -2**63
    (np.where(Y == 0, 10**9, Y), "1000000000"),  # a head of a billion outputs
])
def test_labels_past_the_class_limit_are_refused_before_the_cast(labels, what):
    with pytest.raises(DatasetError, match=f"label {what} means more than"):
        from_arrays("d", *_arrays(y=labels))


def test_num_classes_from_metadata_past_the_limit_names_the_file(tmp_path):
    for name in ("train", "test"):
        np.save(tmp_path / f"{name}_x.npy", X)
        np.save(tmp_path / f"{name}_y.npy", Y)
    (tmp_path / "metadata").write_text(json.dumps({"num_classes": 10**12}))
    with pytest.raises(DatasetError, match=r"num_classes 1,000,000,000,000 \(from .*metadata\) is over the limit"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("shape", [(20, 0), (20, 1, 0, 4), (20, 3, 0)])
def test_samples_without_elements_are_refused(shape):
    with pytest.raises(DatasetError, match="has no elements"):
        from_arrays("d", *_arrays(x=np.zeros(shape, np.float32)))


def test_values_near_the_float32_limit_keep_their_information():
    # float32 statistics overflowed (std inf) and every sample became 0.
    x = np.full((20, 4), 3e38, np.float32) * np.where(np.arange(80).reshape(20, 4) % 3, 1, -1).astype(np.float32)
    ds = from_arrays("big", *_arrays(x=x))
    train = ds.train[0]
    assert bool(np.isfinite(train.numpy()).all())
    assert float(train.std()) == pytest.approx(1.0, abs=0.05)
    assert (np.sign(train.numpy()[:, :, 0]) == np.sign(x)).all()


def test_a_split_that_overflows_train_statistics_is_refused():
    train = np.tile(np.array([[0.0], [1e-7]], np.float32), (10, 1))
    test = np.full((20, 1), 3e38, np.float32)
    with pytest.raises(DatasetError, match="test_x: values too large to normalise"):
        from_arrays("d", (train, Y), (train, Y), (test, Y))


def test_score_with_a_dataset_refuses_each_file_that_does_not_fit_and_scores_the_rest(tmp_path):
    from einnas.grammar.export import export_onnx

    export_onnx("sequential(linear(64), linear(32))", (1, 8, 8), 10, tmp_path / "fits.onnx")
    export_onnx("sequential(linear(64), linear(32))", (1, 28, 28), 10, tmp_path / "image28.onnx")
    export_onnx("sequential(linear(64), linear(32))", (1, 8, 8), 4, tmp_path / "four.onnx")
    proc = subprocess.run([sys.executable, "-m", "einnas.cli", "score", "--no-proxies", "--dataset", "digits",
                           *(str(tmp_path / f) for f in ("image28.onnx", "fits.onnx", "four.onnx"))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2
    assert "image28.onnx" in errors[0] and "1x28x28 does not match dataset digits" in errors[0]
    assert "four.onnx" in errors[1] and "4 classes" in errors[1]
    assert "fits.onnx" in proc.stdout
