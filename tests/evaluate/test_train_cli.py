"""`einnas train`: built-in datasets, Unseen-NAS folders, one-line errors, failures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from einnas.cli import main

# Architectures drawn by the sampler (kept as strings, the identity of an architecture):
# sample(default_grammar(), 150, seed=5, input_shape=(1, 28, 28))[19] and
# sample(default_grammar(), 40, seed=1, input_shape=(40, 1))[33]. Both are cheap and learn.
SAMPLED_MNIST5K = "routing[im2col(3,2,1), leakyrelu, identity]"
SAMPLED_MNIST1D = "branching(8){clone(8), routing[identity, pos_enc, identity], cat(1)}"
CONV = "routing[im2col(3,1,1), linear(16), col2im]"  # a 3x3 convolution, written by hand
FAST = ["-q", "--threads", "1"]


def write_folder(root, n=(120, 40, 40), shape=(3, 6, 6), classes=4, seed=0):
    """A small Unseen-NAS-layout folder whose label is readable from channel 0."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, size in zip(("train", "valid", "test"), n):
        y = rng.integers(0, classes, size)
        x = rng.normal(0, 1, (size, *shape)).astype(np.float32)
        x[:, 0] += y[:, None, None] * 2.0
        np.save(root / f"{split}_x.npy", x)
        np.save(root / f"{split}_y.npy", y)
    (root / "metadata").write_text(json.dumps({"num_classes": classes}))
    return root


def table(out: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in out.strip().splitlines())


def percent(text: str) -> float:
    return float(text.rstrip("%")) / 100


def test_sampled_architecture_on_mnist5k(capsys):
    assert main(["train", SAMPLED_MNIST5K, "--dataset", "mnist5k", "--epochs", "3", *FAST]) == 0
    rows = table(capsys.readouterr().out)
    assert rows["status"] == "ok" and rows["epochs"] == "3/3"
    assert rows["dataset"].startswith("mnist5k (image 1x28x28, 10 classes")
    assert percent(rows["val_acc"]) > 0.6 and percent(rows["test_acc"]) > 0.6  # chance is 0.1


def test_sampled_architecture_on_mnist1d(capsys):
    assert main(["train", SAMPLED_MNIST1D, "--dataset", "mnist1d", "--view", "tokens", "--epochs", "3", *FAST]) == 0
    rows = table(capsys.readouterr().out)
    assert rows["status"] == "ok" and rows["dataset"].startswith("mnist1d (tokens 40x1")
    assert percent(rows["val_acc"]) > 0.2  # chance is 0.1


def test_unseen_nas_folder_trains(tmp_path, capsys):
    folder = write_folder(tmp_path / "toy")
    code = main(["train", CONV, "--dataset", str(folder), "--epochs", "8", "--batch-size", "16",
                 "-f", "json", *FAST])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["dataset"] == "toy" and result["epochs_run"] == 8
    assert result["val_acc"] > 0.8 and result["test_acc"] > 0.8  # chance is 0.25
    assert len(result["curve"]) == 8 and result["params"] > 0


def test_resnet18_seed_runs_on_a_folder(tmp_path, capsys):
    folder = write_folder(tmp_path / "toy", n=(40, 10, 10))
    assert main(["train", "resnet18", "--dataset", str(folder), "--epochs", "1", *FAST]) == 0
    rows = table(capsys.readouterr().out)
    assert rows["status"] == "ok" and rows["arch"].endswith("(resnet18)")


def test_a_depth_scaled_seed_name_trains(tmp_path, capsys):
    # A depth multiplier needs the input shape: the name is fitted to the dataset's input
    # (it used to be refused before the dataset was loaded).
    folder = write_folder(tmp_path / "toy", n=(40, 10, 10))
    assert main(["train", "wrn16_4@0.25d0.5", "--dataset", str(folder), "--epochs", "1", *FAST]) == 0
    rows = table(capsys.readouterr().out)
    assert rows["status"] == "ok" and "wrn16_4@0.25d0.5" in rows["arch"]


