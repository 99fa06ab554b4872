"""Surrogate-assisted choice for a deployment search: expected hypervolume improvement.

With ``--surrogate`` and objectives other than accuracy alone, the assisted strategy
(``assisted.py``) ranks its candidates here instead of by predicted accuracy alone:

* each candidate is exported once; the export is both described for the predictor and
  timed in onnxruntime (``einnas.evaluate.latency``), its parameters and MACs are
  analytic, so only accuracy is predicted;
* the predicted accuracy is a normal distribution: the shipped predictor's ensemble
  mean and standard deviation, blended with the study's own refit (weight ``w``, as in
  ``assisted.py``) once there is one;
* the score is the expected improvement of the hypervolume of the study's current
  front (its COMPLETE, feasible trials) when the candidate joins it, by Monte Carlo
  with :data:`SAMPLES` accuracy draws shared by all candidates (common random numbers:
  differences between candidates are not sampling noise). The reference point is 0
  accuracy and 1.1 x the largest cost seen (study and candidates) in each other objective;
* a candidate over ``--max-latency`` is ranked below every feasible one; when no
  candidate improves the front in any draw, the predicted-accuracy ranking of
  ``assisted.py`` decides (the first of the best on ties, as everywhere).

Latency and descriptions of ranked candidates are kept in memory by archid (caches
derived from the architecture, not search state).
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np

from einnas.errors import EinnasError
from einnas.search.pareto import hypervolume, pareto_front
from einnas.search.records import StudyView

SAMPLES = 32
REF_MARGIN = 1.1


class FrontRanker:
    """Measures the candidates' cost objectives and scores them by expected hypervolume improvement."""

    def __init__(self, objectives, ranker):
        self.objectives, self.ranker = objectives, ranker
        self._latency: dict[str, float | None] = {}

    def costs(self, arch) -> dict:
        """The candidate's measured (not predicted) objectives: latency (ms), params, MACs;
        exporting it once fills the predictor's description cache too."""
        from einnas.evaluate.latency import arch_latency
        from einnas.search.objectives import analytic_macs
        from einnas.surrogate.describe import describe
        from einnas.surrogate.features import arch_key, from_description

        space = self.ranker.space
        out = {"params": arch.info.params if arch.info else None,
               "macs": analytic_macs(arch, space.input_shape, space.num_classes)}
        if self.objectives.measures_latency:
            if arch.archid not in self._latency:
                key = arch_key(arch.archid, space.input_shape, space.num_classes)

                def describe_once(model):
                    if self.ranker.cache.get(key) is None:
                        self.ranker.cache.put(from_description(describe(model), key))

                try:
                    self._latency[arch.archid] = arch_latency(arch, space.input_shape, space.num_classes,
                                                              self.objectives.latency, on_export=describe_once).ms
                except EinnasError:
                    self._latency[arch.archid] = None
            out["latency"] = self._latency[arch.archid]
        return out

    def scores(self, archs: Sequence, view: StudyView, rng: random.Random, fallback: np.ndarray,
               refit=None) -> np.ndarray:
        """One score per candidate, higher is better (module docstring). ``fallback`` is the
        predicted-accuracy ranking; ``refit`` the study's own ``(predictor, rows)`` or None."""
        o = self.objectives
        costs = [self.costs(a) for a in archs]
        graphs = self.ranker.graphs(archs)
        mean, std = self.ranker.predict(graphs)
        if refit is not None:
            predictor, rows = refit
            own, own_std = self.ranker.predict(graphs, predictor)
            w = rows / (rows + 25)
            mean = (1 - w) * mean + w * own
            std = np.sqrt((1 - w) * std ** 2 + w * own_std ** 2)
        feasible = np.array([o.max_latency is None or (c.get("latency") is not None and c["latency"] <= o.max_latency)
                             for c in costs])
        fallback = np.where(np.isfinite(fallback), fallback, -1e9)
        if not o.multi:  # accuracy under a latency budget: the accuracy ranking among the feasible
            return np.where(feasible, fallback, fallback - 1e12)
        gain = self.expected_improvement(costs, mean, std, view, rng)
        # EHVI first; the accuracy ranking breaks ties (e.g. no candidate improves the front)
        order = np.lexsort((-fallback, -gain))  # ascending on -gain, then -fallback
        score = np.empty(len(archs))
        score[order] = -np.arange(len(archs), dtype=float)
        return np.where(feasible, score, score - 1e12)

    def expected_improvement(self, costs, mean, std, view: StudyView, rng: random.Random) -> np.ndarray:
        """Monte-Carlo expected hypervolume improvement of each candidate (0 where it has no estimate)."""
        o = self.objectives
        members = [r for r in view.completed if r.feasible and o.minimise(r) is not None]
        front = [o.minimise(r) for r in members]
        front = [front[i] for i in pareto_front(front)] if front else []
        others = [n for n in o.names if n != "accuracy"]
        ref = []
        for name in o.names:
            if name == "accuracy":
                ref.append(0.0)  # -accuracy < 0: any accuracy above 0 counts
                continue
            k = o.names.index(name)
            seen = [p[k] for p in front] + [c[name] for c in costs if c.get(name) is not None]
            ref.append(REF_MARGIN * max(seen) if seen and max(seen) > 0 else 1.0)
        base = hypervolume(front, ref) if front else 0.0
        draws = np.random.default_rng(rng.getrandbits(32)).standard_normal(SAMPLES)
        out = np.zeros(len(costs))
        for i, c in enumerate(costs):
            if not math.isfinite(mean[i]) or any(c.get(n) is None for n in others):
                continue
            accuracies = np.clip(mean[i] + std[i] * draws, 0.0, 1.0)
            total = 0.0
            for a in accuracies:
                point = tuple(-float(a) if n == "accuracy" else float(c[n]) for n in o.names)
                total += hypervolume(front + [point], ref) - base
            out[i] = total / SAMPLES
        return out
