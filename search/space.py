"""The search space a strategy acts on: a grammar bound to one input shape and limits.

Strategies never call the sampler with loose arguments; they hold a
:class:`SearchSpace` and ask it to sample, mutate or parse. Every call that draws
takes an explicit :class:`random.Random`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from einnas.grammar import Architecture, Grammar, Limits, analyse, mutate, parse_arch, sample_one


@dataclass(frozen=True)
class SearchSpace:
    """A grammar, the input shape and class count of a dataset, and sampling limits.

    Example::

        space = SearchSpace(load_grammar(), (1, 8, 8), 10, Limits(max_params=1_000_000))
        arch = space.sample(random.Random(0))
        child = space.mutate(arch, random.Random(1))
    """

    grammar: Grammar
    input_shape: tuple[int, ...]
    num_classes: int
    limits: Limits = field(default_factory=Limits)

    def sample(self, rng: random.Random) -> Architecture:
        """A fresh draw from the PCFG (the einspace random-sampling baseline)."""
        return sample_one(self.grammar, rng, self.input_shape, self.num_classes, self.limits)

    def mutate(self, arch: Architecture, rng: random.Random) -> Architecture:
        """Resample one random subtree of ``arch`` (never keeping its current choice).

        The child is validated analytically against the shape rules and the limits
        before it is returned (``einnas.grammar.mutate``).
        """
        return mutate(self.grammar, arch, rng, self.input_shape, self.num_classes, self.limits)

    def parse(self, text: str) -> Architecture:
        """Parse an architecture string and attach its analytic figures (``arch.info``).

        Raises :class:`~einnas.errors.ArchitectureError` when it does not parse or does not
        work for this input shape.
        """
        arch = parse_arch(text, self.grammar)
        if arch.info is None:
            arch.info = analyse(arch, self.input_shape, self.num_classes)
        return arch
