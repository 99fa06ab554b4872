"""The blend of the trees with the proxy committee: task percentiles, inner-CV weight, fallbacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from einnas.surrogate.blend import COMMITTEE, blend, choose_weight, committee_signs, reference, task_keys
from einnas.surrogate.features import MISSING, NUMERIC_NAMES
from einnas.surrogate.predictor import FitConfig, Predictor, fit_predictor

SMALL = dict(members=1, trees=30, gate_trees=0, use_text=False)
COL = {n: NUMERIC_NAMES.index(n) for n in NUMERIC_NAMES}


def rows(n: int, seed: int, input_numel: float = 4.2, train_size: float = 7.0):
    """Rows of one task; accuracy rises with SNIP; every other feature is noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NUMERIC_NAMES))).astype(np.float32)
    x[:, COL["log_classes"]] = x[:, COL["task_log_classes"]] = math.log1p(10)
    x[:, COL["task_log_input_numel"]] = input_numel
    x[:, COL["task_log_train_size"]] = train_size
    x[:, COL["proxy_available"]] = 1.0
    y = 0.3 + 0.5 / (1 + np.exp(-x[:, COL["proxy_snip"]])) + rng.normal(0, 0.01, n)
    return x, y


def test_task_percentiles_are_invariant_to_a_monotone_rescaling_of_a_feature():
    x, y = rows(200, 0)
    model = np.random.default_rng(1).normal(size=200)
    signs = committee_signs(x, y, np.array(["t"] * 200))
    ref = reference(x, y, model, 0.0, signs)
    z = x.copy()
    for name in COMMITTEE:  # exp and an affine map: monotone, scale and offset change
        z[:, COL[name]] = np.exp(0.5 * x[:, COL[name]]) * 3.0 + 7.0
    ref_z = reference(z, y, model, 0.0, committee_signs(z, y, np.array(["t"] * 200)))
    test_x, _ = rows(50, 2)
    test_z = test_x.copy()
    for name in COMMITTEE:
        test_z[:, COL[name]] = np.exp(0.5 * test_x[:, COL[name]]) * 3.0 + 7.0
    a, b = blend(ref, test_x, model[:50]), blend(ref_z, test_z, model[:50])
    np.testing.assert_allclose(a, b, atol=0.02)  # 101 reference points: interpolation differs slightly
    assert kendalltau(a, b).statistic > 0.95


def test_weight_zero_ranks_by_the_committee_and_stays_in_accuracy_units():
    x, y = rows(300, 0)
    ref = reference(x, y, np.zeros(300), 0.0, committee_signs(x, y, np.array(["t"] * 300)))
    assert ref["signs"]["proxy_snip"] == 1.0
    test_x, test_y = rows(100, 3)
    # make the committee say only SNIP: the other members are missing for these rows
    for name in COMMITTEE:
        if name != "proxy_snip":
            test_x[:, COL[name]] = MISSING
    out = blend(ref, test_x, np.random.default_rng(0).normal(size=100))
    assert kendalltau(out, test_x[:, COL["proxy_snip"]]).statistic > 0.99
    assert y.min() - 1e-6 <= out.min() and out.max() <= y.max() + 1e-6


def test_a_task_never_seen_uses_the_pooled_reference():
    x, y = rows(200, 0)
    ref = reference(x, y, np.zeros(200), 0.0, {n: 1.0 for n in COMMITTEE})
    new, _ = rows(40, 5, input_numel=9.9)  # another input size
    assert task_keys(new)[0] not in ref["tasks"]
    out = blend(ref, new, np.zeros(40))
    assert np.all(np.isfinite(out)) and np.ptp(out) > 0


def test_one_family_falls_back_to_the_trees_alone():
    x, y = rows(120, 0)
    groups = np.array(["t"] * 120)
    assert choose_weight(x, y, groups, np.array(["a"] * 120), FitConfig(**SMALL), fit_predictor) == (1.0, {})
    auto = fit_predictor(x, None, y, groups, FitConfig(**SMALL, blend=None), families=["a"] * 120)
    trees = fit_predictor(x, None, y, groups, FitConfig(**SMALL, blend=1.0))
    assert "blend" not in auto.meta and auto.meta["blend_selection"]["weight"] == 1.0
    np.testing.assert_array_equal(auto.predict_rows(x).mean, trees.predict_rows(x).mean)


def test_inner_cv_prefers_the_committee_when_the_trees_do_not_transfer(tmp_path):
    """Within each family a graph feature tracks accuracy, with a different sign per family:
    the trees learn it, it misleads on a held-out family; SNIP ranks every family."""
    parts, families = [], []
    for k, fam in enumerate(["a", "b", "c"]):
        x, y = rows(90, k)
        x[:, COL["log_macs"]] = (1 if k % 2 else -1) * (y * 10) + np.random.default_rng(k).normal(0, 0.1, 90)
        x[:, COL["proxy_snip"]] += np.random.default_rng(10 + k).normal(0, 1.0, 90)  # a noisy but honest proxy
        parts.append((x, y))
        families += [fam] * 90
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    groups = np.array(["t"] * len(y))
    p = fit_predictor(x, None, y, groups, FitConfig(**SMALL, blend=None), families=families)
    chosen = p.meta["blend_selection"]
    assert chosen["weight"] < 1.0
    assert max(chosen["inner_lofo_tau"].values()) > chosen["inner_lofo_tau"]["1"]
    # the blend is part of the saved predictor
    p.save(tmp_path / "p")
    again = Predictor.load(tmp_path / "p")
    np.testing.assert_allclose(again.predict_rows(x).mean, p.predict_rows(x).mean, rtol=1e-6)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_fixed_weight_is_used_as_given(weight):
    """Weight 0 is the committee alone (the trees, here from two seeds, do not matter); 0.5 mixes them in."""
    x, y = rows(150, 0)
    fits = [fit_predictor(x, None, y, np.array(["t"] * 150), FitConfig(**SMALL, blend=weight, seed=s),
                          families=["a"] * 150) for s in (0, 1)]
    assert all(p.meta["blend"]["weight"] == weight for p in fits)
    a, b = (p.predict_rows(x).mean for p in fits)
    if weight == 0.0:
        np.testing.assert_allclose(a, b)
    else:
        assert not np.allclose(a, b)
    assert kendalltau(a, y).statistic > 0.3


@pytest.mark.parametrize("value", ["2", "-0.1", "half"])
def test_cli_refuses_a_blend_weight_outside_0_1(tmp_path, capsys, value):
    from einnas.cli import main

    records = tmp_path / "r.jsonl"
    records.write_text("")
    assert main(["surrogate", "fit", str(records), "-o", str(tmp_path / "p"), "--blend", value, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--blend" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()
