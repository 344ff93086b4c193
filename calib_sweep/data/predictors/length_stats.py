"""Token length statistics of a set's windows, from the manifest (arXiv 2602.07465 relates calibration
quality to sequence length; Williams & Aletras 2024 cut documents into windows).

* ``documents_per_window``: mean number of document pieces per row (1 = every row from one document);
* ``mean_piece_tokens`` / ``median_piece_tokens``: mean / median token length of those pieces (a piece
  is the contiguous span of one document in a row, its end-of-text token included).
"""

from __future__ import annotations

import numpy as np

from calib_sweep.data.predictors import SetContext, Unavailable, register_predictor


def _pieces(context: SetContext) -> list[list[int]]:
    rows = [[int(p["end"]) - int(p["start"]) for p in seq.get("pieces", ())] for seq in context.sequences]
    if not rows or not any(rows):
        raise Unavailable("the manifest has no document pieces (self-generated text)")
    return rows


@register_predictor("documents_per_window", unit="document pieces per row (mean); 1 = one document per row")
def documents_per_window(context: SetContext) -> float:
    """Mean over rows of ``len(sequence["pieces"])``."""
    return float(np.mean([len(r) for r in _pieces(context)]))


@register_predictor("mean_piece_tokens", unit="tokens per document piece in a row (mean)")
def mean_piece_tokens(context: SetContext) -> float:
    """Mean token length of every document piece of every row."""
    return float(np.mean([n for r in _pieces(context) for n in r]))


@register_predictor("median_piece_tokens", unit="tokens per document piece in a row (median)")
def median_piece_tokens(context: SetContext) -> float:
    """Median token length of every document piece of every row."""
    return float(np.median([n for r in _pieces(context) for n in r]))
