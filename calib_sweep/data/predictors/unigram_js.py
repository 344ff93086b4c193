"""``unigram_js_distance``: Jensen-Shannon distance of the set's unigram distribution to the held-out text's.

Both distributions are token-id frequencies over the union of the ids seen (BOS and separator excluded);
the distance is :func:`scipy.spatial.distance.jensenshannon` with base 2, in [0, 1] (0 = identical
distributions).  The held-out text is the set's own source's held-out tenth (Ji et al., ICLR 2025,
arXiv 2410.17711, relate calibration quality to similarity with the model's training distribution; the
held-out text stands in for it here).
"""

from __future__ import annotations

import numpy as np

from calib_sweep.data.predictors import SetContext, Unavailable, register_predictor, unigram_counts


def js_distance(a: dict[int, int], b: dict[int, int]) -> float:
    """Jensen-Shannon distance (base 2) of two token-count tables, in [0, 1].

    Raises:
        Unavailable: one of them is empty.
    """
    from scipy.spatial.distance import jensenshannon

    if not a or not b:
        raise Unavailable("an empty token distribution")
    ids = sorted(set(a) | set(b))
    p = np.array([a.get(i, 0) for i in ids], dtype=np.float64)
    q = np.array([b.get(i, 0) for i in ids], dtype=np.float64)
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2))


@register_predictor("unigram_js_distance", unit="Jensen-Shannon distance (base 2) to the held-out unigrams, [0, 1]; 0 = same")
def unigram_js_distance(context: SetContext) -> float:
    """:func:`js_distance` of the set's rows and ``context.heldout_tokens``.

    Raises:
        Unavailable: no held-out text (a self-generated set, or none given).
    """
    if context.heldout_tokens is None or len(context.heldout_tokens) == 0:
        raise Unavailable("no held-out text of the source")
    skip = (context.separator_token_id, context.bos_token_id)
    return js_distance(unigram_counts(context.text_rows(), skip), unigram_counts(context.heldout_tokens, skip))
