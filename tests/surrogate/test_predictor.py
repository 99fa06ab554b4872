"""The predictor: splits, metrics, fitting (ranking + gate), persistence without pickle."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from einnas.errors import ModelError, UsageError
from einnas.surrogate.features import NUMERIC_NAMES
from einnas.surrogate.predictor import (
    Dataset, FitConfig, Predictor, fit, fit_predictor, rank_metrics, save_atomic, split_of,
)

SMALL = dict(members=3, trees=60, gate_trees=30, use_text=False)


def synthetic(n: int, seed: int = 0, text: bool = False):
    """Rows whose accuracy depends on two features: below zero on the first, nothing is learnt."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, len(NUMERIC_NAMES))).astype(np.float32)
    numeric[:, NUMERIC_NAMES.index("log_classes")] = math.log1p(10)
    learns = numeric[:, 0] > 0
    y = np.where(learns, 0.5 + 0.4 / (1 + np.exp(-2 * numeric[:, 1])), 0.1 + rng.normal(0, 0.01, n))
    vectors = rng.normal(size=(n, 384)).astype(np.float32) if text else None
    return numeric, vectors, y


def as_dataset(numeric, vectors, y, groups=None) -> Dataset:
    n = len(y)
    ids = [f"{i:012x}" for i in range(n)]
    return Dataset(
        [{"archid": a, "dataset": "synthetic"} for a in ids], [None] * n, numeric, vectors, y,
        np.array(groups if groups is not None else ["synthetic"] * n),
        np.array([split_of(a) for a in ids]), np.full(n, 0.1),
    )


@pytest.fixture(scope="module")
def fitted():
    numeric, _, y = synthetic(300)
    return fit_predictor(numeric, None, y, ["synthetic"] * 300, FitConfig(**SMALL))


def test_split_is_deterministic_and_proportional():
    ids = [f"{random.Random(i).getrandbits(48):012x}" for i in range(4000)]
    splits = [split_of(a) for a in ids]
    assert splits == [split_of(a) for a in ids]
    share = {s: splits.count(s) / len(ids) for s in ("train", "val", "test")}
    assert abs(share["test"] - 0.2) < 0.03 and abs(share["val"] - 0.8 * 0.15) < 0.03
    assert split_of(ids[0], holdout=0.0) != "test"


def test_rank_metrics():
    y = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    assert rank_metrics(y, y)["kendall_tau"] == 1.0
    assert rank_metrics(-y, y)["spearman_rho"] == -1.0
    assert rank_metrics(y[:2], y[:2])["kendall_tau"] is None  # too few to rank
    assert rank_metrics(y, y, chance=0.1)["n_above_chance"] == 4  # above chance + 5 points


def test_fit_ranks_and_gates_unseen_rows(fitted):
    numeric, _, y = synthetic(200, seed=1)
    mean, std = fitted.predict(numeric)
    assert mean.shape == std.shape == (200,)
    assert rank_metrics(mean, y)["kendall_tau"] > 0.6
    learns = numeric[:, 0] > 0
    assert np.mean(mean[~learns] == pytest.approx(0.1)) > 0.8  # gated to chance: 1 / 10 classes
    assert np.all(mean >= 0.1 - 1e-6) and np.all(std >= 0)


def test_same_seed_same_predictor():
    numeric, _, y = synthetic(120)
    a = fit_predictor(numeric, None, y, ["g"] * 120, FitConfig(**SMALL, seed=3))
    b = fit_predictor(numeric, None, y, ["g"] * 120, FitConfig(**SMALL, seed=3))
    np.testing.assert_array_equal(a.predict(numeric)[0], b.predict(numeric)[0])


