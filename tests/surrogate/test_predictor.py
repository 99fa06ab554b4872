"""The predictor: interface contract, splits, metrics, fitting (ranking + gate), persistence without pickle."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from einnas.errors import ModelError, UsageError
from einnas.surrogate.features import NUMERIC_NAMES
from einnas.surrogate.interface import BasePredictor
from einnas.surrogate.predictor import (
    Dataset, FitConfig, Predictor, fit, fit_predictor, rank_metrics, save_atomic, split_of,
)

SMALL = dict(members=3, trees=60, gate_trees=30, use_text=False)
FIRST, SECOND = NUMERIC_NAMES.index("log_params"), NUMERIC_NAMES.index("log_macs")


def synthetic(n: int, seed: int = 0):
    """Rows whose accuracy depends on two features: below zero on the first, nothing is learnt."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, len(NUMERIC_NAMES))).astype(np.float32)
    numeric[:, NUMERIC_NAMES.index("log_classes")] = math.log1p(10)
    learns = numeric[:, FIRST] > 0
    y = np.where(learns, 0.5 + 0.4 / (1 + np.exp(-2 * numeric[:, SECOND])), 0.1 + rng.normal(0, 0.01, n))
    return numeric, y


def as_dataset(numeric, y, groups=None) -> Dataset:
    n = len(y)
    ids = [f"{i:012x}" for i in range(n)]
    return Dataset(
        [{"archid": a, "dataset": "synthetic"} for a in ids], [None] * n, numeric, None, y,
        np.array(groups if groups is not None else ["synthetic"] * n),
        np.array([split_of(a) for a in ids]), np.full(n, 0.1),
    )


@pytest.fixture(scope="module")
def fitted():
    numeric, y = synthetic(300)
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
    assert rank_metrics(np.zeros(5), y)["kendall_tau"] == 0.0  # a constant ranks nothing


def test_interface_contract_shapes_and_uncertainty(fitted):
    """predict_rows -> mean, std (>= 0) and expected, each (n,); ranks unseen rows; gates to chance."""
    assert isinstance(fitted, BasePredictor)
    numeric, y = synthetic(200, seed=1)
    mean, std = pred = fitted.predict_rows(numeric)
    expected = pred.expected
    assert mean.shape == std.shape == expected.shape == (200,)
    assert np.all(std >= 0) and np.all(np.isfinite(mean))
    assert rank_metrics(mean, y)["kendall_tau"] > 0.6
    learns = numeric[:, FIRST] > 0
    assert np.mean(np.isclose(mean[~learns], 0.1, atol=1e-6)) > 0.8  # gated to chance: 1 / 10 classes
    assert np.all(mean >= 0.1 - 1e-6)
    assert len(np.unique(np.round(expected[~learns], 6))) > 10  # expected breaks the ties at chance


def test_same_seed_same_predictor_other_seed_other():
    numeric, y = synthetic(120)
    a = fit_predictor(numeric, None, y, ["g"] * 120, FitConfig(**SMALL, seed=3))
    b = fit_predictor(numeric, None, y, ["g"] * 120, FitConfig(**SMALL, seed=3))
    c = fit_predictor(numeric, None, y, ["g"] * 120, FitConfig(**SMALL, seed=4))
    np.testing.assert_array_equal(a.predict_rows(numeric)[0], b.predict_rows(numeric)[0])
    assert not np.array_equal(a.predict_rows(numeric).expected, c.predict_rows(numeric).expected)


