"""``zipf_alpha``: the exponent of a Zipf (power-law) fit to the set's token rank-frequency curve.

ZipCal (Monaco, Cunegatti, Vella & Iacca 2026, "Frequency Matters", arXiv 2603.16105) scores lexical
diversity with Zipf's law; its exact formula was not found in the sources this project could read (the
paper's abstract and code index name it, the method section was not reachable).  This module implements
the closest documented Zipf-fit score: count the set's token ids (BOS and separator excluded), rank them
by count (rank 1 = most frequent), and fit ``log f(r) = c - alpha * log r`` by ordinary least squares
(:func:`scipy.stats.linregress`) over every rank; the predictor is ``alpha``.  A flatter curve (smaller
``alpha``) spreads the tokens over more types: lower = more lexically diverse.
"""

from __future__ import annotations

import numpy as np

from calib_sweep.data.predictors import SetContext, Unavailable, register_predictor, unigram_counts


def zipf_exponent(counts) -> float:
    """``alpha`` of the least-squares fit ``log f = c - alpha log r`` to counts sorted by rank.

    Args:
        counts: the token counts (any order), ``>= 2`` distinct values of rank needed.

    Raises:
        Unavailable: fewer than 2 token types (no slope to fit).
    """
    from scipy.stats import linregress

    values = np.sort(np.asarray(list(counts), dtype=np.float64))[::-1]
    if values.size < 2:
        raise Unavailable(f"{values.size} token type(s): a Zipf fit needs at least 2")
    ranks = np.arange(1, values.size + 1, dtype=np.float64)
    return float(-linregress(np.log(ranks), np.log(values)).slope)


@register_predictor("zipf_alpha", unit="Zipf exponent of the set's token rank-frequency fit; lower = more diverse")
def zipf_alpha(context: SetContext) -> float:
    """:func:`zipf_exponent` of the set's unigram counts (BOS and separator excluded)."""
    return zipf_exponent(unigram_counts(context.text_rows(), (context.separator_token_id,)).values())
