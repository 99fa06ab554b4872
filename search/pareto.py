"""Pareto fronts: dominance, non-dominated sorting, crowding distance, hypervolume, and
regularised evolution with NSGA-II selection.

Every function here works on *minimisation* vectors (``objectives.to_minimise`` turns a
trial's accuracy, latency, parameters and MACs into one: accuracy is negated). A point
``a`` dominates ``b`` when it is no worse in every objective and better in one.

:class:`ParetoEvolution` is einspace's regularised evolution with the tournament of
NSGA-II (Deb et al. 2002): a member of the population wins by, in order,

1. feasibility (constraint violation 0 first, then the smaller violation: Deb's
   constrained domination; ``--max-latency`` is such a constraint);
2. fidelity: the multi-fidelity level it reached (``records.TrialRecord.fitness``), so
   that accuracies are only compared at the same number of epochs;
3. its non-dominated rank among the feasible members of the population at that level;
4. its crowding distance within that rank (the less crowded wins).

The population and the ranks are recomputed from the study on every proposal, as
regularised evolution does, so several workers and a resumed search select alike.
"""

from __future__ import annotations

import math
from typing import Sequence

from einnas.search.strategies import Proposal, RegularisedEvolution

Vector = Sequence[float]


def dominates(a: Vector, b: Vector) -> bool:
    """Whether ``a`` dominates ``b`` (minimisation)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated_ranks(points: Sequence[Vector]) -> list[int]:
    """The front index of each point, 0 for the non-dominated ones (fast non-dominated sort)."""
    n = len(points)
    dominated_by = [0] * n  # how many points dominate i
    dominating: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominating[i].append(j)
                dominated_by[j] += 1
            elif dominates(points[j], points[i]):
                dominating[j].append(i)
                dominated_by[i] += 1
    ranks = [0] * n
    current = [i for i in range(n) if dominated_by[i] == 0]
    rank = 0
    while current:
        following = []
        for i in current:
            ranks[i] = rank
            for j in dominating[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        current, rank = following, rank + 1
    return ranks


def crowding_distances(points: Sequence[Vector]) -> list[float]:
    """NSGA-II crowding distance of each point within its set (one front): the sum over
    objectives of the normalised gap between its two neighbours; the extremes of each
    objective get ``inf``."""
    n = len(points)
    if n == 0:
        return []
    out = [0.0] * n
    for k in range(len(points[0])):
        order = sorted(range(n), key=lambda i: (points[i][k], i))
        low, high = points[order[0]][k], points[order[-1]][k]
        out[order[0]] = out[order[-1]] = math.inf
        if high == low:
            continue
        for left, mid, right in zip(order, order[1:], order[2:]):
            out[mid] += (points[right][k] - points[left][k]) / (high - low)
    return out


def pareto_front(points: Sequence[Vector]) -> list[int]:
    """Indices of the non-dominated points (duplicates of a front point all stay)."""
    return [i for i, r in enumerate(non_dominated_ranks(points)) if r == 0]


def hypervolume(points: Sequence[Vector], ref: Vector) -> float:
    """The volume dominated by ``points`` and bounded by the reference point ``ref``
    (minimisation; a point not better than ``ref`` in every objective adds nothing).
    Exact, by slicing along the last objective (fine for the few hundred points of a search)."""
    d = len(ref)
    pts = [tuple(p) for p in points if all(x < r for x, r in zip(p, ref))]
    if not pts:
        return 0.0
    pts = [pts[i] for i in pareto_front(pts)]
    return _hv(sorted(set(pts), key=lambda p: p[-1]), tuple(ref), d)


def _hv(pts: list[tuple], ref: tuple, d: int) -> float:
    if d == 1:
        return ref[0] - min(p[0] for p in pts)
    if d == 2:
        volume, best_x = 0.0, ref[0]
        for x, y in sorted(pts, key=lambda p: (p[1], p[0])):  # ascending y: each point adds a strip
            if x < best_x:
                volume += (best_x - x) * (ref[1] - y)
                best_x = x
        return volume
    volume = 0.0
    pts = sorted(pts, key=lambda p: p[-1])
    for i, p in enumerate(pts):
        top = pts[i + 1][-1] if i + 1 < len(pts) else ref[-1]
        if top > p[-1]:
            volume += (top - p[-1]) * _hv([q[:-1] for q in pts[: i + 1]], ref[:-1], d - 1)
    return volume


def promotes(point: Vector, others: Sequence[Vector], eta: int) -> bool:
    """Multi-objective successive halving (MO-ASHA, Schmucker et al. 2021) with NSGA-II's
    order: whether a candidate with ``point`` at a rung continues, given the ``others``
    that reached the rung before it. It continues when it is among the first
    ``max(1, n // eta)`` of the ``n`` points (its own included) sorted by non-dominated
    rank, then by crowding distance (the less crowded first), as Optuna's successive
    halving keeps the best ``n // eta`` accuracies. On ties it is placed after the others,
    so a duplicate of a promoted point is not promoted for free."""
    points = [*others, point]
    n = len(points)
    keys = selection_keys(points, [0] * n, [0.0] * n)  # all feasible, one fidelity: (rank, -crowding) decide
    ahead = sum(1 for key in keys[:-1] if key <= keys[-1])
    return ahead < max(1, n // max(1, eta))


def selection_keys(vectors: Sequence[Vector], levels: Sequence[int], violations: Sequence[float]) -> list[tuple]:
    """The NSGA-II tournament key of each population member (smaller wins; module docstring):
    (infeasible, violation, -level, rank, -crowding)."""
    keys: list[tuple] = [()] * len(vectors)
    groups: dict[int, list[int]] = {}
    for i, (level, violation) in enumerate(zip(levels, violations)):
        if violation > 0:
            keys[i] = (1, violation, -level, 0, 0.0)
        else:
            groups.setdefault(level, []).append(i)
    for level, members in groups.items():
        ranks = non_dominated_ranks([vectors[i] for i in members])
        for rank in set(ranks):
            front = [m for m, r in zip(members, ranks) if r == rank]
            for m, distance in zip(front, crowding_distances([vectors[i] for i in front])):
                keys[m] = (0, 0.0, -level, rank, -distance)
    return keys


class ParetoEvolution(RegularisedEvolution):
    """Regularised evolution whose tournament picks by NSGA-II's constrained rank and
    crowding (module docstring) over the objectives of ``objectives``.

    ``objectives`` is an :class:`einnas.search.objectives.Objectives`; the population,
    its ageing and the initial population are regularised evolution's.
    """

    def __init__(self, space, population, tournament, init=(), *, objectives):
        super().__init__(space, population, tournament, init)
        self.objectives = objectives

    def settings(self):
        return {**super().settings(), "selection": "pareto"}

    def propose(self, view, trial_number, rng):
        members = self._population(view)
        if members is None:
            return self._initial(view, rng)
        scored, vectors = [], []
        for m in members:
            vector = self.objectives.minimise(m)
            if vector is not None:
                scored.append(m)
                vectors.append(vector)
        if not scored:
            return super().propose(view, trial_number, rng)  # RE's own fallback (no score yet)
        keys = selection_keys(vectors, [m.fitness[0] for m in scored], [m.violation for m in scored])
        picks = [rng.randrange(len(scored)) for _ in range(self.tournament)]
        winner = min(picks, key=lambda i: keys[i])  # the first of the best on ties
        parent = scored[winner]
        return Proposal(self.space.mutate(self._arch(parent.arch), rng), "mutation", parent.number)
