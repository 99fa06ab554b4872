"""The surrogate predictor: a bagged ensemble of boosted trees with a ranking objective.

Features (``features.py``): the numeric figures of the ONNX graph and, optionally,
the MiniLM vector of its description reduced by PCA (fitted on the training rows).
Each ensemble member is fitted on a bootstrap resample and holds two boosted tree
models (gradient boosting over scikit-learn regression trees, stored as plain
arrays):

* a **gate**, a classifier of "does the network learn at all" (accuracy above
  chance + ``margin``): on einspace most random networks learn nothing in the
  search budget, and their accuracies differ only by noise;
* a **ranking regressor** trained on the negative gradient of

      rank_weight * pairwise logistic ranking loss (pairs from one dataset only)
      + squared error to the accuracy / 2,

  so its output ranks like the accuracy and stays in accuracy units.

The prediction is chance accuracy (1 / classes, read from the graph's output) when
the members' mean probability of learning is below one half, else the members'
mean accuracy; the uncertainty is the standard deviation of the members' own
(gated) predictions. Tied predictions at chance are deliberate: the predictor has
nothing to order networks that learn nothing.

Honest evaluation: :func:`split_of` assigns every architecture, by a hash of its
archid, to ``test`` (held out: never used for fitting or model selection),
``val`` (model selection) or ``train``. :func:`fit` chooses among a small grid of
configurations by validation Kendall τ, refits the choice on train + val and
reports the held-out metrics it never looked at before.

A fitted predictor is a folder: ``model.safetensors`` (tree arrays and the text
projection) and ``meta.json`` (feature spec, encoder spec, training data,
metrics, command, seed, date). No pickle.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from einnas.errors import ModelError, UsageError

FORMAT = "einnas-predictor"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
#: Accuracies this close count as a tie in the ranking loss and in "above chance".
_TIE = 0.005


# --- splits and records -------------------------------------------------------------------------


def split_of(archid: str, holdout: float = 0.2, val: float = 0.15, salt: str = "einnas-split-v1") -> str:
    """``test`` for a ``holdout`` share of archids, ``val`` for a ``val`` share of the rest, else ``train``."""
    digest = hashlib.blake2b(f"{salt}:{archid}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest[:4], "big") / 2**32
    if u < holdout:
        return "test"
    v = int.from_bytes(digest[4:], "big") / 2**32
    return "val" if v < val else "train"


def usable(records: Sequence[dict]) -> list[dict]:
    """Successful records with an accuracy, one per (dataset, archid) (the first kept)."""
    seen, out = set(), []
    for r in records:
        if not r.get("ok") or r.get("val_acc") is None:
            continue
        key = (r.get("dataset"), r["archid"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def graph_records(records: Sequence[dict], cache=None, grammar=None, log=None) -> tuple[list, list[dict]]:
    """Describe every record's architecture (cached); records that cannot be exported are dropped."""
    from einnas.errors import EinnasError
    from einnas.surrogate.features import describe_arch

    from einnas.surrogate.features import describe_file

    graphs, kept = [], []
    for i, r in enumerate(records):
        try:
            if "onnx" in r:  # a record of an ONNX-Bench-style folder
                graphs.append(describe_file(r["onnx"], key=r["archid"]))
            else:
                graphs.append(describe_arch(r["arch"], r["input_shape"], r["num_classes"], cache, grammar))
        except EinnasError as error:
            if log:
                log(f"skipped {r['archid']}: {error}")
            continue
        kept.append(r)
        if log and (i + 1) % 200 == 0:
            log(f"described {i + 1}/{len(records)}")
    return graphs, kept


# --- metrics ----------------------------------------------------------------------------------------


def rank_metrics(pred: np.ndarray, y: np.ndarray, chance: float | None = None) -> dict:
    """Kendall τ (τ-b) and Spearman ρ; with ``chance``, also τ among records above chance."""
    from scipy.stats import kendalltau, spearmanr

    pred, y = np.asarray(pred, float), np.asarray(y, float)
    out = {"n": int(len(y))}
    if len(y) < 3 or np.ptp(y) == 0:
        return {**out, "kendall_tau": None, "spearman_rho": None}
    tau = kendalltau(pred, y).statistic
    rho = spearmanr(pred, y).statistic
    out["kendall_tau"] = None if np.isnan(tau) else round(float(tau), 4)
    out["spearman_rho"] = None if np.isnan(rho) else round(float(rho), 4)
    if chance is not None:
        above = y > chance + 0.05
        out["n_above_chance"] = int(above.sum())
        if above.sum() >= 3:
            out["kendall_tau_above_chance"] = round(float(kendalltau(pred[above], y[above]).statistic), 4)
    return out


