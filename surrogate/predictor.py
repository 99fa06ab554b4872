"""The surrogate predictor: a bagged ensemble of boosted trees with a ranking objective.

Features (``features.py``): the graph's own figures, the task, zero-cost proxies
(when computed) and, optionally, the score of the learned text head
(``texthead.py``). Each ensemble member is fitted on a bootstrap resample and
holds two boosted tree models (``boosting.py``):

* a **gate**, a classifier of "does the network learn at all" (accuracy above
  chance + ``margin``): most random networks learn nothing in the search budget,
  and their accuracies differ only by noise;
* a **ranking regressor** trained on pairwise logistic ranking loss (pairs from
  one dataset only) + squared error, so its output ranks like the accuracy and
  stays in accuracy units.

With proxy features, every member has a **fallback** twin fitted on the same rows
with the proxies blanked: rows that have no proxies (an ONNX file the converter
cannot handle, ``--no-proxies``) are predicted by the twins, so the main members
never spend splits on telling "no proxy" apart from a low one.

The prediction is chance accuracy (1 / classes) when the members' mean
probability of learning is below one half, else the members' mean accuracy; the
uncertainty is the standard deviation of the members' own gated predictions.

Related modules: ``splits.py`` (records and splits), ``metrics.py``,
``selection.py`` (model selection: :func:`fit`), ``persistence.py`` (folders).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from einnas.errors import UsageError
from einnas.surrogate.boosting import Trees, boost, gate_residual, rank_residual
from einnas.surrogate.interface import BasePredictor, Prediction
from einnas.surrogate.metrics import evaluate, evaluate_records, rank_metrics  # noqa: F401  (public names)
from einnas.surrogate.persistence import FORMAT, FORMAT_VERSION, provenance, save_atomic  # noqa: F401
from einnas.surrogate.splits import SPLITS, Dataset, featurize, load_records, split_of, usable  # noqa: F401


@dataclass
class FitConfig:
    """Hyper-parameters of one fit (the grid of :func:`~einnas.surrogate.selection.fit` varies some)."""

    use_text: bool = False  # the learned text head's score as a feature (texthead.py)
    use_proxies: bool = True  # zero-cost proxy features, where the records have them
    use_task: bool = True  # task features (input shape, classes, training-set size, budget)
    members: int = 5  # bootstrap members of the ensemble
    trees: int = 150  # boosting rounds of the ranking regressor
    gate_trees: int = 75  # boosting rounds of the "learns at all" classifier (0: no gate)
    depth: int = 6
    learning_rate: float = 0.1
    subsample: float = 0.8  # rows per tree (stochastic boosting)
    rank_weight: float = 3.0  # weight of the pairwise ranking term against the squared error
    pairs: int = 8192  # random same-dataset pairs per boosting round
    temperature: float = 0.05  # accuracy gap that counts as one logit in the ranking term
    margin: float = 0.05  # accuracies within this of chance count as "learns nothing"
    # also fit each member's twin without proxies, for rows that have none (off: quick inner fits)
    fallback: bool = True
    # weight of the trees in a blend with the proxy committee (blend.py): 1 = the trees alone (the
    # default: with full-size trees the blend lost on every held-out measure, pretrained/README.md);
    # None: chosen by inner leave-one-family-out cross-validation when the fit is given families
    blend: float | None = 1.0
    seed: int = 0


def columns(config: FitConfig) -> list[str]:
    """The feature names a configuration reads (a subset of ``NUMERIC_NAMES``)."""
    from einnas.surrogate.features import GRAPH_NAMES, PROXY_FEATURES, TASK_NAMES

    return list(GRAPH_NAMES) + (list(TASK_NAMES) if config.use_task else []) \
        + (list(PROXY_FEATURES) if config.use_proxies else [])


def _select(numeric: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Columns ``names`` of a ``NUMERIC_NAMES`` table (unknown names -> MISSING)."""
    from einnas.surrogate.features import MISSING, NUMERIC_NAMES

    index = {n: i for i, n in enumerate(NUMERIC_NAMES)}
    out = np.full((len(numeric), len(names)), MISSING, dtype=np.float32)
    for k, name in enumerate(names):
        if name in index:
            out[:, k] = numeric[:, index[name]]
    return out


def _chance(numeric: np.ndarray) -> np.ndarray:
    """1 / classes per row, from the graph's output width (the ``log_classes`` feature)."""
    from einnas.surrogate.features import NUMERIC_NAMES

    classes = np.expm1(numeric[:, NUMERIC_NAMES.index("log_classes")])
    return 1.0 / np.maximum(np.round(classes), 1.0)


