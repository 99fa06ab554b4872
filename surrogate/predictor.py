"""The surrogate predictor: an ensemble of small MLPs over graph features, ranking-aware.

Features (``features.py``): standardised numeric figures of the ONNX graph and,
optionally, the MiniLM vector of its description reduced by PCA (fitted on the
training rows). Each member is a two-layer MLP trained full-batch with Adam on

    loss = pairwise logistic ranking loss (pairs from the same dataset only)
         + ``mse_weight`` * mean squared error to the accuracy,

so its output ranks like the accuracy and stays in accuracy units. Members differ
by bootstrap resample and initialisation; the prediction is the members' mean and
the uncertainty their standard deviation.

Honest evaluation: :func:`split_of` assigns every architecture, by a hash of its
archid, to ``test`` (held out: never used for fitting or model selection),
``val`` (model selection) or ``train``. :func:`fit` chooses among a small grid of
configurations by validation Kendall τ, refits the choice on train + val and
reports the held-out metrics it never looked at before.

A fitted predictor is a folder: ``model.safetensors`` (weights and
normalisation) and ``meta.json`` (feature spec, encoder spec, training data,
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
    """Hyper-parameters of one fit (the grid in :func:`fit` varies some of them)."""

    use_text: bool = True
    text_dims: int = 32  # PCA components of the 384-d text vector
    hidden: int = 64
    members: int = 5
    epochs: int = 400  # full-batch Adam steps
    lr: float = 3e-3
    weight_decay: float = 1e-3
    pairs: int = 4096  # random same-dataset pairs per step
    temperature: float = 0.05  # accuracy gap that counts as one logit in the ranking loss
    mse_weight: float = 1.0
    seed: int = 0


#: The configurations :func:`fit` chooses from by validation Kendall τ (text / no text).
TEXT_GRID = ({"text_dims": 16}, {"text_dims": 48}, {"text_dims": 16, "weight_decay": 1e-2},
             {"text_dims": 48, "hidden": 128})
NUMERIC_GRID = ({}, {"weight_decay": 1e-2}, {"hidden": 128})


class Predictor:
    """A fitted ensemble. :meth:`predict` takes the raw feature tables of ``features.py``."""

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict):
        self.tensors = tensors
        self.meta = meta
        self.config = FitConfig(**{k: v for k, v in meta["config"].items() if k in FitConfig.__dataclass_fields__})

    # -- inference (numpy only) --
    def _inputs(self, numeric: np.ndarray, text: np.ndarray | None) -> np.ndarray:
        t = self.tensors
        names = self.meta["features"]["numeric"]
        from einnas.surrogate.features import NUMERIC_NAMES

        if list(names) != list(NUMERIC_NAMES):
            index = {n: i for i, n in enumerate(NUMERIC_NAMES)}
            missing = [n for n in names if n not in index]
            if missing:
                raise ModelError(f"predictor needs numeric features this einnas does not compute: {missing[:3]}")
            numeric = numeric[:, [index[n] for n in names]]
        x = np.clip((numeric - t["num_mean"]) / t["num_std"], -6, 6)
        if self.config.use_text:
            if text is None:
                raise UsageError("this predictor reads description text vectors; pass an encoder")
            z = (text - t["text_mean"]) @ t["text_proj"] / t["text_std"]
            x = np.concatenate([x, np.clip(z, -6, 6)], axis=1)
        return x.astype(np.float32)

    def predict(self, numeric: np.ndarray, text: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the members' predicted accuracy, each ``(n,)``."""
        x = self._inputs(np.atleast_2d(numeric), None if text is None else np.atleast_2d(text))
        outs = []
        for m in range(self.meta["members"]):
            h = x
            layer = 0
            while f"m{m}.w{layer}" in self.tensors:
                h = h @ self.tensors[f"m{m}.w{layer}"] + self.tensors[f"m{m}.b{layer}"]
                if f"m{m}.w{layer + 1}" in self.tensors:
                    h = np.maximum(h, 0.0)
                layer += 1
            outs.append(h[:, 0] + self.tensors["y_mean"][0])
        stack = np.stack(outs)
        return stack.mean(0), stack.std(0)

    # -- persistence --
    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``meta.json`` into ``folder`` (created)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.tensors.items()},
                  str(folder / "model.safetensors"))
        (folder / "meta.json").write_text(json.dumps(self.meta, indent=2, sort_keys=False) + "\n")
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
        if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
            raise ModelError(f"predictor {str(folder)!r}: not an {FORMAT} v{FORMAT_VERSION} folder")
        return cls(tensors, meta)


# --- fitting ------------------------------------------------------------------------------------------


