"""A blend of the fitted trees with a committee of zero-cost proxies, weighted by inner cross-validation.

Why: on a family of architectures the predictor never saw, boosted trees over graph
features extrapolate badly, while a few zero-cost proxies (SNIP, grad-norm,
synflow) and the parameter count rank every family about as well as they rank the
training ones. The blend puts the two on one scale and mixes them:

* every quantity becomes a **percentile within its task** (the records of the same
  input size, classes and training-set size), read from reference quantiles of
  the training rows stored in the predictor, so one file is scored without its
  neighbours; a task the predictor never saw uses the pooled reference;
* the **committee** is the mean of the signed task percentiles of
  :data:`COMMITTEE` (signs from the training rows; a proxy that is missing for a
  row is left out of its mean);
* the blended percentile ``b = w·model + (1 − w)·committee`` is mapped back to an
  accuracy through the task's quantiles of training accuracies, so the prediction
  stays in accuracy units and ranks like ``b``.

The weight ``w`` is chosen by **inner leave-one-family-out cross-validation on the
training rows only** (:func:`choose_weight`): for each training family, small fits
on the other families rank it, and the ``w`` of :data:`WEIGHTS` with the best mean
Kendall τ over families wins. With fewer than two families there is nothing to
cross-validate and ``w`` is 1 (the trees alone, as without a blend).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

#: Features of the committee (a subset of ``features.NUMERIC_NAMES``).
COMMITTEE = ("proxy_snip", "proxy_grad_norm", "proxy_synflow", "log_params")
#: Candidate weights of the trees in the blend.
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Task features that identify a task's reference quantiles.
TASK_KEY = ("task_log_input_numel", "task_log_classes", "task_log_train_size")
_POINTS = np.linspace(0.0, 1.0, 101)
MIN_FAMILY_ROWS = 30


def task_keys(numeric: np.ndarray) -> list[str]:
    """The task of each row of a ``NUMERIC_NAMES`` table, as a short string of its task features."""
    from einnas.surrogate.features import NUMERIC_NAMES

    cols = [NUMERIC_NAMES.index(n) for n in TASK_KEY]
    return [",".join(f"{v:.3f}" for v in row) for row in np.asarray(numeric)[:, cols]]


def _column(numeric: np.ndarray, name: str) -> np.ndarray:
    from einnas.surrogate.features import NUMERIC_NAMES

    return np.asarray(numeric, dtype=np.float64)[:, NUMERIC_NAMES.index(name)]


def _quantiles(values: np.ndarray) -> list[float]:
    from einnas.surrogate.features import MISSING

    values = values[values > MISSING / 2]
    return [round(float(v), 6) for v in np.quantile(values, _POINTS)] if len(values) else []


def _percentile(values: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Percentile in [0, 1] of ``values`` against reference ``quantiles`` (piecewise linear)."""
    q = np.asarray(quantiles, dtype=np.float64)
    # np.interp wants increasing reference points: a flat run (many tied training values)
    # is tilted by a negligible amount, so values inside it keep one percentile.
    q = q + np.arange(len(q)) * 1e-9 * max(1.0, float(np.abs(q).max()))
    return np.interp(values, q, _POINTS, left=0.0, right=1.0)


def reference(numeric: np.ndarray, y: np.ndarray, model: np.ndarray, weight: float, signs: dict) -> dict:
    """What :func:`blend` needs at prediction time, for ``meta.json``: per task and pooled quantiles."""
    keys = np.array(task_keys(numeric))

    def table(rows):
        out = {"model": _quantiles(model[rows]), "accuracy": _quantiles(y[rows])}
        for name in COMMITTEE:
            out[name] = _quantiles(_column(numeric, name)[rows])
        return out

    tasks = {k: table(keys == k) for k in sorted(set(keys)) if (keys == k).sum() >= 10}
    return {"weight": float(weight), "signs": {k: float(v) for k, v in signs.items()},
            "tasks": tasks, "all": table(np.ones(len(y), bool))}


