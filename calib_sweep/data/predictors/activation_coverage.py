"""``activation_coverage``: share of the source's k-means clusters (k = n_samples) that hold one of the
set's windows (COLA, Ho et al., NeurIPS 2025, arXiv 2510.10618: activation-space coverage).

The computation is ``data inspect --coverage``'s (:func:`calib_sweep.data.inspect.activation_coverage`):
every window of the source scored with the dense model (minutes on a CPU the first time, then cached).
"""

from __future__ import annotations

from calib_sweep.data.predictors import SetContext, Unavailable, register_predictor


@register_predictor("activation_coverage", needs_model=True, unit="share of the source's k-means clusters hit, (0, 1]")
def activation_coverage(context: SetContext) -> float:
    """The set's activation coverage (``features["activation_coverage"]`` when a caller has it).

    Raises:
        Unavailable: no model, no calibration set object, or not a document source.
    """
    if "activation_coverage" in context.features:
        return float(context.features["activation_coverage"])
    if context.model is None or context.calib is None:
        raise Unavailable("needs the dense model and the source's windows (inspect --predictors)")
    from calib_sweep.data.inspect import activation_coverage as coverage

    value, why = coverage(context.calib, context.model, context.dataset_cfg, context.tokenizer, context.selection,
                          context.separator_token_id, context.batch_size)
    if value is None:
        raise Unavailable(why)
    return value
