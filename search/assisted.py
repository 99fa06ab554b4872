"""Surrogate-assisted search: rank many candidates with the predictor, train only the best.

:class:`AssistedStrategy` wraps any strategy (regularised evolution, random
sampling). For each new trial it asks the wrapped strategy for ``candidates``
proposals with the trial's own ``rng`` (for RE: that many tournaments and
mutations; during RE's initial population, that many random samples), drops those
already in the study, scores the rest with the predictor (export → describe →
features → ensemble) and returns the one with the highest ``mean + kappa * std``.
Seed architectures (``--init``) pass through unranked. Like every strategy it
keeps no search state: the same view and ``rng`` give the same proposal.

With ``refit_every = k > 0`` the ranking also uses a predictor fitted on the
study's own trained trials: on the first ``k * floor(n / k)`` of its ``n`` trained
trials (so every worker refits on the same rows), blended with the shipped one
in standardised score, weight ``m / (m + 50)`` for ``m`` rows. The fit is a
cache derived from the study, not state.

:class:`SurrogateEvaluator` scores a trial with the predictor instead of training
it (``scored_by = "predicted"``): a search that trains nothing, for exploring a
space in seconds.

``einnas search --surrogate default|PATH`` and ``--evaluator surrogate`` reach
this module through :func:`make_strategy` and :func:`make_evaluator`.
"""

from __future__ import annotations

import math
import random
import time
from typing import Sequence

import numpy as np

from einnas.errors import EinnasError
from einnas.search.evaluators import Evaluation, Evaluator
from einnas.search.records import StudyView
from einnas.search.space import SearchSpace
from einnas.search.strategies import Proposal, Strategy

#: Candidates ranked per trained trial (the issue: "many mutated children").
DEFAULT_CANDIDATES = 16
_BLEND_HALF = 50  # study rows at which the refitted predictor weighs as much as the shipped one


class SurrogateRanker:
    """A scorer bound to a search space, with an in-memory description cache."""

    def __init__(self, predictor, space: SearchSpace, encoder=None):
        from einnas.surrogate.features import DescriptionCache
        from einnas.surrogate.score import Scorer

        self.scorer = Scorer(predictor, encoder)
        self.space = space
        self.cache = DescriptionCache(None)

    @property
    def predictor(self):
        return self.scorer.predictor

    def graphs(self, archs: Sequence) -> list:
        """Described graphs (None where export fails)."""
        from einnas.surrogate.features import describe_arch

        out = []
        for arch in archs:
            try:
                out.append(describe_arch(arch, self.space.input_shape, self.space.num_classes, self.cache))
            except EinnasError:
                out.append(None)
        return out

    def predict(self, graphs: Sequence, predictor=None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std per graph (``-inf`` / 0 where a graph is None)."""
        predictor = predictor or self.predictor
        mean = np.full(len(graphs), -np.inf)
        std = np.zeros(len(graphs))
        index = [i for i, g in enumerate(graphs) if g is not None]
        if index:
            chosen = [graphs[i] for i in index]
            m, s = predictor.predict(chosen, tasks=[self.scorer.task_for(g) for g in chosen])
            mean[index], std[index] = m, s
        return mean, std


class AssistedStrategy(Strategy):
    """Proposes the best-predicted of ``candidates`` proposals of a wrapped strategy."""

    name = "assisted"

    def __init__(self, base: Strategy, ranker: SurrogateRanker, candidates: int = DEFAULT_CANDIDATES,
                 kappa: float = 0.0, refit_every: int = 0):
        super().__init__(base.space)
        self.base, self.ranker = base, ranker
        self.candidates, self.kappa, self.refit_every = max(1, candidates), kappa, refit_every
        self._refits: dict[tuple, object] = {}  # (rows) -> predictor: a cache derived from the study

    def settings(self) -> dict:
        return {**self.base.settings(), "assisted": {
            "candidates": self.candidates, "kappa": self.kappa, "refit_every": self.refit_every,
            "predictor": predictor_id(self.ranker.predictor)}}

    def propose(self, view: StudyView, trial_number: int, rng: random.Random) -> Proposal:
        first = self.base.propose(view, trial_number, rng)
        if first.origin.startswith("seed:") or self.candidates == 1:
            return first
        proposals, seen = [first], {first.arch.archid}
        for _ in range(3 * self.candidates):
            if len(proposals) >= self.candidates:
                break
            proposal = self.base.propose(view, trial_number, rng)
            archid = proposal.arch.archid
            if archid in seen or archid in view.taken or proposal.origin.startswith("seed:"):
                continue
            seen.add(archid)
            proposals.append(proposal)
        scores = self.scores([p.arch for p in proposals], view)
        return proposals[int(np.argmax(scores))]  # the first of the best on ties

    def scores(self, archs: Sequence, view: StudyView) -> np.ndarray:
        """The ranking score of each architecture (higher is better)."""
        graphs = self.ranker.graphs(archs)
        mean, std = self.ranker.predict(graphs)
        score = mean + self.kappa * std
        refit = self._refit(view)
        if refit is not None:
            predictor, rows = refit
            own, own_std = self.ranker.predict(graphs, predictor)
            w = rows / (rows + _BLEND_HALF)
            score = (1 - w) * _standardise(score) + w * _standardise(own + self.kappa * own_std)
        return np.where(np.isfinite(score), score, -np.inf)

    def _refit(self, view: StudyView):
        if self.refit_every <= 0:
            return None
        trained = [r for r in view.completed if r.scored_by == "trained" and r.arch]
        rows = (len(trained) // self.refit_every) * self.refit_every
        if rows < max(self.refit_every, 8):
            return None
        key = tuple(r.number for r in trained[:rows])
        if key not in self._refits:
            self._refits[key] = self._fit([(r.arch, r.value) for r in trained[:rows]])
        predictor = self._refits[key]
        return None if predictor is None else (predictor, rows)

    def _fit(self, rows: list[tuple[str, float]]):
        from dataclasses import replace

        from einnas.surrogate.features import feature_table
        from einnas.surrogate.predictor import fit_predictor

        archs, values = [], []
        for string, value in rows:
            try:
                archs.append(self.space.parse(string))
                values.append(value)
            except EinnasError:
                continue
        graphs = self.ranker.graphs(archs)
        keep = [i for i, g in enumerate(graphs) if g is not None]
        if len(keep) < 8:
            return None
        base = self.ranker.predictor.config
        config = replace(base, members=3, trees=min(base.trees, 150), gate_trees=min(base.gate_trees, 75),
                         seed=len(keep), use_proxies=False)
        chosen = [graphs[i] for i in keep]
        numeric, _ = feature_table(chosen, tasks=[self.ranker.scorer.task_for(g) for g in chosen])
        y = np.array([values[i] for i in keep])
        return fit_predictor(numeric, None, y, ["study"] * len(keep), config, texts=[g.text for g in chosen])


def _standardise(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    if finite.sum() < 2:
        return values
    mu, sd = values[finite].mean(), values[finite].std() + 1e-9
    return (values - mu) / sd


def predictor_id(predictor) -> str:
    """A short id of a predictor's weights (stored in study settings)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=6)
    for key in sorted(predictor.tensors):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(predictor.tensors[key]).tobytes())
    return digest.hexdigest()


