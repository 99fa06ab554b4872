"""A text model trained on the descriptions with a ranking loss (the CPU text head).

The description (``describe.py``) is tokenised from its compact lines
(``encoder.segments``: no tensor names, no shapes, no parameter counts): each op
element gives its op type, its op family, its scalar attributes
(``Conv:kernel_shape=3``) and its neighbour on the line (``Conv>LeakyRelu``); each
whole compact line is one more token. Tokens are counted (weighted by how often a
line occurs), hashed into :data:`DIM` signed buckets, log-scaled and
L2-normalised. A linear head on that vector is trained with the pairwise logistic
ranking loss on pairs of the same group (dataset), with L2 regularisation, by
full-batch Adam in numpy.

Family tokens are what let a new but similar op land near known ones: a graph
with ``Sum`` shares ``fam:add_like`` with graphs of ``Add``.

The predictor uses the head's score as one more feature of its trees, computed
out-of-fold on the training rows (``predictor.py``), so the trees weigh it by
what it adds over the numeric features.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Sequence

import numpy as np

DIM = 2**12
_ELEMENT = re.compile(r"^(?:\d+x\[)?([\w.]+)(?:\((.*)\))?")


@lru_cache(maxsize=65536)
def _bucket(token: str) -> tuple[int, float]:
    digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % DIM, 1.0 if (value >> 40) & 1 else -1.0


@lru_cache(maxsize=65536)
def _line_tokens(line: str) -> tuple[str, ...]:
    from einnas.surrogate.encoder import _split_top
    from einnas.surrogate.graphfeatures import family

    tokens, previous = [f"line:{line}"], None
    for element in _split_top(line, " > "):
        match = _ELEMENT.match(element.strip())
        if not match:
            continue
        op, args = match.group(1), match.group(2) or ""
        tokens += [f"op:{op}", f"fam:{family(op)}"]
        tokens += [f"{op}:{a.strip()}" for a in args.split(",") if "=" in a]
        if "inputs" in args:
            tokens.append(f"{family(op)}:multi")
        if previous is not None:
            tokens += [f"{previous}>{op}", f"{family(previous)}>{family(op)}"]
        previous = op
    return tuple(tokens)


def vectorize(texts: Sequence[str]):
    """``(n, DIM)`` sparse (CSR) hashed, log-scaled, L2-normalised token counts of descriptions."""
    from scipy.sparse import csr_matrix

    from einnas.surrogate.encoder import segments

    indptr, indices, data = [0], [], []
    for text in texts:
        counts: dict[int, float] = {}
        for line, weight in segments(text):
            for token in _line_tokens(line):
                index, sign = _bucket(token)
                counts[index] = counts.get(index, 0.0) + sign * weight
        val = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        val = np.sign(val) * np.log1p(np.abs(val))
        norm = float(np.linalg.norm(val)) or 1.0
        indices.extend(counts)
        data.extend((val / norm).tolist())
        indptr.append(len(indices))
    return csr_matrix((np.asarray(data, np.float64), np.asarray(indices, np.int64), np.asarray(indptr, np.int64)),
                      shape=(len(texts), DIM))


def fit_head(x, y: np.ndarray, groups: np.ndarray, seed: int = 0, steps: int = 150,
             pairs: int = 20000, l2: float = 1e-3, lr: float = 0.05, temperature: float = 0.05) -> np.ndarray:
    """Weights ``(DIM + 1,)`` of a linear ranking head fitted by pairwise logistic loss (Adam)."""
    rng = np.random.default_rng(seed)
    by_group = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    by_group = [idx for idx in by_group if len(idx) >= 2]
    w = np.zeros(x.shape[1], dtype=np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    if not by_group:
        return np.concatenate([w, [0.0]]).astype(np.float32)
    n = sum(len(idx) for idx in by_group)
    for step in range(1, steps + 1):
        i_all, j_all, s_all = [], [], []
        for idx in by_group:
            k = max(1, pairs * len(idx) // n)
            i, j = rng.choice(idx, k), rng.choice(idx, k)
            diff = y[i] - y[j]
            keep = np.abs(diff) > 0.005
            i_all.append(i[keep])
            j_all.append(j[keep])
            s_all.append(np.sign(diff[keep]))
        i, j, sign = np.concatenate(i_all), np.concatenate(j_all), np.concatenate(s_all)
        if len(i) == 0:
            break
        score = np.asarray(x @ w).ravel()
        margin = sign * (score[i] - score[j]) / temperature
        pull = -sign / (1.0 + np.exp(np.clip(margin, -30, 30))) / temperature / len(i)
        g_row = np.zeros(x.shape[0])
        np.add.at(g_row, i, pull)
        np.add.at(g_row, j, -pull)
        grad = np.asarray(x.T @ g_row).ravel() + l2 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w -= lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    score = np.asarray(x @ w).ravel()
    scale = float(score.std()) or 1.0  # standardised scores: comparable across fits
    return np.concatenate([w / scale, [-float(score.mean()) / scale]]).astype(np.float32)


def head_scores(weights: np.ndarray, x) -> np.ndarray:
    """The head's (standardised) ranking score of each row (``x`` from :func:`vectorize`)."""
    return np.asarray(x @ weights[:-1].astype(np.float64)).ravel() + float(weights[-1])


def out_of_fold(x, y: np.ndarray, groups: np.ndarray, seed: int = 0, folds: int = 4) -> np.ndarray:
    """Each row's head score from a head fitted on the other folds (no row scores itself)."""
    rng = np.random.default_rng(seed)
    fold = rng.integers(0, folds, len(y))
    out = np.zeros(len(y), dtype=np.float32)
    for f in range(folds):
        test = fold == f
        if test.any() and (~test).sum() >= 4:
            tr, te = np.flatnonzero(~test), np.flatnonzero(test)
            out[te] = head_scores(fit_head(x[tr], y[tr], groups[tr], seed=seed + f), x[te])
    return out
