"""``selection=zipf_diversity``: the windows richest in rare tokens under a Zipf fit of the share (after ZipCal).

ZipCal (Monaco, Cunegatti, Vella & Iacca 2026, arXiv 2603.16105) chooses calibration data that maximises
lexical diversity by Zipf's law in linear time; its exact scoring formula was not found in the sources this
project could read, so this is the closest documented form, stated exactly:

1. count the token ids over all candidate windows of the share; rank them by count (rank 1 = most
   frequent; ties by id) and fit the exponent ``alpha`` of ``f(r) ~ r^-alpha``
   (:func:`calib_sweep.data.predictors.zipf_alpha.zipf_exponent`, least squares on log-log);
2. each token type gets its information under that Zipf law, ``-log p(r) = alpha log r + log H``,
   ``H = sum_{r=1..V} r^-alpha`` (nats);
3. a window's score is the mean information of its *distinct* tokens (rare, varied vocabulary scores
   high; repeating one rare token does not); the ``n`` highest-scoring windows are taken (ties: pool
   order), in that order.

Linear in the share's tokens apart from the final sort; needs no model.
"""

from __future__ import annotations

import numpy as np

from calib_sweep.data.selection import Candidates, Choice, register_strategy, take_order


def zipf_information(rows: np.ndarray) -> tuple[dict[int, float], float]:
    """``({token id: -log p_zipf in nats}, alpha)`` for the tokens of ``rows`` (``int64 [m, L]``)."""
    from calib_sweep.data.predictors.zipf_alpha import zipf_exponent

    ids, counts = np.unique(np.asarray(rows, dtype=np.int64).reshape(-1), return_counts=True)
    order = np.lexsort((ids, -counts))  # by count, descending; ties by id
    alpha = zipf_exponent(counts) if ids.size >= 2 else 0.0
    ranks = np.arange(1, ids.size + 1, dtype=np.float64)
    log_h = float(np.log(np.sum(ranks ** -alpha)))
    info = alpha * np.log(ranks) + log_h
    return {int(ids[i]): float(info[k]) for k, i in enumerate(order)}, float(alpha)


@register_strategy(
    "zipf_diversity", defaults={"pool_factor": 4},
    score="mean Zipf information (-log p under the share's Zipf fit, nats) of the window's distinct tokens",
)
def choose(candidates: Candidates, n: int, params: dict) -> Choice:
    """The ``n`` windows of highest mean Zipf information of their distinct tokens."""
    info, alpha = zipf_information(candidates.rows)
    scores = np.array([np.mean([info[int(t)] for t in np.unique(row)]) for row in candidates.rows], dtype=np.float64)
    picked = take_order(scores, n, descending=True)
    return Choice(picked, scores[picked], {"zipf_alpha": round(alpha, 6)})
