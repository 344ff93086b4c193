"""``mean_dense_perplexity``: ``exp`` of the dense model's mean next-token NLL over the set's rows
(Ji et al., ICLR 2025, arXiv 2410.17711: low-perplexity calibration data), as ``data inspect`` shows it.

From ``context.features["nll"]`` (per-row NLL a job already computed, e.g. ``selection=perplexity``'s
scores) when present, else from the model (:func:`calib_sweep.data.selection.scoring.window_features`).
"""

from __future__ import annotations

import math

import numpy as np

from calib_sweep.data.predictors import SetContext, Unavailable, register_predictor


@register_predictor("mean_dense_perplexity", needs_model=True, unit="exp(mean NLL) of the rows on the dense model; lower = more typical")
def mean_dense_perplexity(context: SetContext) -> float:
    """``exp(mean(nll))`` over rows.

    Raises:
        Unavailable: neither ``features["nll"]`` nor the model.
    """
    nll = context.features.get("nll")
    if nll is None:
        if context.model is None:
            raise Unavailable("no model (--no-model), and the job computed no per-row NLL")
        import torch

        from calib_sweep.data.selection.scoring import window_features

        nll = window_features(context.model, torch.as_tensor(np.asarray(context.input_ids)), "nll",
                              batch_size=context.batch_size, desc="predictors: perplexity")
    return math.exp(float(np.mean(np.asarray(nll, dtype=np.float64))))