def _blank_proxies(x: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """A copy of ``x`` as rows without proxies look (``proxy_available`` 0, the proxies MISSING)."""
    from einnas.surrogate.features import MISSING

    x = x.copy()
    for k, name in enumerate(names):
        if name.startswith("proxy_"):
            x[:, k] = 0.0 if name == "proxy_available" else MISSING
    return x


def _no_proxies(x: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Rows of ``x`` (columns ``names``) whose proxies were not computed."""
    if "proxy_available" not in names:
        return np.zeros(len(x), bool)
    return x[:, list(names).index("proxy_available")] < 0.5


class Predictor(BasePredictor):
    """A fitted ensemble (see the module docstring); load one with :meth:`load`."""

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict):
        self.tensors = tensors
        self.meta = meta
        self.config = FitConfig(**{k: v for k, v in meta["config"].items() if k in FitConfig.__dataclass_fields__})
        self.names = list(meta["features"]["numeric"])
        self._members = [self._member(f"m{m}") for m in range(meta["members"])]
        # fallback twins for rows without proxies (absent in predictors fitted without proxies)
        self._fallback = [self._member(f"b{m}") for m in range(meta["members"])] \
            if "b0.reg.roots" in tensors else None

    def _member(self, prefix: str):
        gate = Trees.from_tensors(self.tensors, f"{prefix}.gate") if f"{prefix}.gate.roots" in self.tensors else None
        return gate, Trees.from_tensors(self.tensors, f"{prefix}.reg")

    # -- the interface --
    def predict(self, graphs: Sequence, tasks: Sequence | None = None, proxies: Sequence | None = None) -> Prediction:
        from einnas.surrogate.features import feature_table

        numeric, _ = feature_table(graphs, tasks=tasks, proxies=proxies)
        return self.predict_rows(numeric, [g.text for g in graphs] if self.config.use_text else None)

    def fit(self, records: Sequence[dict], cache=None, proxies=None, **changes) -> "Predictor":
        from dataclasses import replace

        data = featurize(records, None, cache, holdout=0.0, proxies=proxies)
        return fit_predictor(data.numeric, None, data.y, data.groups, replace(self.config, **changes),
                             texts=data.texts(), families=data.families)

    def ranges(self) -> dict:
        return self.meta.get("ranges", {})

    def tasks(self) -> dict:
        from einnas.surrogate.task import Task

        return {name: Task.from_dict(t) for name, t in self.meta.get("tasks", {}).items()}

    def rank(self, expected: np.ndarray, task=None) -> np.ndarray:
        table = self.meta.get("rank_reference", {})
        name = getattr(task, "name", None)
        ref = table.get(name) or table.get("all")
        if not ref:
            return np.full(len(np.atleast_1d(expected)), np.nan)
        q = np.linspace(0, 100, len(ref))
        return np.interp(np.atleast_1d(expected), np.asarray(ref), q)

    # -- rows --
    def member_predictions(self, numeric: np.ndarray, texts: Sequence[str] | None = None):
        """``(members, n)`` probabilities that the network learns, and regressor accuracies."""
        x = self._inputs(np.atleast_2d(numeric), texts)
        learns, acc = self._run(self._members, x)
        missing = _no_proxies(x, self.names)
        if self._fallback is not None and missing.any():
            fallback = self._run(self._fallback, x[missing])
            learns[:, missing], acc[:, missing] = fallback
        return learns, acc

    @staticmethod
    def _run(members, x: np.ndarray):
        learns, acc = [], []
        for gate, reg in members:
            acc.append(reg(x))
            learns.append(np.ones(len(x)) if gate is None else 1.0 / (1.0 + np.exp(-np.clip(gate(x), -30, 30))))
        return np.stack(learns), np.stack(acc)

    def predict_rows(self, numeric: np.ndarray, texts: Sequence[str] | None = None) -> Prediction:
        """Predictions for rows of a ``NUMERIC_NAMES`` table (and their description texts, for the text head)."""
        numeric = np.atleast_2d(numeric)
        learns, acc = self.member_predictions(numeric, texts)
        chance = _chance(numeric)
        acc = np.maximum(acc, chance)
        p = learns.mean(0)
        mean = np.where(p < 0.5, chance, acc.mean(0))
        std = np.where(learns < 0.5, chance, acc).std(0)
        expected = p * acc.mean(0) + (1 - p) * chance
        ref = self.meta.get("blend")
        if ref and ref.get("weight", 1.0) < 1.0:
            from einnas.surrogate.blend import blend

            blended = blend(ref, numeric, expected)
            return Prediction(blended, std, blended)
        return Prediction(mean, std, expected)

    def _inputs(self, numeric: np.ndarray, texts: Sequence[str] | None) -> np.ndarray:
        x = _select(numeric, self.names)
        if self.config.use_text:
            if texts is None:
                raise UsageError("this predictor reads description texts (its text head); pass them")
            from einnas.surrogate.texthead import head_scores, vectorize

            x = np.concatenate([x, head_scores(self.tensors["text_head"], vectorize(texts))[:, None]], axis=1)
        return x.astype(np.float32)

    # -- persistence --
    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``meta.json`` into ``folder`` (created)."""
        from einnas.surrogate.persistence import save

        return save(self.tensors, self.meta, folder)

    @classmethod
    def load(cls, folder: str | Path) -> "Predictor":
        """Read a predictor folder; :class:`ModelError` when it is missing or not one."""
        from einnas.errors import ModelError
        from einnas.surrogate.persistence import load

        tensors, meta = load(folder)
        try:
            return cls(tensors, meta)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise ModelError(f"predictor {str(folder)!r}: incomplete ({error})") from None


def _fit_member(prefix: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray, learns: np.ndarray,
                config: FitConfig, rng: np.random.Generator) -> dict:
    """One member's tensors: the ranking regressor and (where both outcomes occur) the gate."""
    reg = boost(x, rank_residual(y, groups, config, rng), config.trees, config, float(y.mean()), rng)
    tensors = reg.tensors(f"{prefix}.reg")
    share = float(np.clip(learns.mean(), 0.01, 0.99))
    if config.gate_trees > 0 and 0 < learns.sum() < len(learns):
        gate = boost(x, gate_residual(learns.astype(float)), config.gate_trees, config,
                     math.log(share / (1 - share)), rng)
        tensors.update(gate.tensors(f"{prefix}.gate"))
    return tensors


def fit_predictor(numeric: np.ndarray, text, y: np.ndarray, groups: Sequence[str], config: FitConfig,
                  meta: dict | None = None, texts: Sequence[str] | None = None,
                  families: Sequence[str] | None = None, log=None) -> Predictor:
    """Fit one ensemble on rows of a ``NUMERIC_NAMES`` table (no selection, no evaluation).

    ``text`` is ignored (kept for callers of the MiniLM-era signature); ``texts``
    are the description texts the text head reads when ``config.use_text``.
    ``families`` (one per row) lets ``config.blend=None`` choose the blend weight by
    inner leave-one-family-out cross-validation (``blend.py``).
    """
    from einnas.surrogate.texthead import DIM, fit_head, out_of_fold, vectorize

    if len(y) < 8:
        raise UsageError(f"too few records to fit a predictor ({len(y)}; need at least 8 successful ones)")
    groups = np.asarray(groups)
    y = np.asarray(y, dtype=np.float64)
    chance = _chance(numeric)
    learns = y > chance + config.margin
    # Accuracies near chance differ by noise only (which class a collapsed network predicts):
    # the regressor sees them as chance, so it spends no effort ordering them.
    target = np.where(learns, y, chance)
    names = columns(config)
    x = _select(numeric, names)
    tensors: dict[str, np.ndarray] = {}
    if config.use_text:
        if texts is None:
            raise UsageError("use_text needs the description texts")
        vectors = vectorize(texts)
        tensors["text_head"] = fit_head(vectors, target, groups, seed=config.seed)
        x = np.concatenate([x, out_of_fold(vectors, target, groups, seed=config.seed)[:, None]], axis=1)
    x = x.astype(np.float32)
    rng = np.random.default_rng(config.seed)
    for m in range(config.members):
        rows = rng.integers(0, len(y), len(y)) if config.members > 1 else np.arange(len(y))
        xm, ym, gm, lm = x[rows], target[rows], groups[rows], learns[rows]
        tensors.update(_fit_member(f"m{m}", xm, ym, gm, lm, config, rng))
        if config.use_proxies and config.fallback:
            tensors.update(_fit_member(f"b{m}", _blank_proxies(xm, names), ym, gm, lm, config, rng))
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "members": config.members,
        "config": asdict(config),
        "features": {"numeric": names, "text_head": DIM if config.use_text else None},
        **(meta or {}),
    }
    predictor = Predictor(tensors, meta)
    weight, scores = 1.0, {}
    if config.blend is not None:
        weight = float(config.blend)
    elif families is not None and config.use_proxies and not config.use_text:
        from einnas.surrogate.blend import choose_weight

        weight, scores = choose_weight(numeric, y, groups, families, config, fit_predictor, log=log)
    if weight < 1.0:
        from einnas.surrogate.blend import committee_signs, reference

        model = predictor.predict_rows(numeric).expected
        predictor.meta["blend"] = reference(numeric, y, model, weight, committee_signs(numeric, y, groups))
    predictor.meta["blend_selection"] = {"weight": weight, "inner_lofo_tau": {f"{w:g}": round(t, 4)
                                                                            for w, t in scores.items()}}
    return predictor


def fit(data: Dataset, base: FitConfig | None = None, grid: Sequence[dict] | None = None,
        meta: dict | None = None, log=None) -> Predictor:
    """Model selection and the final fit: see :func:`einnas.surrogate.selection.fit`."""
    from einnas.surrogate.selection import fit as select_and_fit

    return select_and_fit(data, base, grid, meta, log)