# --- the model ----------------------------------------------------------------------------------------


@dataclass
class FitConfig:
    """Hyper-parameters of one fit (the grid of :func:`fit` varies some of them)."""

    use_text: bool = True
    text_dims: int = 16  # PCA components of the 384-d text vector
    members: int = 5  # bootstrap members of the ensemble
    trees: int = 300  # boosting rounds of the ranking regressor
    gate_trees: int = 150  # boosting rounds of the "learns at all" classifier (0: no gate)
    depth: int = 3
    learning_rate: float = 0.05
    subsample: float = 0.8  # rows per tree (stochastic boosting)
    rank_weight: float = 1.0  # weight of the pairwise ranking term against the squared error
    pairs: int = 8192  # random same-dataset pairs per boosting round
    temperature: float = 0.05  # accuracy gap that counts as one logit in the ranking term
    margin: float = 0.05  # accuracies within this of chance count as "learns nothing"
    seed: int = 0


#: The configurations :func:`fit` chooses from by validation Kendall τ (text / no text).
TEXT_GRID = ({"text_dims": 8}, {"text_dims": 16}, {"text_dims": 16, "rank_weight": 3.0}, {"text_dims": 16, "depth": 4})
NUMERIC_GRID = ({}, {"rank_weight": 3.0}, {"depth": 4})


def _chance(numeric: np.ndarray) -> np.ndarray:
    """1 / classes per row, from the graph's output width (the ``log_classes`` feature)."""
    from einnas.surrogate.features import NUMERIC_NAMES

    classes = np.expm1(numeric[:, NUMERIC_NAMES.index("log_classes")])
    return 1.0 / np.maximum(np.round(classes), 1.0)


class _Trees:
    """A boosted sum of regression trees stored as flat arrays (all trees side by side)."""

    def __init__(self, left, right, feature, threshold, value, roots, base: float, depth: int):
        self.left, self.right, self.feature = left, right, feature
        self.threshold, self.value, self.roots = threshold, value, roots
        self.base, self.depth = base, depth

    @classmethod
    def from_sklearn(cls, trees: list, base: float, learning_rate: float) -> "_Trees":
        parts, offset, roots = [], 0, []
        for tree in trees:
            t = tree.tree_
            n = t.node_count
            left = np.where(t.children_left >= 0, t.children_left + offset, -1)
            right = np.where(t.children_right >= 0, t.children_right + offset, -1)
            parts.append((left, right, np.maximum(t.feature, 0), t.threshold, t.value[:, 0, 0] * learning_rate))
            roots.append(offset)
            offset += n
        cat = [np.concatenate([p[i] for p in parts]) for i in range(5)]
        depth = max((tree.get_depth() for tree in trees), default=0)
        return cls(cat[0].astype(np.int32), cat[1].astype(np.int32), cat[2].astype(np.int32),
                   cat[3].astype(np.float32), cat[4].astype(np.float32), np.array(roots, np.int32), base, depth)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(self.roots) == 0:
            return np.full(len(x), self.base)
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(self.depth):  # every tree of every row moves one level per step
            leaf = self.left[node] < 0
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(leaf, node, np.where(go_left, self.left[node], self.right[node]))
        return self.base + self.value[node].sum(1)

    def tensors(self, prefix: str) -> dict:
        return {f"{prefix}.{k}": getattr(self, k) for k in ("left", "right", "feature", "threshold", "value", "roots")} \
            | {f"{prefix}.base": np.array([self.base], np.float32), f"{prefix}.depth": np.array([self.depth], np.int32)}

    @classmethod
    def from_tensors(cls, t: dict, prefix: str) -> "_Trees":
        get = lambda k: t[f"{prefix}.{k}"]  # noqa: E731
        return cls(get("left"), get("right"), get("feature"), get("threshold"), get("value"), get("roots"),
                   float(get("base")[0]), int(get("depth")[0]))


