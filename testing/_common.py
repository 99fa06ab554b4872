"""Shared pieces of the contract suites: a small search space and views of fake studies."""

from __future__ import annotations

import hashlib
import json
import random

INPUT_SHAPE, NUM_CLASSES = (1, 8, 8), 10


def small_space():
    """The built-in einspace grammar on 1x8x8 inputs, 10 classes, small candidates (fast to build)."""
    from einnas.grammar import Limits, load_grammar
    from einnas.search.space import SearchSpace

    return SearchSpace(load_grammar(), INPUT_SHAPE, NUM_CLASSES, Limits(max_params=50_000, max_activations=20_000))


def score_of(archid: str) -> float:
    """A made-up accuracy in [0.1, 0.9] that depends on the archid only."""
    return 0.1 + 0.8 * int(hashlib.blake2b(archid.encode(), digest_size=4).hexdigest(), 16) / 0xFFFFFFFF


def fake_view(space, n: int, origin: str = "init", seed: int = 0):
    """A study view of ``n`` completed trials of sampled architectures with made-up scores."""
    from einnas.search.records import StudyView, TrialRecord

    rng = random.Random(f"einnas:contract:{seed}")
    records = []
    for number in range(n):
        arch = space.sample(rng)
        records.append(TrialRecord(number, "COMPLETE", score_of(arch.archid), arch.string, arch.archid,
                                   arch.info.params if arch.info else None, origin, None, "trained", None, "",
                                   0.1, False, None, {}))
    return StudyView(records)


def assert_json(value, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise AssertionError(f"{what} must be JSON-able (it is stored in the study): {error}") from None