def test_save_load_roundtrip_is_pickle_free_and_identical(fitted, tmp_path):
    save_atomic(fitted, tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["meta.json", "model.safetensors"]
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["format"] == "einnas-predictor" and set(meta["features"]["numeric"]) <= set(NUMERIC_NAMES)
    again = Predictor.load(tmp_path / "p")
    numeric, _ = synthetic(50, seed=2)
    a_pred, b_pred = again.predict_rows(numeric), fitted.predict_rows(numeric)
    for a, b in zip([*a_pred, a_pred.expected], [*b_pred, b_pred.expected]):
        np.testing.assert_array_equal(a, b)


def test_proxy_features_can_be_left_out():
    numeric, y = synthetic(100)
    p = fit_predictor(numeric, None, y, ["g"] * 100, FitConfig(**SMALL, use_proxies=False))
    assert not any(n.startswith("proxy_") for n in p.names)
    assert any(n.startswith("proxy_") for n in fit_predictor(numeric, None, y, ["g"] * 100,
                                                              FitConfig(**SMALL)).names)


def test_rows_without_proxies_are_ranked_by_the_graph_features():
    """Where a file has no proxies (the converter cannot handle it), the prediction comes from
    the members fitted without them: it still ranks by the graph, not by a blanked proxy."""
    from einnas.surrogate.features import MISSING

    rng = np.random.default_rng(3)
    n = 400
    snip = NUMERIC_NAMES.index("proxy_snip")
    numeric = np.zeros((n, len(NUMERIC_NAMES)), np.float32)
    numeric[:, [FIRST, SECOND, snip]] = rng.normal(size=(n, 3))
    numeric[:, NUMERIC_NAMES.index("log_classes")] = math.log1p(10)
    numeric[:, NUMERIC_NAMES.index("proxy_available")] = 1.0
    # a low proxy: nothing learnt (as with real networks); else the proxy and the parameter count
    # explain half of the accuracy each
    y = np.where(numeric[:, snip] < -1, 0.1, 0.5 + 0.2 * np.tanh(numeric[:, snip]) + 0.2 * np.tanh(numeric[:, FIRST]))
    p = fit_predictor(numeric, None, y, ["g"] * n, FitConfig(**SMALL))
    blank = numeric.copy()
    blank[:, [i for i, name in enumerate(NUMERIC_NAMES) if name.startswith("proxy_")]] = MISSING
    blank[:, NUMERIC_NAMES.index("proxy_available")] = 0.0
    with_proxies, without = p.predict_rows(numeric).mean, p.predict_rows(blank).mean
    assert rank_metrics(with_proxies, y)["kendall_tau"] > 0.7
    # the members fitted with proxies would send every blanked row to "nothing learnt" (τ 0)
    assert rank_metrics(without, numeric[:, FIRST])["kendall_tau"] > 0.4
    # one row without proxies among rows with them gets what it gets alone
    mixed = numeric.copy()
    mixed[:5] = blank[:5]
    np.testing.assert_allclose(p.predict_rows(mixed).mean[:5], without[:5])
    np.testing.assert_allclose(p.predict_rows(mixed).mean[5:], with_proxies[5:])


def test_a_text_predictor_needs_the_texts():
    numeric, y = synthetic(60)
    with pytest.raises(UsageError):
        fit_predictor(numeric, None, y, ["g"] * 60, FitConfig(**{**SMALL, "use_text": True}))


@pytest.mark.parametrize("content", [None, "{}", "not json", '{"format": "einnas-predictor", "format_version": 1}'])
def test_load_refuses_what_is_not_a_predictor(tmp_path, content):
    folder = tmp_path / "bad"
    folder.mkdir()
    if content is not None:
        (folder / "meta.json").write_text(content)
        from safetensors.numpy import save_file

        save_file({"x": np.zeros(2, np.float32)}, str(folder / "model.safetensors"))
    with pytest.raises(ModelError):
        Predictor.load(folder)


def test_fit_never_looks_at_the_test_split():
    numeric, y = synthetic(260)
    data = as_dataset(numeric, y)
    poisoned = as_dataset(numeric, np.where(data.splits == "test", 1.0 - y, y))
    config = FitConfig(**SMALL)
    grid = ({}, {"depth": 2})
    a, b = fit(data, config, grid=grid), fit(poisoned, config, grid=grid)
    assert a.meta["selection"] == b.meta["selection"] and a.meta["config_chosen"] == b.meta["config_chosen"]
    np.testing.assert_array_equal(a.predict_rows(numeric)[0], b.predict_rows(numeric)[0])
    assert a.meta["heldout"]["synthetic"]["kendall_tau"] > 0.5 > b.meta["heldout"]["synthetic"]["kendall_tau"]
    assert a.meta["training"]["synthetic"]["test"] == int((data.splits == "test").sum())


def test_rank_is_a_percentile_of_the_training_predictions():
    numeric, y = synthetic(260)
    p = fit(as_dataset(numeric, y), FitConfig(**SMALL), grid=())
    expected = p.predict_rows(numeric).expected
    ranks = p.rank(expected)
    assert np.all((ranks >= 0) & (ranks <= 100))
    order = np.argsort(expected)
    assert np.all(np.diff(ranks[order]) >= -1e-9)  # monotone in the prediction
    assert ranks[order[-1]] > 90 and ranks[order[0]] < 10


def test_ranking_pairs_stay_within_a_dataset():
    numeric, y = synthetic(200)
    groups = np.where(np.arange(200) % 2 == 0, "a", "b")
    p = fit_predictor(numeric, None, y + np.where(groups == "a", 0.0, 0.05), groups, FitConfig(**SMALL))
    assert rank_metrics(p.predict_rows(numeric)[0], y)["kendall_tau"] > 0.6


def test_too_few_rows_is_a_usage_error():
    numeric, y = synthetic(5)
    with pytest.raises(UsageError):
        fit_predictor(numeric, None, y, ["g"] * 5, FitConfig(**SMALL))


def test_too_few_training_records_says_how_many_are_needed():
    from einnas.surrogate.predictor import fit

    numeric, y = synthetic(6)
    data = as_dataset(numeric, y)
    with pytest.raises(UsageError, match=r"too few successful training records \(\d+; need at least 8"):
        fit(data, FitConfig(**SMALL))


def _records(tmp_path, n=40, seed=4):
    from einnas.grammar import Limits, load_grammar, sample

    archs = sample(load_grammar(), n, seed=seed, input_shape=(1, 8, 8),
                   limits=Limits(max_params=20_000, max_activations=20_000))
    rows = []
    for a in archs:
        acc = 0.1 + 0.8 / (1 + math.exp(-(math.log(a.info.params) - 7)))
        rows.append({"arch": a.string, "archid": a.archid, "dataset": "digits", "ok": True, "val_acc": acc,
                     "input_shape": [1, 8, 8], "num_classes": 10, "budget": {"epochs": 1, "seconds": 5.0}})
    return archs, rows


def test_interface_fit_on_records_and_predict_graphs(tmp_path):
    """Predictor.fit(records) -> a new predictor; predict(graphs) -> one mean and std per graph."""
    from einnas.surrogate.features import DescriptionCache, describe_arch

    archs, rows = _records(tmp_path, n=30)
    base = fit_predictor(*synthetic(40)[:1], None, synthetic(40)[1], ["g"] * 40, FitConfig(**SMALL, use_proxies=False))
    refit = base.fit(rows)
    assert refit is not base and refit.config.members == base.config.members
    graphs = [describe_arch(a, (1, 8, 8), 10, DescriptionCache(None)) for a in archs[:7]]
    mean, std = refit.predict(graphs)
    assert mean.shape == std.shape == (7,) and np.all(std >= 0)


def test_cli_fit_and_eval_on_records(tmp_path, capsys, monkeypatch):
    """`surrogate fit` writes a predictor with held-out metrics; `surrogate eval` recomputes them."""
    from einnas.cli import main

    monkeypatch.setenv("EINNAS_CACHE_DIR", str(tmp_path / "cache"))
    archs, rows = _records(tmp_path)
    with open(tmp_path / "r.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        handle.write(json.dumps({"arch": archs[0].string, "archid": "failed000000", "dataset": "digits",
                                 "ok": False, "val_acc": None, "reason": "timeout"}) + "\n")
    out = tmp_path / "pred"
    assert main(["surrogate", "fit", str(tmp_path / "r.jsonl"), "-o", str(out), "--no-proxies", "--members", "2",
                 "--holdout", "0.3", "-q", "-f", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["training"]["digits"]["records"] == 40 and report["heldout"]["digits"]["n"] > 3
    meta = json.loads((out / "meta.json").read_text())
    assert meta["provenance"]["command"].startswith("einnas surrogate fit") and meta["holdout"] == 0.3
    assert meta["tasks"]["digits"]["epochs"] == 1 and meta["tasks"]["digits"]["input_shape"] == [1, 8, 8]
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
