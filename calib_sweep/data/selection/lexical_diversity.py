"""``selection=lexical_diversity``: greedy maximisation of distinct token n-grams over the set.

Start from the window with the most distinct n-grams (``ngram`` tokens), then repeatedly add the
window that adds the most n-grams not yet in the set (ties: pool order), so rows repeat each other as
little as possible.  This is the greedy algorithm for monotone submodular coverage (Nemhauser, Wolsey
& Fisher 1978: within ``1 - 1/e`` of the best set).
"""

from __future__ import annotations

import numpy as np

from calib_sweep.data.selection import Candidates, Choice, register_strategy
from calib_sweep.errors import ConfigError


def ngrams(row: np.ndarray, size: int) -> set[tuple[int, ...]]:
    """Distinct ``size``-grams of a token row (``int64 [L]``) as tuples of ids."""
    values = row.tolist()
    return {tuple(values[i : i + size]) for i in range(len(values) - size + 1)}


def _validate(params: dict) -> None:
    size = params["ngram"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"selection.ngram={size!r} must be an integer >= 1. Fix: e.g. selection.ngram=3.")


@register_strategy(
    "lexical_diversity", defaults={"pool_factor": 4, "ngram": 3}, validate=_validate,
    score="new distinct token n-grams the window added to the set when chosen (greedy gain)",
)
def choose(candidates: Candidates, n: int, params: dict) -> Choice:
    """Greedy coverage of distinct n-grams; ``n`` indices in the order chosen."""
    grams = [ngrams(row, int(params["ngram"])) for row in candidates.rows]
    covered: set[tuple[int, ...]] = set()
    left = list(range(len(grams)))
    picked, gains = [], []
    for _ in range(n):
        gain = [len(grams[i] - covered) for i in left]
        best = int(np.argmax(gain))  # first maximum: pool order breaks ties
        index = left.pop(best)
        picked.append(index)
        gains.append(float(gain[best]))
        covered |= grams[index]
    return Choice(np.array(picked, dtype=np.int64), np.array(gains), {"distinct_ngrams": len(covered)})