def committee_signs(numeric: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict:
    """+1 or −1 per committee feature: the sign of its mean within-dataset Kendall τ with accuracy."""
    from scipy.stats import kendalltau

    from einnas.surrogate.features import MISSING

    out = {}
    for name in COMMITTEE:
        col, taus = _column(numeric, name), []
        for g in np.unique(groups):
            m = (groups == g) & (col > MISSING / 2)
            if m.sum() >= 3 and np.ptp(col[m]) > 0 and np.ptp(y[m]) > 0:
                taus.append(kendalltau(col[m], y[m]).statistic)
        out[name] = -1.0 if taus and np.nanmean(taus) < 0 else 1.0
    return out


def blend(ref: dict, numeric: np.ndarray, model: np.ndarray, weight: float | None = None) -> np.ndarray:
    """Blended accuracy of rows (``model``: the trees' expected accuracy of each row)."""
    from einnas.surrogate.features import MISSING

    w = ref["weight"] if weight is None else weight
    keys = task_keys(numeric)
    out = np.empty(len(model))
    for key in set(keys):
        rows = np.array([k == key for k in keys])
        table = ref["tasks"].get(key) or ref["all"]
        score = _percentile(model[rows], table["model"]) if table["model"] else np.full(rows.sum(), 0.5)
        if w < 1.0:
            total, count = np.zeros(rows.sum()), np.zeros(rows.sum())
            for name in COMMITTEE:
                if not table.get(name):
                    continue
                col = _column(numeric, name)[rows]
                ok = col > MISSING / 2
                pct = _percentile(col, table[name])
                total += np.where(ok, pct if ref["signs"].get(name, 1.0) > 0 else 1.0 - pct, 0.0)
                count += ok
            committee = np.where(count > 0, total / np.maximum(count, 1), 0.5)
            score = w * score + (1.0 - w) * committee
        acc = table["accuracy"]
        out[rows] = np.interp(score, _POINTS, acc) if acc else score
    return out


def _taus(score: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float | None:
    from scipy.stats import kendalltau

    taus = []
    for g in np.unique(groups):
        m = groups == g
        if m.sum() >= MIN_FAMILY_ROWS and np.ptp(y[m]) > 0 and np.ptp(score[m]) > 0:
            taus.append(kendalltau(score[m], y[m]).statistic)
    return float(np.mean(taus)) if taus else None


def choose_weight(numeric: np.ndarray, y: np.ndarray, groups: np.ndarray, families: np.ndarray, config,
                  fit, log=None) -> tuple[float, dict]:
    """``(w, {w: mean τ})`` by leave-one-family-out over the training families (``fit``: fit_predictor)."""
    families = np.asarray(families)
    names = [f for f in np.unique(families) if (families == f).sum() >= MIN_FAMILY_ROWS]
    if len(names) < 2:
        return 1.0, {}
    small = replace(config, members=1, trees=max(20, config.trees // 3), gate_trees=max(10, config.gate_trees // 3),
                    blend=1.0, fallback=False)
    scores = {w: [] for w in WEIGHTS}
    for fam in names:
        out = families == fam
        rows = np.flatnonzero(~out)
        inner = fit(numeric[rows], None, y[rows], groups[rows], small)
        model_fit = inner.predict_rows(numeric[rows]).expected
        signs = committee_signs(numeric[rows], y[rows], groups[rows])
        ref = reference(numeric[rows], y[rows], model_fit, 1.0, signs)
        model_out = inner.predict_rows(numeric[out]).expected
        for w in WEIGHTS:
            tau = _taus(blend(ref, numeric[out], model_out, w), y[out], groups[out])
            if tau is not None:
                scores[w].append(tau)
        if log:
            log(f"blend: held-out family {fam}: " + ", ".join(f"w {w:g} tau {scores[w][-1]:.3f}"
                                                              for w in WEIGHTS if scores[w]))
    means = {w: float(np.mean(v)) for w, v in scores.items() if v}
    if not means:
        return 1.0, {}
    best = max(means, key=lambda w: (round(means[w], 4), w))  # ties: more weight on the trees
    return best, means
