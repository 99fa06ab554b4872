"""Model selection: choose a configuration on ``val``, refit on ``train + val``, report on ``test``.

:func:`fit` is what ``einnas surrogate fit`` runs. Rows of the ``test`` split are
used only for the final report, never for fitting or choosing. Besides the
ensemble, the fitted predictor's ``meta.json`` gets what ``score`` needs to say
what its number means: the training tasks, the training ranges (for the
out-of-distribution note) and the reference distribution of the rank score.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, replace
from typing import Sequence

import numpy as np

from einnas.errors import UsageError
from einnas.surrogate.metrics import evaluate
from einnas.surrogate.predictor import FitConfig, Predictor, fit_predictor
from einnas.surrogate.splits import SPLITS, Dataset

#: The configurations :func:`fit` chooses from by validation Kendall τ.
GRID = ({}, {"rank_weight": 1.0}, {"depth": 4})
TEXT_GRID = GRID
NUMERIC_GRID = GRID
_RANK_POINTS = 101


def fit(data: Dataset, base: FitConfig | None = None, grid: Sequence[dict] | None = None,
        meta: dict | None = None, log=None) -> Predictor:
    """Select a configuration on ``val`` rows, refit it on ``train`` + ``val``, report on ``test``."""
    base = base or FitConfig()
    train, val, test = (data.rows(data.splits == s) for s in SPLITS)
    if len(train.y) < 8:
        raise UsageError(f"too few successful training records ({len(train.y)}; need at least 8 after the "
                         "held-out and validation splits, so about 16 successful records: build more with "
                         "'einnas bench build --trials N' or lower --holdout)")
    selection = []
    if grid is None:
        grid = GRID
    candidates = [replace(base, **g) for g in grid] if grid else [base]
    best, best_tau = candidates[0], -math.inf
    if len(candidates) > 1 and len(val.y) >= 8:
        for cand in candidates:
            # the trees are chosen alone (blend 1); the blend weight is chosen for the final fit
            trial = fit_predictor(train.numeric, None, train.y, train.groups,
                                  replace(cand, members=3, blend=1.0, fallback=False), texts=train.texts())
            scores = evaluate(trial, val)
            taus = [s["kendall_tau"] for s in scores.values() if s["kendall_tau"] is not None]
            tau = float(np.mean(taus)) if taus else -math.inf
            selection.append({"config": _diff(cand, base), "val_kendall_tau": round(tau, 4)})
            if log:
                log(f"selection: {_diff(cand, base)} val tau {tau:.4f}")
            if tau > best_tau:
                best, best_tau = cand, tau
    fit_rows = data.rows(data.splits != "test")
    predictor = fit_predictor(fit_rows.numeric, None, fit_rows.y, fit_rows.groups, best, texts=fit_rows.texts(),
                              families=fit_rows.families, log=log)
    heldout = evaluate(predictor, test) if len(test.y) else {}
    predictor.meta.update(meta or {})
    predictor.meta.update({
        "config_chosen": _diff(best, base) or "base",
        "selection": selection, "heldout": heldout, "training": describe_training(data),
        "tasks": training_tasks(fit_rows), "ranges": training_ranges(fit_rows),
        "rank_reference": rank_reference(predictor, fit_rows),
    })
    return predictor


def _diff(config: FitConfig, base: FitConfig) -> dict:
    a, b = asdict(config), asdict(base)
    return {k: v for k, v in a.items() if b[k] != v}


def describe_training(data: Dataset) -> dict:
    """Datasets, budgets, families and sizes per split, for ``meta.json``."""
    out = {}
    for name in sorted(set(data.groups)):
        m = data.groups == name
        recs = [r for r, keep in zip(data.records, m) if keep]
        out[name] = {
            "records": int(m.sum()),
            **{s: int((data.splits[m] == s).sum()) for s in SPLITS},
            "families": dict(sorted(Counter(data.families[m].tolist()).items())),
            "budgets": sorted({json.dumps(r.get("budget", {}), sort_keys=True) for r in recs}),
            "input_shape": recs[0].get("input_shape") if recs else None,
            "val_acc_range": [round(float(data.y[m].min()), 4), round(float(data.y[m].max()), 4)],
        }
    return out


def training_tasks(data: Dataset) -> dict:
    """The most common task of each dataset (largest dataset first): what ``score`` predicts for."""
    from einnas.surrogate.task import Task

    counts = Counter(data.groups.tolist())
    out = {}
    for name, _ in counts.most_common():
        tasks = Counter(Task.of_record(r) for r, g in zip(data.records, data.groups) if g == name)
        out[name] = tasks.most_common(1)[0][0].as_dict()
    return out


def training_ranges(data: Dataset) -> dict:
    """What the out-of-distribution note compares against: feature ranges, op types and families seen."""
    from einnas.surrogate.features import NUMERIC_NAMES

    graphs = [g for g in data.graphs if g is not None]
    ops = sorted(set().union(*(g.op_types() for g in graphs))) if graphs else []
    families = sorted(set().union(*(g.families() for g in graphs))) if graphs else []
    lo, hi = data.numeric.min(0), data.numeric.max(0)
    return {"op_types": ops, "op_families": families,
            "numeric_min": {n: round(float(v), 4) for n, v in zip(NUMERIC_NAMES, lo)},
            "numeric_max": {n: round(float(v), 4) for n, v in zip(NUMERIC_NAMES, hi)}}


def rank_reference(predictor: Predictor, data: Dataset) -> dict:
    """Quantiles of the predicted ``expected`` accuracy of the training rows, per dataset and overall."""
    expected = predictor.predict_rows(data.numeric, data.texts()).expected
    q = np.linspace(0, 100, _RANK_POINTS)
    out = {"all": [round(float(v), 5) for v in np.percentile(expected, q)]}
    for name in sorted(set(data.groups)):
        m = data.groups == name
        out[name] = [round(float(v), 5) for v in np.percentile(expected[m], q)]
    return out