def _pair_batches(groups: np.ndarray, y: np.ndarray, pairs: int, rng: np.random.Generator):
    """Random pairs (i, j) from the same group with |y_i - y_j| > the tie tolerance."""
    by_group = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    by_group = [idx for idx in by_group if len(idx) >= 2]
    sizes = np.array([len(idx) ** 2 for idx in by_group], float)
    share = np.maximum(1, np.round(pairs * sizes / sizes.sum())).astype(int)
    i_all, j_all = [], []
    for idx, k in zip(by_group, share):
        i = rng.choice(idx, k)
        j = rng.choice(idx, k)
        keep = np.abs(y[i] - y[j]) > _TIE
        i_all.append(i[keep])
        j_all.append(j[keep])
    return np.concatenate(i_all), np.concatenate(j_all)


def _train_member(x: np.ndarray, y: np.ndarray, groups: np.ndarray, config: FitConfig, seed: int) -> list:
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], config.hidden), torch.nn.ReLU(),
        torch.nn.Linear(config.hidden, config.hidden), torch.nn.ReLU(),
        torch.nn.Linear(config.hidden, 1),
    )
    opt = torch.optim.AdamW(layers.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.float32))
    for step in range(config.epochs):
        lr = config.lr * 0.5 * (1 + math.cos(math.pi * step / config.epochs))
        for group in opt.param_groups:
            group["lr"] = lr
        i, j = _pair_batches(groups, y, config.pairs, rng)
        out = layers(xt)[:, 0]
        sign = torch.sign(yt[i] - yt[j])
        rank = torch.nn.functional.softplus(-sign * (out[i] - out[j]) / config.temperature).mean()
        loss = rank + config.mse_weight * ((out - yt) ** 2).mean() / (config.temperature ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    linears = [m for m in layers if isinstance(m, torch.nn.Linear)]
    return [(lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy()) for lin in linears]


def fit_predictor(numeric: np.ndarray, text: np.ndarray | None, y: np.ndarray, groups: Sequence[str],
                  config: FitConfig, meta: dict | None = None) -> Predictor:
    """Fit one ensemble on the given rows (no selection, no evaluation)."""
    import torch

    if len(y) < 8:
        raise UsageError(f"too few records to fit a predictor ({len(y)}; need at least 8 successful ones)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only add synchronisation (10x slower on 2 busy cores)
    try:
        groups = np.asarray(groups)
        y = np.asarray(y, dtype=np.float64)
        num_mean = numeric.mean(0)
        num_std = numeric.std(0) + 1e-6
        tensors = {"num_mean": num_mean, "num_std": num_std, "y_mean": np.array([y.mean()])}
        x = np.clip((numeric - num_mean) / num_std, -6, 6)
        if config.use_text:
            if text is None:
                raise UsageError("use_text needs text vectors")
            text_mean = text.mean(0)
            _, _, vt = np.linalg.svd(text - text_mean, full_matrices=False)
            proj = vt[: config.text_dims].T
            z = (text - text_mean) @ proj
            text_std = z.std(0) + 1e-6
            tensors.update(text_mean=text_mean, text_proj=proj, text_std=text_std)
            x = np.concatenate([x, np.clip(z / text_std, -6, 6)], axis=1)
        x = x.astype(np.float32)
        rng = np.random.default_rng(config.seed)
        for m in range(config.members):
            rows = rng.integers(0, len(y), len(y)) if config.members > 1 else np.arange(len(y))
            weights = _train_member(x[rows], y[rows] - y.mean(), groups[rows], config, seed=config.seed * 1000 + m)
            for layer, (w, b) in enumerate(weights):
                tensors[f"m{m}.w{layer}"] = w
                tensors[f"m{m}.b{layer}"] = b
    finally:
        torch.set_num_threads(threads)
    from einnas.surrogate.encoder import DIM
    from einnas.surrogate.features import NUMERIC_NAMES, OP_VOCAB

    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "members": config.members,
        "config": asdict(config),
        "features": {"numeric": list(NUMERIC_NAMES), "op_vocab": list(OP_VOCAB), "text_dim": DIM},
        **(meta or {}),
    }
    return Predictor({k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}, meta)


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
        raise UsageError(f"too few successful training records ({len(train.y)})")
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

    ops = sorted(set().union(*(g.op_types() for g in data.graphs))) if data.graphs else []
    lo, hi = data.numeric.min(0), data.numeric.max(0)
    return {"op_types": ops,
            "numeric_min": {n: round(float(v), 4) for n, v in zip(NUMERIC_NAMES, lo)},
            "numeric_max": {n: round(float(v), 4) for n, v in zip(NUMERIC_NAMES, hi)}}


def provenance(seed: int, records: Sequence[str]) -> dict:
    """Command, seed, date, versions and record files (with hashes) of a fit."""
    from importlib import metadata

    files = []
    for path in records:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        files.append({"file": Path(path).name, "sha256_16": digest})
    try:
        version = metadata.version("einnas")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"command": " ".join(["einnas", *sys.argv[1:]]), "seed": seed,
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
