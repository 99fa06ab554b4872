"""Surrogate-assisted search: rank many candidates with the predictor, train only the best.

:class:`AssistedStrategy` wraps any strategy (regularised evolution, random
sampling). For each new trial it asks the wrapped strategy for ``candidates``
proposals with the trial's own ``rng`` (for RE: that many tournaments and
mutations; during RE's initial population, that many random samples), drops those
already in the study, scores the rest with the predictor (export → describe →
features → ensemble) and returns the one with the highest ``mean + kappa * std``.
Seed architectures (``--init``) pass through unranked. Like every strategy it
keeps no search state: the same view and ``rng`` give the same proposal.

The ranking score of a proposal (higher is better) has three parts, so that the
predictor keeps helping after its first picks instead of steering every mutation
into one region:

* **the study's own trials** (``refit_every = k``, default 10; 0 turns it off): once
  the study has ``n >= max(k, 10)`` trained trials, a predictor is fitted on the first
  ``k * floor(n / k)`` of them (so every worker refits on the same rows) and blended
  with the shipped one in standardised score, weight ``m / (m + 25)`` for ``m`` rows.
  Its target is the trial's fitness as regularised evolution's tournament sees it
  (``records.py``): the number of multi-fidelity rungs passed (2 for a candidate
  trained to the full budget) plus the validation accuracy at that fidelity. The fit
  is a cache derived from the study, not state; the study's ``einnas_refit`` user
  attribute records the latest one (rows, trials used) for people and tests.
* **exploration** (``kappa``, default 1): each predictor ranks by ``mean + kappa * std``
  of its ensemble, so proposals the predictors disagree on get tried (UCB-like).
* **diversity** (``diversity``, default 0.5): a proposal loses ``diversity`` standard
  deviations of score for each of the last :data:`CROWD_WINDOW` trials whose
  parameter count is within 10% of its own (near-duplicates), and the children of a
  parent that already has :data:`MAX_CHILDREN` children among those trials are
  ranked only when no other proposal is left.

A predictor learns from finished trainings only, so it never learns "too slow for the
budget", and its favourites are often the larger networks (on mnist1d at 10 s per
candidate, 3 to 6 of every 40 to 100 trials of the main job timed out). With the
search's budget (``budget``: seconds per epoch over the training set), a
proposal whose estimated training time is over the budget is ranked only when no
proposal within it is left. The estimate is the analytic one the seeds are scaled
with (``einnas.grammar.scaling.epoch_seconds``), times the median ratio of measured
to estimated seconds per epoch over the study's last :data:`CROWD_WINDOW` trained
trials (once there are :data:`MIN_TIMED` of them): the machine's own pace. That ratio
reads recorded wall-clock times, so on another machine or load the same seed may rank
differently near the budget.

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
from einnas.search.records import CURVE, StudyView
from einnas.search.space import SearchSpace
from einnas.search.strategies import Proposal, Strategy

#: Candidates ranked per trained trial (the issue: "many mutated children").
DEFAULT_CANDIDATES = 16
DEFAULT_KAPPA = 1.0  # exploration: mean + kappa * ensemble std
DEFAULT_REFIT_EVERY = 10  # refit on the study's trained trials every 10 of them
DEFAULT_DIVERSITY = 0.5  # score (standard deviations) lost per near-duplicate in the recent trials
MIN_REFIT_ROWS = 10  # no refit on fewer trained trials
CROWD_WINDOW = 30  # the recent trials that define "near-duplicate" and "children of one parent"
CROWD_PARAMS = 0.10  # parameter counts within 10% are near-duplicates
MAX_CHILDREN = 4  # a parent with this many recent children yields to others
REFIT_ATTR = "einnas_refit"  # study user attribute: the latest refit (rows, trials)
_BLEND_HALF = 25  # study rows at which the refitted predictor weighs as much as the shipped one
MIN_TIMED = 5  # trained trials before the time estimate is calibrated on the study's own
#: The study-local predictor's settings (the rest comes from the loaded predictor's config).
STUDY_FIT = dict(members=3, trees=150, gate_trees=75, depth=4, learning_rate=0.05, rank_weight=1.0)


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
                 kappa: float = DEFAULT_KAPPA, refit_every: int = DEFAULT_REFIT_EVERY,
                 diversity: float = DEFAULT_DIVERSITY):
        super().__init__(base.space)
        self.base, self.ranker = base, ranker
        self.candidates, self.kappa, self.refit_every = max(1, candidates), kappa, refit_every
        self.diversity = diversity
        self._refits: dict[tuple, object] = {}  # (rows) -> predictor: a cache derived from the study
        self.study = None  # set by the search: where the latest refit is recorded (optional)
        # set by the search (objectives.Objectives): other objectives than accuracy alone
        # rank by expected hypervolume improvement (ehvi.py); None: by predicted accuracy
        self.objectives = None
        self._front_ranker = None
        # set by the search (a grammar.seeds.SeedBudget, budget_for_training): proposals whose
        # estimated epoch is over its max_epoch_seconds rank last; None: no bound
        self.budget = None
        self._epoch_estimates: dict[str, float] = {}  # archid -> estimated seconds per epoch (a cache)

    def settings(self) -> dict:
        return {**self.base.settings(), "assisted": {
            "candidates": self.candidates, "kappa": self.kappa, "refit_every": self.refit_every,
            "diversity": self.diversity, "predictor": predictor_id(self.ranker.predictor)}}

    def propose(self, view: StudyView, trial_number: int, rng: random.Random) -> Proposal:
        first = self.base.propose(view, trial_number, rng)
        if first.seed or self.candidates == 1:
            return first
        proposals, seen = [first], {first.arch.archid}
        for _ in range(3 * self.candidates):
            if len(proposals) >= self.candidates:
                break
            proposal = self.base.propose(view, trial_number, rng)
            archid = proposal.arch.archid
            if archid in seen or archid in view.taken or proposal.seed:
                continue
            seen.add(archid)
            proposals.append(proposal)
        recent = [r for r in view.records if r.claim][-CROWD_WINDOW:]
        children: dict[int, int] = {}
        for r in recent:
            if r.parent is not None:
                children[r.parent] = children.get(r.parent, 0) + 1
        open_ = [p for p in proposals if p.parent is None or children.get(p.parent, 0) < MAX_CHILDREN]
        proposals = open_ or proposals  # a crowded parent's children only when nothing else is left
        within = [p for p, ok in zip(proposals, self.within_budget([p.arch for p in proposals], view)) if ok]
        proposals = within or proposals  # the ones estimated too slow only when nothing else is left
        scores = self.scores([p.arch for p in proposals], view)
        if self.objectives is not None and not self.objectives.default:  # a deployment search: ehvi.py
            scores = self._front().scores([p.arch for p in proposals], view, rng, scores, refit=self._refit(view))
        return proposals[int(np.argmax(scores))]  # the first of the best on ties

    def _front(self):
        if self._front_ranker is None:
            from einnas.search.ehvi import FrontRanker

            self._front_ranker = FrontRanker(self.objectives, self.ranker)
        return self._front_ranker

    def scores(self, archs: Sequence, view: StudyView) -> np.ndarray:
        """The ranking score of each architecture (higher is better): predicted mean plus
        ``kappa`` ensemble stds, blended with the study's own refit, minus the crowding
        penalty (see the module docstring)."""
        graphs = self.ranker.graphs(archs)
        mean, std = self.ranker.predict(graphs)
        score = mean + self.kappa * std
        refit = self._refit(view)
        if refit is not None:
            predictor, rows = refit
            own, own_std = self.ranker.predict(graphs, predictor)
            w = rows / (rows + _BLEND_HALF)
            score = (1 - w) * _standardise(score) + w * _standardise(own + self.kappa * own_std)
        if self.diversity:
            score = _standardise(score) - self.diversity * self.crowding(archs, view)
        return np.where(np.isfinite(score), score, -np.inf)

    def within_budget(self, archs: Sequence, view: StudyView) -> list[bool]:
        """For each architecture, whether its estimated training time is within
        :attr:`budget` (module docstring); all True without a budget. An architecture
        that cannot be estimated counts as within."""
        if self.budget is None or self.budget.max_epoch_seconds is None:
            return [True] * len(archs)
        pace = self.pace(view)
        return [not (pace * self._epoch_seconds(a) > self.budget.max_epoch_seconds) for a in archs]

    def pace(self, view: StudyView) -> float:
        """Measured over estimated seconds per epoch: the median over the study's last
        :data:`CROWD_WINDOW` trained trials, 1 before :data:`MIN_TIMED` of them."""
        import statistics

        ratios = []
        timed = [r for r in view.records if r.scored_by == "trained" and r.arch and r.seconds
                 and r.attrs.get(CURVE)][-CROWD_WINDOW:]
        for r in timed:
            estimate = self._epoch_seconds(r.arch, r.archid)
            if estimate > 0:
                ratios.append(r.seconds / (len(r.attrs[CURVE]) * estimate))
        return statistics.median(ratios) if len(ratios) >= MIN_TIMED else 1.0

    def _epoch_seconds(self, arch, archid: str | None = None) -> float:
        """Estimated seconds of one training epoch on one thread (0 when it cannot be estimated)."""
        from einnas.grammar.scaling import epoch_seconds, estimate

        key = archid or arch.archid
        if key not in self._epoch_estimates:
            try:
                arch = self.space.parse(arch) if isinstance(arch, str) else arch
                figures = estimate(arch, self.space.input_shape, self.space.num_classes)
                self._epoch_estimates[key] = epoch_seconds(figures, self.budget.train_size, self.budget.batch_size)
            except EinnasError:
                self._epoch_estimates[key] = 0.0
        return self._epoch_estimates[key]

    @staticmethod
    def crowding(archs: Sequence, view: StudyView) -> np.ndarray:
        """For each architecture, how many of the last :data:`CROWD_WINDOW` trials have a
        parameter count within :data:`CROWD_PARAMS` of its own."""
        sizes = [r.params for r in view.records if r.claim and r.params][-CROWD_WINDOW:]
        out = np.zeros(len(archs))
        for i, arch in enumerate(archs):
            params = arch.info.params if arch.info else None
            if params:
                out[i] = sum(abs(size - params) <= CROWD_PARAMS * params for size in sizes)
        return out

    @staticmethod
    def training_rows(view: StudyView, limit: int | None = None) -> list[tuple[int, str, float]]:
        """(trial number, architecture, target) of the first ``limit`` trained trials with a
        fitness, in number order; the target is ``rungs passed + accuracy`` (module
        docstring), the levels counted among these rows only (so equal rows, equal fit)."""
        scored = [r for r in view.scored if r.scored_by == "trained" and r.arch][:limit]
        levels = sorted({r.fitness[0] for r in scored})  # full-budget candidates: the top level
        return [(r.number, r.arch, levels.index(r.fitness[0]) + r.fitness[1]) for r in scored]

    def _refit(self, view: StudyView):
        if self.refit_every <= 0:
            return None
        available = sum(1 for r in view.scored if r.scored_by == "trained" and r.arch)
        rows = (available // self.refit_every) * self.refit_every
        if rows < max(self.refit_every, MIN_REFIT_ROWS):
            return None
        trained = self.training_rows(view, rows)
        key = tuple(number for number, _, _ in trained[:rows])
        if key not in self._refits:
            self._refits[key] = self._fit([(arch, y) for _, arch, y in trained[:rows]])
            self._record(rows, key, self._refits[key] is not None)
        predictor = self._refits[key]
        return None if predictor is None else (predictor, rows)

    def _record(self, rows: int, numbers: tuple, ok: bool) -> None:
        """Write the latest refit on the study (information only: nothing reads it back)."""
        if self.study is None:
            return
        try:
            self.study.set_user_attr(REFIT_ATTR, {"rows": rows, "last_trial": numbers[-1], "ok": ok,
                                                  "blend_weight": round(rows / (rows + _BLEND_HALF), 3)})
        except Exception:  # noqa: BLE001 - a note for people; the search does not depend on it
            pass

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
        # small and shallow, as measured in the search benchmarks: a study's few hundred trials,
        # refitted often within the search's budget
        config = replace(self.ranker.predictor.config, **STUDY_FIT, seed=len(keep), use_proxies=False)
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
    needs_predictor = True

    @classmethod
    def create(cls, context):
        if context.surrogate == "none":
            from einnas.errors import UsageError

            raise UsageError("--evaluator surrogate needs a predictor: --surrogate default or --surrogate PATH")
        return make_evaluator(context.surrogate, space=context.space, dataset=context.dataset)

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
                  candidates: int = DEFAULT_CANDIDATES, kappa: float = DEFAULT_KAPPA,
                  refit_every: int = DEFAULT_REFIT_EVERY, diversity: float = DEFAULT_DIVERSITY,
                  budget=None) -> Strategy:
    """The hook of ``einnas search --surrogate default|PATH``: wrap ``base`` in an :class:`AssistedStrategy`.
    ``budget`` (a ``SeedBudget``, :func:`time_budget`): proposals too slow for it rank last."""
    strategy = AssistedStrategy(base, SurrogateRanker(_load(surrogate), space), candidates, kappa, refit_every,
                                diversity)
    strategy.budget = budget
    return strategy


def time_budget(dataset, config):
    """The budget :func:`make_strategy` ranks proposals against: ``config``'s epochs (a ``TrainConfig``)
    over ``dataset``'s training split within its seconds."""
    from einnas.grammar import budget_for_training

    return budget_for_training(dataset.sizes()["train"], config.epochs, config.seconds, batch_size=config.batch_size)


def make_evaluator(surrogate: str, *, space: SearchSpace, dataset=None) -> Evaluator:
    """The hook of ``einnas search --evaluator surrogate``: a :class:`SurrogateEvaluator`."""
    return SurrogateEvaluator(SurrogateRanker(_load(surrogate), space))