def test_save_load_roundtrip_is_pickle_free(fitted, tmp_path):
    save_atomic(fitted, tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["meta.json", "model.safetensors"]
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["format"] == "einnas-predictor" and meta["features"]["numeric"] == list(NUMERIC_NAMES)
    again = Predictor.load(tmp_path / "p")
    numeric, _, _ = synthetic(50, seed=2)
    np.testing.assert_allclose(again.predict(numeric)[0], fitted.predict(numeric)[0], atol=1e-6)


def test_text_features_are_projected(tmp_path):
    numeric, vectors, y = synthetic(150, text=True)
    p = fit_predictor(numeric, vectors, y, ["g"] * 150, FitConfig(**{**SMALL, "use_text": True}, text_dims=4))
    assert p.tensors["text_proj"].shape == (384, 4)
    with pytest.raises(UsageError):
        p.predict(numeric)  # a text predictor needs the vectors
    assert p.predict(numeric, vectors)[0].shape == (150,)


@pytest.mark.parametrize("content", [None, "{}", "not json"])
def test_load_refuses_what_is_not_a_predictor(tmp_path, content):
    folder = tmp_path / "bad"
    folder.mkdir()
    if content is not None:
        (folder / "meta.json").write_text(content)
        (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelError):
        Predictor.load(folder)


def test_fit_never_looks_at_the_test_split():
    numeric, _, y = synthetic(260)
    data = as_dataset(numeric, None, y)
    poisoned = as_dataset(numeric, None, np.where(data.splits == "test", 1.0 - y, y))
    config = FitConfig(**SMALL)
    grid = ({}, {"depth": 2})
    a, b = fit(data, config, grid=grid), fit(poisoned, config, grid=grid)
    assert a.meta["selection"] == b.meta["selection"] and a.meta["config_chosen"] == b.meta["config_chosen"]
    np.testing.assert_array_equal(a.predict(numeric)[0], b.predict(numeric)[0])
    assert a.meta["heldout"]["synthetic"]["kendall_tau"] > 0.5 > b.meta["heldout"]["synthetic"]["kendall_tau"]
    assert a.meta["training"]["synthetic"]["test"] == int((data.splits == "test").sum())


def test_ranking_pairs_stay_within_a_dataset():
    numeric, _, y = synthetic(200)
    groups = np.where(np.arange(200) % 2 == 0, "a", "b")
    p = fit_predictor(numeric, None, y + np.where(groups == "a", 0.0, 0.05), groups, FitConfig(**SMALL))
    assert rank_metrics(p.predict(numeric)[0], y)["kendall_tau"] > 0.6


def test_too_few_rows_is_a_usage_error():
    numeric, _, y = synthetic(5)
    with pytest.raises(UsageError):
        fit_predictor(numeric, None, y, ["g"] * 5, FitConfig(**SMALL))


def test_too_few_training_records_says_how_many_are_needed():
    from einnas.surrogate.predictor import fit

    numeric, vectors, y = synthetic(6)
    data = as_dataset(numeric, vectors, y)
    with pytest.raises(UsageError, match=r"too few successful training records \(\d+; need at least 8"):
        fit(data, FitConfig(**SMALL))


def test_cli_fit_and_eval_on_records(tmp_path, capsys, monkeypatch):
    """`surrogate fit` writes a predictor with held-out metrics; `surrogate eval` recomputes them."""
    from einnas.cli import main
    from einnas.grammar import Limits, load_grammar, sample

    monkeypatch.setenv("EINNAS_CACHE_DIR", str(tmp_path / "cache"))
    archs = sample(load_grammar(), 40, seed=4, input_shape=(1, 8, 8), limits=Limits(max_params=20_000,
                                                                                    max_activations=20_000))
    with open(tmp_path / "r.jsonl", "w") as handle:
        for a in archs:
            acc = 0.1 + 0.8 / (1 + math.exp(-(math.log(a.info.params) - 7)))
            handle.write(json.dumps({"arch": a.string, "archid": a.archid, "dataset": "digits", "ok": True,
                                     "val_acc": acc, "input_shape": [1, 8, 8], "num_classes": 10,
                                     "budget": {"epochs": 1}}) + "\n")
        handle.write(json.dumps({"arch": archs[0].string, "archid": "failed000000", "dataset": "digits",
                                 "ok": False, "val_acc": None, "reason": "timeout"}) + "\n")
    out = tmp_path / "pred"
    assert main(["surrogate", "fit", str(tmp_path / "r.jsonl"), "-o", str(out), "--no-text", "--members", "2",
                 "--holdout", "0.3", "-q", "-f", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["training"]["digits"]["records"] == 40 and report["heldout"]["digits"]["n"] > 3
    meta = json.loads((out / "meta.json").read_text())
    assert meta["provenance"]["command"].startswith("einnas surrogate fit") and meta["holdout"] == 0.3
    assert main(["surrogate", "eval", str(out), "--records", str(tmp_path / "r.jsonl"), "-q", "-f", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["n"] == report["heldout"]["digits"]["n"]
    assert row["kendall_tau"] == pytest.approx(report["heldout"]["digits"]["kendall_tau"], abs=1e-4)
    assert main(["surrogate", "fit", str(tmp_path / "missing.jsonl"), "-o", str(out)]) == 2
    capsys.readouterr()
    # eval without --records: the records the predictor was fitted on
    assert main(["surrogate", "eval", str(out), "-q", "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [row]
    # outputs are checked before the work, and nothing is replaced unasked
    before = (out / "meta.json").read_bytes()
    assert main(["surrogate", "fit", str(tmp_path / "r.jsonl"), "-o", str(out), "--no-text", "-q"]) == 2
    assert "give --force" in capsys.readouterr().err and (out / "meta.json").read_bytes() == before
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["surrogate", "fit", str(tmp_path / "r.jsonl"), "-o", str(tmp_path / "notes.txt"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and err.count("\n") == 1 and (tmp_path / "notes.txt").read_text() == "mine"
    # records moved away: one line saying what is needed
    (tmp_path / "r.jsonl").rename(tmp_path / "moved.jsonl")
    assert main(["surrogate", "eval", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "give --records" in err and err.count("\n") == 1


def test_records_that_are_not_records_are_one_line_before_any_work(tmp_path, capsys):
    from einnas.cli import main

    binary = tmp_path / "random.onnx"
    binary.write_bytes(bytes(range(256)) * 8)
    text = tmp_path / "notes.txt"
    text.write_text("just some text\n")
    for argv in (["surrogate", "eval", "--records", str(binary)], ["surrogate", "fit", str(binary), "-o", str(tmp_path / "p")],
                 ["surrogate", "fit", str(text), "-o", str(tmp_path / "p")],
                 ["surrogate", "eval", "--records", str(tmp_path / "missing.jsonl")]):
        assert main([*argv, "-q"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "p").exists()
