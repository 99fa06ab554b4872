"""Datasets: built-in splits, the Unseen-NAS folder layout and its validation errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from einnas.errors import DatasetError
from einnas.evaluate import BUILTIN_DATASETS, from_arrays, load_dataset


def write_folder(root, n=(60, 20, 20), shape=(3, 6, 6), classes=4, seed=0, fmt="npy", metadata=True):
    """Write a small Unseen-NAS-layout folder whose labels depend on the input."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, size in zip(("train", "valid", "test"), n):
        y = rng.integers(0, classes, size)
        x = rng.normal(0, 1, (size, *shape)).astype(np.float32) * 2 + 5
        x[:, 0] += y.reshape(-1, *([1] * (len(shape) - 1))) * 3  # learnable signal in channel 0
        if fmt == "npy":
            np.save(root / f"{split}_x.npy", x)
            np.save(root / f"{split}_y.npy", y)
        else:
            np.savez(root / f"{split}_x.npz", x)
            np.savez(root / f"{split}_y.npz", y)
    if metadata:
        (root / "metadata").write_text(json.dumps({"num_classes": classes, "input_shape": [n[0], *shape]}))
    return root


def test_builtin_names():
    assert BUILTIN_DATASETS == ("digits", "mnist1d", "mnist5k", "addnist5k")


@pytest.mark.parametrize(
    "name, shape, sizes",
    [
        ("digits", (1, 8, 8), (1077, 360, 360)),
        ("mnist1d", (40, 1), (3200, 800, 1000)),
        ("mnist5k", (1, 28, 28), (3000, 1000, 1000)),
    ],
)
def test_builtin_datasets(name, shape, sizes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # mnist1d must not write mnist1d_data.pkl into cwd
    ds = load_dataset(name)
    assert os.listdir(tmp_path) == []
    assert ds.input_shape == shape and ds.num_classes == 10
    assert tuple(ds.sizes().values()) == sizes
    for x, y in (ds.train, ds.valid, ds.test):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == shape and torch.isfinite(x).all()
        assert int(y.min()) >= 0 and int(y.max()) <= 9
    x = ds.train[0]
    axes = (0, 2, 3) if len(shape) == 3 else (0, 1)
    assert torch.allclose(x.mean(dim=axes), torch.zeros(shape[0] if len(shape) == 3 else shape[1]), atol=1e-4)
    assert torch.allclose(x.std(dim=axes), torch.ones(1), atol=1e-3)
    assert len(torch.unique(ds.train[1])) == 10
    assert load_dataset(name) is ds  # cached in-process


def test_builtin_splits_fixed_and_disjoint():
    ds = load_dataset("digits")
    from sklearn.datasets import load_digits

    raw = torch.tensor(load_digits().images.reshape(-1, 64), dtype=torch.float32)
    mean, std = ds.mean[0], ds.std[0]
    rows = {tuple(r.tolist()) for r in raw}
    seen = []
    for x, _ in (ds.train, ds.valid, ds.test):
        back = torch.round(x.reshape(len(x), -1) * std + mean)
        seen += [tuple(r.tolist()) for r in back]
    assert set(seen) <= rows and len(seen) == 1797
    # the first training sample is fixed by the documented seeded permutation
    first = np.random.default_rng(0).permutation(1797)[0]
    assert torch.equal(torch.round(ds.train[0][0].flatten() * std + mean), raw[first])


def test_mnist1d_restores_global_random_state(monkeypatch):
    import random

    import mnist1d.data

    from einnas.evaluate import datasets

    def fake_make_dataset(args):  # reseeds globals as the real one does, minus the 2 s of work
        random.seed(args.seed)
        np.random.seed(args.seed)
        x = np.random.rand(5000, 40)
        y = np.arange(5000) % 10
        return {"x": x[:4000], "y": y[:4000], "x_test": x[4000:], "y_test": y[4000:]}

    monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset)
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    splits, _ = datasets._mnist1d()
    assert (random.random(), np.random.rand()) == expected
    assert [len(y) for _, y in splits] == [3200, 800, 1000] and splits[0][0].shape == (3200, 40, 1)


@pytest.mark.parametrize("fmt", ["npy", "npz"])
def test_folder_loads(tmp_path, fmt):
    folder = write_folder(tmp_path / "tiny", fmt=fmt)
    ds = load_dataset(str(folder))
    assert ds.name == "tiny" and ds.input_shape == (3, 6, 6) and ds.num_classes == 4
    assert ds.sizes() == {"train": 60, "valid": 20, "test": 20}
    # per-channel normalisation with train statistics
    assert torch.allclose(ds.train[0].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert len(ds.mean) == 3 and ds.mean[0] > ds.mean[1]


def test_single_npz_file(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 30), ("valid", 10), ("test", 10)):
        arrays[f"{split}_x"] = rng.normal(size=(n, 12, 4)).astype(np.float32)
        arrays[f"{split}_y"] = rng.integers(0, 3, n)
    np.savez(tmp_path / "seq.npz", num_classes=np.array(5), **arrays)
    ds = load_dataset(str(tmp_path / "seq.npz"))
    assert ds.name == "seq" and ds.input_shape == (12, 4) and ds.mode == "tokens" and ds.num_classes == 5
    assert torch.allclose(ds.train[0].mean(dim=(0, 1)), torch.zeros(4), atol=1e-5)