def test_final_mode(tmp_path, capsys):
    folder = write_folder(tmp_path / "toy")
    assert main(["train", CONV, "--dataset", str(folder), "--epochs", "2", "--final", *FAST]) == 0
    rows = table(capsys.readouterr().out)
    assert rows["val_acc"] == "-" and rows["test_acc"] != "-" and "train+valid" in rows["epochs"]


def _break(folder, case):
    if case == "length":
        np.save(folder / "valid_y.npy", np.zeros(39, dtype=np.int64))
        return "has 40 samples but"
    if case == "labels":
        y = np.load(folder / "test_y.npy")
        y[0] = 9
        np.save(folder / "test_y.npy", y)
        return "test_y.npy: label 9 outside 0..3"
    if case == "nan":
        x = np.load(folder / "train_x.npy")
        x[0, 0, 0, 0] = np.nan
        np.save(folder / "train_x.npy", x)
        return "train_x.npy: 1 non-finite value(s)"
    if case == "rank":
        np.save(folder / "train_x.npy", np.zeros((120, 3, 6, 6, 1), dtype=np.float32))
        return "train_x.npy: rank 5"
    if case == "empty":
        np.save(folder / "test_x.npy", np.zeros((0, 3, 6, 6), dtype=np.float32))
        np.save(folder / "test_y.npy", np.zeros(0, dtype=np.int64))
        return "test_x.npy: empty split"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["length", "labels", "nan", "rank", "empty"])
def test_broken_folder_is_one_line_and_status_2(tmp_path, capsys, case):
    folder = write_folder(tmp_path / "toy")
    expected = _break(folder, case)
    assert main(["train", SAMPLED_MNIST5K, "--dataset", str(folder), *FAST]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("einnas train: error: ") and expected in lines[0]


def test_unknown_dataset_and_bad_arch(capsys):
    assert main(["train", SAMPLED_MNIST5K, "--dataset", "imagenet", "-q"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    # im2col needs an image: mnist1d viewed as tokens
    assert main(["train", SAMPLED_MNIST5K, "--dataset", "mnist1d", "--view", "tokens", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "im2col" in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_unavailable_is_one_line(capsys):
    assert main(["train", SAMPLED_MNIST5K, "--dataset", "digits", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]


def test_timeout_is_a_failed_run_with_status_1(tmp_path, capsys):
    folder = write_folder(tmp_path / "toy", n=(1000, 40, 40))
    code = main(["train", CONV, "--dataset", str(folder), "--epochs", "1000", "--batch-size", "16",
                 "--seconds", "0.5", *FAST])
    assert code == 1
    rows = table(capsys.readouterr().out)
    assert rows["status"].startswith("failed: timeout:")


def test_same_seed_same_accuracy_in_a_fresh_process(capsys):
    args = ["train", CONV, "--dataset", "digits", "--epochs", "2", "--seed", "3", "-f", "json", *FAST]
    assert main(args) == 0
    here = json.loads(capsys.readouterr().out)
    done = subprocess.run([sys.executable, "-m", "einnas.cli", *args], capture_output=True, text=True, check=True)
    there = json.loads(done.stdout)
    assert here["val_acc"] == there["val_acc"] and here["test_acc"] == there["test_acc"]
    assert [c["train_loss"] for c in here["curve"]] == [c["train_loss"] for c in there["curve"]]


def test_final_training_shifts_large_images_by_default(tmp_path, capsys):
    big = write_folder(tmp_path / "big", n=(60, 20, 20), shape=(1, 16, 16))
    small = write_folder(tmp_path / "small", n=(60, 20, 20), shape=(1, 6, 6))
    runs = [(big, ["--final"], "shifts of up to 2 px"), (big, ["--final", "--shift", "0"], None),
            (big, [], None), (big, ["--shift", "3"], "shifts of up to 3 px"), (small, ["--final"], None)]
    for folder, extra, note in runs:
        assert main(["train", CONV, "--dataset", str(folder), "--epochs", "1", *extra, *FAST]) == 0
        epochs = table(capsys.readouterr().out)["epochs"]
        assert (note in epochs) if note else ("shift" not in epochs), (extra, epochs)
    with pytest.raises(SystemExit) as refused:
        main(["train", CONV, "--dataset", str(big), "--shift", "-1", *FAST])
    assert refused.value.code == 2 and "--shift" in capsys.readouterr().err
