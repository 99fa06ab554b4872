"""Metrics of a ranking: Kendall τ, Spearman ρ, and their tables per dataset.

:func:`rank_metrics` is the one definition every report uses (``surrogate fit``,
``surrogate eval``, ``benchmarks/bench_predictor.py``); τ is τ-b (ties allowed,
as the gated predictor ties networks that learn nothing).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def rank_metrics(pred: np.ndarray, y: np.ndarray, chance: float | None = None) -> dict:
    """Kendall τ (τ-b) and Spearman ρ; with ``chance``, also τ among records above chance."""
    from scipy.stats import kendalltau, spearmanr

    pred, y = np.asarray(pred, float), np.asarray(y, float)
    out = {"n": int(len(y))}
    if len(y) < 3 or np.ptp(y) == 0:
        return {**out, "kendall_tau": None, "spearman_rho": None}
    if np.ptp(pred) == 0:  # a constant prediction ranks nothing
        return {**out, "kendall_tau": 0.0, "spearman_rho": 0.0}
    tau = kendalltau(pred, y).statistic
    rho = spearmanr(pred, y).statistic
    out["kendall_tau"] = None if np.isnan(tau) else round(float(tau), 4)
    out["spearman_rho"] = None if np.isnan(rho) else round(float(rho), 4)
    if chance is not None:
        above = y > chance + 0.05
        out["n_above_chance"] = int(above.sum())
        if above.sum() >= 3 and np.ptp(pred[above]) > 0:
            out["kendall_tau_above_chance"] = round(float(kendalltau(pred[above], y[above]).statistic), 4)
    return out


def evaluate(predictor, data) -> dict:
    """Rank metrics per dataset of a :class:`~einnas.surrogate.splits.Dataset`."""
    mean, _ = predictor.predict_rows(data.numeric, data.texts())
    out = {}
    for name in sorted(set(data.groups)):
        m = data.groups == name
        out[name] = rank_metrics(mean[m], data.y[m], float(data.chance[m][0]))
    return out


def evaluate_records(predictor, records: Sequence[dict], encoder=None, cache=None,
                     split: str = "test", log=None, proxies=None) -> list[dict]:
    """One row per dataset: τ, ρ (and the parameter-count baseline) on the chosen split."""
    from einnas.surrogate.features import NUMERIC_NAMES
    from einnas.surrogate.splits import featurize

    holdout = float(predictor.meta.get("holdout", 0.2))
    data = featurize(records, None, cache, holdout=holdout, log=log, proxies=proxies)
    if split == "test":
        data = data.rows(data.splits == "test")
    fitted_on = set(predictor.meta.get("training", {}))
    mean, _ = predictor.predict_rows(data.numeric, data.texts())
    params = data.numeric[:, list(NUMERIC_NAMES).index("log_params")]
    rows = []
    for name in sorted(set(data.groups)):
        m = data.groups == name
        chance = float(data.chance[m][0])
        metrics = rank_metrics(mean[m], data.y[m], chance)
        base = rank_metrics(params[m], data.y[m])
        note = "zero-shot (dataset not in training)" if name not in fitted_on else (
            "includes rows used for fitting" if split == "all" else "held out")
        rows.append({"dataset": name, "split": split, **metrics, "params_kendall_tau": base["kendall_tau"],
                     "note": note})
    return rows