def test_missing_valid_is_carved_from_train(tmp_path):
    folder = write_folder(tmp_path / "f", n=(50, 20, 10), metadata=False)
    (folder / "valid_x.npy").unlink()
    (folder / "valid_y.npy").unlink()
    ds = load_dataset(folder)
    assert ds.sizes() == {"train": 40, "valid": 10, "test": 10}
    assert ds.num_classes == 4 and "carved" in ds.notes[0]
    assert torch.equal(load_dataset(folder).valid[0], ds.valid[0])  # fixed by the split seed


def test_from_arrays_copies_and_does_not_modify_inputs():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    y = np.array([0, 1])
    before = x.copy()
    ds = from_arrays("tiny", (x, y), (x, y), (x, y))
    assert np.array_equal(x, before) and not np.shares_memory(ds.train[0].numpy(), x)
    assert ds.input_shape == (3, 2, 2) and len(ds.mean) == 3


def test_rank2_features_are_tokens():
    x = np.arange(40, dtype=np.float64).reshape(10, 4)
    y = np.array([0, 1] * 5)
    ds = from_arrays("feat", (x, y), (x, y), (x, y))
    assert ds.input_shape == (4, 1) and ds.num_classes == 2


def _break(folder, case):
    if case == "length":
        np.save(folder / "valid_y.npy", np.zeros(19, dtype=np.int64))
        return "valid_x.npy has 20 samples but", "valid_y.npy has 19 labels"
    if case == "label_range":
        y = np.load(folder / "test_y.npy")
        y[3] = 4
        np.save(folder / "test_y.npy", y)
        return "test_y.npy: label 4 outside 0..3", "metadata"
    if case == "negative_label":
        y = np.load(folder / "train_y.npy")
        y[0] = -1
        np.save(folder / "train_y.npy", y)
        return "train_y.npy: negative label -1", ""
    if case == "nan":
        x = np.load(folder / "train_x.npy")
        x[2, 1, 3, 3] = np.nan
        x[5, 0, 0, 0] = np.inf
        np.save(folder / "train_x.npy", x)
        return "train_x.npy: 2 non-finite value(s)", ""
    if case == "rank":
        np.save(folder / "test_x.npy", np.zeros((20,), dtype=np.float32))
        return "test_x.npy: rank 1", ""
    if case == "label_rank":
        np.save(folder / "train_y.npy", np.zeros((60, 2), dtype=np.int64))
        return "train_y.npy: rank 2", ""
    if case == "shape":
        np.save(folder / "test_x.npy", np.zeros((20, 3, 5, 5), dtype=np.float32))
        return "test_x.npy: sample shape (3, 5, 5) differs", ""
    if case == "empty":
        np.save(folder / "valid_x.npy", np.zeros((0, 3, 6, 6), dtype=np.float32))
        np.save(folder / "valid_y.npy", np.zeros((0,), dtype=np.int64))
        return "valid_x.npy: empty split", ""
    if case == "missing":
        (folder / "test_y.npy").unlink()
        return "missing test_y.npy", ""
    if case == "half_valid":
        (folder / "valid_y.npy").unlink()
        return "has valid_x but not valid_y", ""
    if case == "pickle":  # a stranger's pickled file, written here so that the loader can refuse it
        np.save(folder / "train_y.npy", np.array([{"a": 1}] * 60, dtype=object), allow_pickle=True)
        return "train_y.npy: holds Python objects", ""
    if case == "float_labels":
        np.save(folder / "train_y.npy", np.full(60, 0.5))
        return "train_y.npy: labels must be integers", ""
    if case == "strings":
        np.save(folder / "train_x.npy", np.array([["a"] * 4] * 60))
        return "train_x.npy: dtype <U1 is not numeric", ""
    if case == "metadata":
        (folder / "metadata").write_text("{num_classes: 4")
        return "metadata: not valid JSON", ""
    if case == "metadata_classes":
        (folder / "metadata").write_text(json.dumps({"num_classes": "four"}))
        return "'num_classes' must be a positive integer", ""
    if case == "truncated":
        data = (folder / "train_x.npy").read_bytes()
        (folder / "train_x.npy").write_bytes(data[: len(data) // 2])
        return "train_x.npy:", ""
    raise AssertionError(case)


BROKEN = [
    "length", "label_range", "negative_label", "nan", "rank", "label_rank", "shape", "empty", "missing",
    "half_valid", "pickle", "float_labels", "strings", "metadata", "metadata_classes", "truncated",
]


@pytest.mark.parametrize("case", BROKEN)
def test_broken_folders_raise_dataset_error(tmp_path, case):
    folder = write_folder(tmp_path / "broken")
    first, second = _break(folder, case)
    with pytest.raises(DatasetError) as info:
        load_dataset(folder)
    message = str(info.value)
    assert "\n" not in message
    assert first in message and second in message


def test_size_limit_checked_before_reading(tmp_path):
    folder = write_folder(tmp_path / "big")
    with pytest.raises(DatasetError, match="exceeds the 1,000-byte limit"):
        load_dataset(folder, max_bytes=1000)


def test_unknown_name():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar99'.*digits, mnist1d, mnist5k"):
        load_dataset("cifar99")
