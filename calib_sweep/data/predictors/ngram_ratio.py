"""``distinct_3gram_ratio``: distinct token 3-grams of the set over all its 3-grams (rows do not join).

The same statistic as ``data inspect``'s set line (:func:`calib_sweep.data.inspect.distinct_ngram_ratio`),
over the rows without their BOS token; 1.0 = no 3-gram occurs twice anywhere in the set.
"""

from __future__ import annotations

from calib_sweep.data.inspect import distinct_ngram_ratio
from calib_sweep.data.predictors import SetContext, register_predictor


@register_predictor("distinct_3gram_ratio", unit="distinct / all token 3-grams, (0, 1]; higher = less repetition")
def distinct_3gram_ratio(context: SetContext) -> float:
    """:func:`~calib_sweep.data.inspect.distinct_ngram_ratio` with ``n = 3`` of ``context.text_rows()``."""
    return distinct_ngram_ratio(context.text_rows(), 3)