def _boost(x: np.ndarray, residual, rounds: int, config: FitConfig, base: float, rng: np.random.Generator) -> _Trees:
    """Gradient boosting: each tree fits ``residual(score)`` (the negative gradient) on a row subsample."""
    from sklearn.tree import DecisionTreeRegressor

    score = np.full(len(x), base)
    trees = []
    for _ in range(rounds):
        target = residual(score)
        rows = rng.random(len(x)) < config.subsample
        tree = DecisionTreeRegressor(max_depth=config.depth, min_samples_leaf=5,
                                     random_state=int(rng.integers(2**31)))
        tree.fit(x[rows], target[rows])
        score += config.learning_rate * tree.predict(x)
        trees.append(tree)
    return _Trees.from_sklearn(trees, base, config.learning_rate)


def _rank_residual(y: np.ndarray, groups: np.ndarray, config: FitConfig, rng: np.random.Generator):
    """Negative gradient of  pairwise logistic ranking loss * rank_weight + squared error / 2."""
    by_group = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    by_group = [idx for idx in by_group if len(idx) >= 2]
    n, t = len(y), config.temperature

    def residual(score):
        grad = np.zeros(n)
        counts = np.zeros(n)
        for idx in by_group:
            k = max(1, config.pairs * len(idx) // n)
            i, j = rng.choice(idx, k), rng.choice(idx, k)
            diff = y[i] - y[j]
            keep = np.abs(diff) > _TIE
            i, j, sign = i[keep], j[keep], np.sign(diff[keep])
            # d/ds_i softplus(-sign (s_i - s_j) / t) = -sign * sigmoid(-sign (s_i - s_j) / t) / t
            push = sign / (1.0 + np.exp(np.clip(sign * (score[i] - score[j]) / t, -30, 30)))
            np.add.at(grad, i, push)
            np.add.at(grad, j, -push)
            np.add.at(counts, i, 1)
            np.add.at(counts, j, 1)
        # in accuracy units: t * (pull per pair), averaged over the pairs a row took part in
        rank = t * grad / np.maximum(counts, 1)
        return (y - score) + config.rank_weight * rank

    return residual


def _gate_residual(labels: np.ndarray):
    def residual(score):
        return labels - 1.0 / (1.0 + np.exp(-np.clip(score, -30, 30)))

    return residual


class Predictor:
    """A fitted ensemble. :meth:`predict` takes the raw feature tables of ``features.py``.

    Each member holds a gate (boosted classifier: will the network learn at all?)
    and a ranking regressor. A member predicts chance accuracy (1 / classes) when its
    gate says no, else its regressor's accuracy (never below chance). The
    prediction is the members' mean; the uncertainty their standard deviation.
    """

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict):
        self.tensors = tensors
        self.meta = meta
        self.config = FitConfig(**{k: v for k, v in meta["config"].items() if k in FitConfig.__dataclass_fields__})
        self._members = [
            (_Trees.from_tensors(tensors, f"m{m}.gate") if f"m{m}.gate.roots" in tensors else None,
             _Trees.from_tensors(tensors, f"m{m}.reg"))
            for m in range(meta["members"])
        ]

    def _inputs(self, numeric: np.ndarray, text: np.ndarray | None) -> np.ndarray:
        from einnas.surrogate.features import NUMERIC_NAMES

        t = self.tensors
        names = self.meta["features"]["numeric"]
        if list(names) != list(NUMERIC_NAMES):
            index = {n: i for i, n in enumerate(NUMERIC_NAMES)}
            missing = [n for n in names if n not in index]
            if missing:
                raise ModelError(f"predictor needs numeric features this einnas does not compute: {missing[:3]}")
            numeric = numeric[:, [index[n] for n in names]]
        x = numeric.astype(np.float64)
        if self.config.use_text:
            if text is None:
                raise UsageError("this predictor reads description text vectors; pass an encoder")
            z = (text - t["text_mean"]) @ t["text_proj"]
            x = np.concatenate([x, z], axis=1)
        return x.astype(np.float32)

    def member_predictions(self, numeric: np.ndarray, text: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(members, n)`` probabilities that the network learns, and regressor accuracies."""
        numeric = np.atleast_2d(numeric)
        x = self._inputs(numeric, None if text is None else np.atleast_2d(text))
        learns, acc = [], []
        for gate, reg in self._members:
            acc.append(reg(x))
            learns.append(np.ones(len(x)) if gate is None else 1.0 / (1.0 + np.exp(-np.clip(gate(x), -30, 30))))
        return np.stack(learns), np.stack(acc)

    def predict(self, numeric: np.ndarray, text: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the predicted accuracy, each ``(n,)``.

        Chance accuracy where the members' mean probability of learning is below one
        half, else the members' mean accuracy (never below chance); the spread is
        that of the members' own gated predictions.
        """
        numeric = np.atleast_2d(numeric)
        learns, acc = self.member_predictions(numeric, text)
        chance = _chance(numeric)
        acc = np.maximum(acc, chance)
        mean = np.where(learns.mean(0) < 0.5, chance, acc.mean(0))
        std = np.where(learns < 0.5, chance, acc).std(0)
        return mean, std

    # -- persistence --
    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``meta.json`` into ``folder`` (created)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in self.tensors.items()}, str(folder / "model.safetensors"))
        (folder / "meta.json").write_text(json.dumps(self.meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Predictor":
        """Read a predictor folder; :class:`ModelError` when it is missing or not one."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        folder = Path(folder)
        meta_path, weights = folder / "meta.json", folder / "model.safetensors"
        if not meta_path.is_file() or not weights.is_file():
            raise ModelError(f"predictor {str(folder)!r}: expected meta.json and model.safetensors in it")
        try:
            meta = json.loads(meta_path.read_text())
            tensors = load_file(str(weights))
        except (ValueError, OSError, SafetensorError) as error:
            raise ModelError(f"predictor {str(folder)!r}: unreadable ({error})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
            raise ModelError(f"predictor {str(folder)!r}: not an {FORMAT} v{FORMAT_VERSION} folder")
        try:
            return cls(tensors, meta)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"predictor {str(folder)!r}: incomplete ({error})") from None


def fit_predictor(numeric: np.ndarray, text: np.ndarray | None, y: np.ndarray, groups: Sequence[str],
                  config: FitConfig, meta: dict | None = None) -> Predictor:
    """Fit one ensemble on the given rows (no selection, no evaluation)."""
    from einnas.surrogate.encoder import DIM
    from einnas.surrogate.features import NUMERIC_NAMES, OP_VOCAB

    if len(y) < 8:
        raise UsageError(f"too few records to fit a predictor ({len(y)}; need at least 8 successful ones)")
    groups = np.asarray(groups)
    y = np.asarray(y, dtype=np.float64)
    chance = _chance(numeric)
    learns = y > chance + config.margin
    # Accuracies near chance differ by noise only (which class a collapsed network predicts):
    # the regressor sees them as chance, so it spends no effort ordering them.
    target = np.where(learns, y, chance)
    tensors: dict[str, np.ndarray] = {}
    x = numeric.astype(np.float64)
    if config.use_text:
        if text is None:
            raise UsageError("use_text needs text vectors")
        text_mean = text.mean(0)
        _, _, vt = np.linalg.svd(text - text_mean, full_matrices=False)
        proj = vt[: config.text_dims].T
        tensors.update(text_mean=text_mean.astype(np.float32), text_proj=proj.astype(np.float32))
        x = np.concatenate([x, (text - text_mean) @ proj], axis=1)
    x = x.astype(np.float32)
    rng = np.random.default_rng(config.seed)
    for m in range(config.members):
        rows = rng.integers(0, len(y), len(y)) if config.members > 1 else np.arange(len(y))
        xm, ym, gm, lm = x[rows], target[rows], groups[rows], learns[rows]
        reg = _boost(xm, _rank_residual(ym, gm, config, rng), config.trees, config, float(ym.mean()), rng)
        tensors.update(reg.tensors(f"m{m}.reg"))
        share = float(np.clip(lm.mean(), 0.01, 0.99))
        if config.gate_trees > 0 and 0 < lm.sum() < len(lm):
            gate = _boost(xm, _gate_residual(lm.astype(float)), config.gate_trees, config,
                          math.log(share / (1 - share)), rng)
            tensors.update(gate.tensors(f"m{m}.gate"))
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "members": config.members,
        "config": asdict(config),
        "features": {"numeric": list(NUMERIC_NAMES), "op_vocab": list(OP_VOCAB), "text_dim": DIM},
        **(meta or {}),
    }
    return Predictor(tensors, meta)


@dataclass
class Dataset:
    """Featurised records: numeric and text tables, accuracies, groups (dataset names), splits."""

    records: list[dict]
    graphs: list
    numeric: np.ndarray
    text: np.ndarray | None
    y: np.ndarray
    groups: np.ndarray
    splits: np.ndarray
    chance: np.ndarray = field(default=None)

    def rows(self, mask: np.ndarray) -> "Dataset":
        pick = np.flatnonzero(mask)
        return Dataset([self.records[i] for i in pick], [self.graphs[i] for i in pick], self.numeric[pick],
                       None if self.text is None else self.text[pick], self.y[pick], self.groups[pick],
                       self.splits[pick], self.chance[pick])


def featurize(records: Sequence[dict], encoder=None, cache=None, holdout: float = 0.2, log=None) -> Dataset:
    """Describe, encode and split successful records."""
    from einnas.grammar import load_grammar
    from einnas.surrogate.features import feature_table, shape_stats

    graphs, kept = graph_records(usable(records), cache, load_grammar(), log)
    numeric, text = feature_table(graphs, encoder)
    return Dataset(
        kept, graphs, numeric, text,
        np.array([r["val_acc"] for r in kept], dtype=np.float64),
        np.array([r["dataset"] for r in kept]),
        np.array([split_of(r["archid"], holdout) for r in kept]),
        np.array([1.0 / (r.get("num_classes") or shape_stats(g.text)["classes"]) for r, g in zip(kept, graphs)]),
    )


def evaluate(predictor: Predictor, data: Dataset) -> dict:
    """Rank metrics per dataset (and overall when several)."""
    mean, _ = predictor.predict(data.numeric, data.text)
    out = {}
    for name in sorted(set(data.groups)):
        m = data.groups == name
        out[name] = rank_metrics(mean[m], data.y[m], float(data.chance[m][0]))
    return out


def fit(data: Dataset, base: FitConfig | None = None, grid: Sequence[dict] | None = None,
        meta: dict | None = None, log=None) -> Predictor:
    """Select a configuration on ``val`` rows, refit it on ``train`` + ``val``, report on ``test``.

    Rows of the ``test`` split are used only for the final report.
    """
    base = base or FitConfig()
    train, val, test = (data.rows(data.splits == s) for s in SPLITS)
    if len(train.y) < 8:
        raise UsageError(f"too few successful training records ({len(train.y)}; need at least 8 after the "
                         "held-out and validation splits, so about 16 successful records: build more with "
                         "'einnas bench build --n N' or lower --holdout)")
    selection = []
    if grid is None:
        grid = TEXT_GRID if base.use_text else NUMERIC_GRID
    candidates = [replace(base, **g) for g in grid] if grid else [base]
    best, best_tau = candidates[0], -math.inf
    if len(candidates) > 1 and len(val.y) >= 8:
        for cand in candidates:
            trial = fit_predictor(train.numeric, train.text, train.y, train.groups, replace(cand, members=3))
            scores = evaluate(trial, val)
            taus = [s["kendall_tau"] for s in scores.values() if s["kendall_tau"] is not None]
            tau = float(np.mean(taus)) if taus else -math.inf
            selection.append({"config": _diff(cand, base), "val_kendall_tau": round(tau, 4)})
            if log:
                log(f"selection: {_diff(cand, base)} val tau {tau:.4f}")
            if tau > best_tau:
                best, best_tau = cand, tau
    fit_rows = data.rows(data.splits != "test")
    predictor = fit_predictor(fit_rows.numeric, fit_rows.text, fit_rows.y, fit_rows.groups, best)
    heldout = evaluate(predictor, test) if len(test.y) else {}
    predictor.meta.update(meta or {})
    predictor.meta.update({
        "config_chosen": _diff(best, base) or "base",
        "selection": selection, "heldout": heldout, "training": describe_training(data),
        "ranges": training_ranges(fit_rows),
    })
    return predictor


def _diff(config: FitConfig, base: FitConfig) -> dict:
    a, b = asdict(config), asdict(base)
    return {k: v for k, v in a.items() if b[k] != v}


def describe_training(data: Dataset) -> dict:
    """Datasets, budgets and sizes per split, for ``meta.json``."""
    out = {}
    for name in sorted(set(data.groups)):
        m = data.groups == name
        recs = [r for r, keep in zip(data.records, m) if keep]
        out[name] = {
            "records": int(m.sum()),
            **{s: int((data.splits[m] == s).sum()) for s in SPLITS},
            "budgets": sorted({json.dumps(r.get("budget", {}), sort_keys=True) for r in recs}),
            "input_shape": recs[0].get("input_shape") if recs else None,
            "val_acc_range": [round(float(data.y[m].min()), 4), round(float(data.y[m].max()), 4)],
        }
    return out


def training_ranges(data: Dataset) -> dict:
    """What the out-of-distribution note compares against: feature ranges and op types seen."""
    from einnas.surrogate.features import NUMERIC_NAMES

    ops = sorted(set().union(*(g.op_types() for g in data.graphs if g is not None)))
    lo, hi = data.numeric.min(0), data.numeric.max(0)
    return {"op_types": ops,
            "numeric_min": {n: round(float(v), 4) for n, v in zip(NUMERIC_NAMES, lo)},
            "numeric_max": {n: round(float(v), 4) for n, v in zip(NUMERIC_NAMES, hi)}}


def provenance(seed: int, records: Sequence[str], argv: Sequence[str] | None = None) -> dict:
    """Command (``argv`` after ``einnas``; default: this process's), seed, date, versions and record files."""
    from importlib import metadata

    files = []
    for path in map(Path, records):
        if path.is_dir():  # an ONNX folder: hash the names and sizes of its files
            listing = "".join(f"{p.relative_to(path)}:{p.stat().st_size}\n" for p in sorted(path.rglob("*.onnx")))
            digest = hashlib.sha256(listing.encode()).hexdigest()[:16]
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        files.append({"file": path.name, "sha256_16": digest})
    try:
        version = metadata.version("einnas")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"command": " ".join(["einnas", *(sys.argv[1:] if argv is None else argv)]), "seed": seed,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "einnas": version, "record_files": files}


def load_records(paths: Sequence[str], label_key: str | None = None, log=None) -> list[dict]:
    """Records from JSON Lines files (``einnas bench build``) and ONNX folders (ONNX-Bench style)."""
    from einnas.surrogate.bench import read_records
    from einnas.surrogate.onnxbench import read_folder

    out: list[dict] = []
    for path in paths:
        if Path(path).is_dir():
            out.extend(read_folder(path, key=label_key, log=log))
        else:
            out.extend(read_records(path))
    if not out:
        raise UsageError(f"no records in {', '.join(map(str, paths))}")
    return out


def save_atomic(predictor: Predictor, folder: str | Path) -> Path:
    """Save into a temporary folder beside ``folder``, then move the files in (never half-written)."""
    import os
    import shutil
    import tempfile

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        predictor.save(tmp)
        folder.mkdir(exist_ok=True)
        for name in ("model.safetensors", "meta.json"):  # weights first: meta.json marks a complete folder
            os.chmod(tmp / name, 0o644)  # safetensors writes 0600; a predictor is meant to be shared
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def evaluate_records(predictor: Predictor, records: Sequence[dict], encoder=None, cache=None,
                     split: str = "test", log=None) -> list[dict]:
    """One row per dataset: τ, ρ (and the parameter-count baseline) on the chosen split."""
    from einnas.surrogate.features import NUMERIC_NAMES

    holdout = float(predictor.meta.get("holdout", 0.2))
    data = featurize(records, encoder, cache, holdout=holdout, log=log)
    if split == "test":
        data = data.rows(data.splits == "test")
    fitted_on = set(predictor.meta.get("training", {}))
    mean, _ = predictor.predict(data.numeric, data.text)
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
