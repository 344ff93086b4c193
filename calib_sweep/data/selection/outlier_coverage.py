"""``selection=outlier_coverage``: greedy weighted set cover of the dense model's outlier input channels (COVERCAL).

COVERCAL (Shihab, Akter & Sharma 2026, arXiv 2604.24008) casts calibration selection as weighted set cover
over outlier channels and solves it greedily.  Here, on the share's candidate windows, with the rule of
``data inspect --activations`` (:mod:`calib_sweep.data.predictors.outlier_channel_coverage`):

* per target layer, ``tau = 6 x RMS`` of the layer's inputs over all candidates (from each window's mean
  square, equal token counts); an element is a (layer, input channel) whose peak ``|x|`` over the
  candidates exceeds ``tau``; its weight is the channel's largest candidate peak over ``tau``
  (magnitude), normalised so each layer's weights sum to 1 (layers count alike);
* window ``i`` covers element ``(l, c)`` when its own peak on ``c`` exceeds ``tau``;
* greedy: take the window whose uncovered elements weigh most (ties: pool order); when every element is
  covered (the gain is 0) the cover starts again on the windows left (a second cover), until ``n``.

The greedy algorithm is within ``1 - 1/e`` of the best weighted coverage for each size (Nemhauser, Wolsey &
Fisher 1978).  Features: ``channel_peaks`` of :mod:`calib_sweep.data.selection.scoring` (scored after the
model loads, cached like the other model features).
"""

from __future__ import annotations

import numpy as np

from calib_sweep.data.selection import Candidates, Choice, register_strategy
from calib_sweep.errors import ConfigError


def cover_elements(peaks: np.ndarray, mean_sq: np.ndarray, widths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(covers bool [m, e], weight float64 [e])`` of the outlier elements.

    Args:
        peaks: ``float32 [m, sum(widths)]`` each window's max ``|x|`` per (layer, channel), layers side by side.
        mean_sq: ``float64 [m, len(widths)]`` each window's mean square input per layer.
        widths: input channels of each layer, in column order.
    """
    from calib_sweep.methods.diagnostics import OUTLIER_RMS

    covers, weights = [], []
    begin = 0
    for layer, width in enumerate(widths):
        block = np.asarray(peaks[:, begin : begin + width], dtype=np.float64)
        begin += width
        tau = OUTLIER_RMS * float(np.sqrt(np.mean(mean_sq[:, layer])))
        hit = block > tau
        outlier = hit.any(axis=0)
        if not outlier.any():
            continue
        weight = block.max(axis=0)[outlier] / tau
        covers.append(hit[:, outlier])
        weights.append(weight / weight.sum())
    if not covers:
        return np.zeros((peaks.shape[0], 0), bool), np.zeros(0)
    return np.concatenate(covers, axis=1), np.concatenate(weights)


def greedy_cover(covers: np.ndarray, weight: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy weighted set cover: ``(indices int64 [n], gains float64 [n])`` (restarts once all is covered)."""
    m = covers.shape[0]
    left = np.ones(m, bool)
    uncovered = np.ones(covers.shape[1], bool)
    picked, gains = [], []
    for _ in range(n):
        gain = covers[:, uncovered].astype(np.float64) @ weight[uncovered] if uncovered.any() else np.zeros(m)
        gain[~left] = -1.0
        if gain.max() <= 0 and uncovered.sum() < uncovered.size:  # all covered: start a second cover
            uncovered[:] = True
            gain = covers.astype(np.float64) @ weight
            gain[~left] = -1.0
        best = int(np.argmax(gain))  # first maximum: pool order breaks ties
        picked.append(best)
        gains.append(float(max(gain[best], 0.0)))
        left[best] = False
        uncovered &= ~covers[best]
    return np.array(picked, dtype=np.int64), np.array(gains)


def _validate(params: dict) -> None:
    value = params["batch_size"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"selection.batch_size={value!r} must be an integer >= 1. Fix: e.g. selection.batch_size=8.")


@register_strategy(
    "outlier_coverage", defaults={"pool_factor": 4, "batch_size": 8}, needs=("channel_peaks",), validate=_validate,
    score="weight of outlier (layer, channel) elements the window newly covered when chosen (greedy gain; each layer's weights sum to 1)",
)
def choose(candidates: Candidates, n: int, params: dict) -> Choice:
    """Greedy weighted cover of ``features["channel_peaks"]``'s outlier elements; ``n`` indices in the order chosen."""
    from calib_sweep.data.selection.scoring import split_channel_peaks

    peaks, mean_sq, widths = split_channel_peaks(candidates.features["channel_peaks"])
    covers, weight = cover_elements(peaks, mean_sq, widths)
    picked, gains = greedy_cover(covers, weight, n)
    return Choice(picked, gains, {"outlier_elements": int(weight.size),
                                  "covered_weight": round(float(weight[covers[picked].any(axis=0)].sum()), 6)})
