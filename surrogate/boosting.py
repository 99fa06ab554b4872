"""The boosting engine: gradient-boosted regression trees stored as flat arrays.

:func:`boost` fits scikit-learn regression trees, one per round, to the negative
gradient of a loss (``residual(score)``) on a row subsample; :class:`Trees` keeps
the fitted sum as flat arrays (all trees side by side) that evaluate vectorised in
numpy and persist as plain tensors (safetensors, no pickle).

The two losses used by the predictor:

* :func:`rank_residual`: ``rank_weight`` × pairwise logistic ranking loss (pairs
  drawn within one group only: accuracies of different protocols do not compare)
  + squared error / 2, so the output ranks like the accuracy and stays in its units;
* :func:`gate_residual`: logistic loss of a binary label ("does it learn at all").
"""

from __future__ import annotations

import numpy as np

#: Accuracies this close count as a tie in the ranking loss.
TIE = 0.005


class Trees:
    """A boosted sum of regression trees stored as flat arrays (all trees side by side)."""

    def __init__(self, left, right, feature, threshold, value, roots, base: float, depth: int):
        self.left, self.right, self.feature = left, right, feature
        self.threshold, self.value, self.roots = threshold, value, roots
        self.base, self.depth = base, depth

    @classmethod
    def from_sklearn(cls, trees: list, base: float, learning_rate: float) -> "Trees":
        parts, offset, roots = [], 0, []
        for tree in trees:
            t = tree.tree_
            n = t.node_count
            left = np.where(t.children_left >= 0, t.children_left + offset, -1)
            right = np.where(t.children_right >= 0, t.children_right + offset, -1)
            # leaf values held at float16 precision, as they are saved (tensors): a loaded
            # predictor predicts exactly what the fitted one did
            value = (t.value[:, 0, 0] * learning_rate).astype(np.float16)
            parts.append((left, right, np.maximum(t.feature, 0), t.threshold, value))
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
        """Flat arrays to save, compactly: children as offsets within their own tree (int16),
        feature indices int16, leaf values float16 (as they are held: see :meth:`from_sklearn`)."""
        tree = _tree_of_nodes(self.roots, len(self.left))
        sizes = np.diff(np.append(self.roots, len(self.left)))
        # a tree of 32k nodes or more (depth 15 or more) keeps int32 offsets
        offsets = np.int16 if sizes.size == 0 or sizes.max() < 2**15 else np.int32
        local = lambda child: np.where(child >= 0, child - self.roots[tree], -1).astype(offsets)  # noqa: E731
        return {f"{prefix}.left": local(self.left), f"{prefix}.right": local(self.right),
                f"{prefix}.feature": self.feature.astype(np.int16), f"{prefix}.threshold": self.threshold,
                f"{prefix}.value": self.value.astype(np.float16), f"{prefix}.roots": self.roots,
                f"{prefix}.base": np.array([self.base], np.float32), f"{prefix}.depth": np.array([self.depth], np.int32)}

    @classmethod
    def from_tensors(cls, t: dict, prefix: str) -> "Trees":
        get = lambda k: t[f"{prefix}.{k}"]  # noqa: E731
        roots = get("roots").astype(np.int32)
        tree = _tree_of_nodes(roots, len(get("left")))
        glob = lambda child: np.where(child >= 0, child.astype(np.int32) + roots[tree], -1).astype(np.int32)  # noqa: E731
        return cls(glob(get("left")), glob(get("right")), get("feature").astype(np.int32),
                   get("threshold").astype(np.float32), get("value").astype(np.float32), roots,
                   float(get("base")[0]), int(get("depth")[0]))


def _tree_of_nodes(roots: np.ndarray, nodes: int) -> np.ndarray:
    """The index of the tree each of ``nodes`` flat nodes belongs to (``roots``: each tree's first node)."""
    return np.searchsorted(roots, np.arange(nodes), side="right") - 1


def boost(x: np.ndarray, residual, rounds: int, config, base: float, rng: np.random.Generator) -> Trees:
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
    return Trees.from_sklearn(trees, base, config.learning_rate)


def rank_residual(y: np.ndarray, groups: np.ndarray, config, rng: np.random.Generator):
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
            keep = np.abs(diff) > TIE
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


def gate_residual(labels: np.ndarray):
    def residual(score):
        return labels - 1.0 / (1.0 + np.exp(-np.clip(score, -30, 30)))

    return residual