class SurrogateEvaluator(Evaluator):
    """Scores a candidate with the predictor's mean; trains nothing."""

    scored_by = "predicted"

    def __init__(self, ranker: SurrogateRanker):
        self.ranker = ranker

    def settings(self) -> dict:
        return {"evaluator": self.scored_by, "predictor": predictor_id(self.ranker.predictor)}

    def evaluate(self, arch, seed):
        from einnas.surrogate.score import ood_notes

        start = time.perf_counter()
        graph = self.ranker.graphs([arch])[0]
        if graph is None:
            return Evaluation(False, reason="invalid", detail="the architecture could not be exported to ONNX",
                              seconds=time.perf_counter() - start)
        mean, std = self.ranker.predict([graph])
        if not math.isfinite(mean[0]):
            return Evaluation(False, reason="no_score", detail="the predictor gave no finite score")
        notes = ood_notes(self.ranker.predictor, graph, graph.numeric)
        return Evaluation(
            ok=True, value=float(mean[0]), params=int(graph.summary.get("params", 0)),
            seconds=time.perf_counter() - start,
            extra={"predicted_std": round(float(std[0]), 5), **({"ood": "; ".join(notes)} if notes else {})},
        )


def _load(surrogate: str):
    from einnas.surrogate.score import load_predictor

    return load_predictor(surrogate)


def make_strategy(base: Strategy, surrogate: str, *, space: SearchSpace, seed: int,
                  candidates: int = DEFAULT_CANDIDATES, kappa: float = 0.0, refit_every: int = 0) -> Strategy:
    """The hook of ``einnas search --surrogate default|PATH``: wrap ``base`` in an :class:`AssistedStrategy`."""
    return AssistedStrategy(base, SurrogateRanker(_load(surrogate), space), candidates, kappa, refit_every)


def make_evaluator(surrogate: str, *, space: SearchSpace, dataset=None) -> Evaluator:
    """The hook of ``einnas search --evaluator surrogate``: a :class:`SurrogateEvaluator`."""
    return SurrogateEvaluator(SurrogateRanker(_load(surrogate), space))
