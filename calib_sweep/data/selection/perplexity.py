"""``selection=perplexity``: windows ranked by the dense model's perplexity, a band of them taken.

``band: low`` takes the ``n`` lowest-perplexity windows of the share, ``high`` the highest, ``mid``
the ``n`` around the median (sorted positions ``[(m - n) // 2, (m - n) // 2 + n)``).  Ties keep pool
order.  Perplexity-based data selection follows Marion et al. 2023, *When Less is More:
Investigating Data Pruning for Pretraining LLMs at Scale* (arXiv 2309.04564), applied here to
calibration windows.
"""

from __future__ import annotations

import numpy as np

from calib_sweep.data.selection import Candidates, Choice, register_strategy, take_order
from calib_sweep.errors import ConfigError

BANDS = ("low", "mid", "high")


def _validate(params: dict) -> None:
    if params["band"] not in BANDS:
        raise ConfigError(f"selection.band={params['band']!r} is unknown. Fix: selection.band=<one of {list(BANDS)}>.")
    size = params["batch_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"selection.batch_size={size!r} must be an integer >= 1. Fix: e.g. selection.batch_size=8.")


@register_strategy(
    "perplexity", defaults={"pool_factor": 4, "band": "low", "batch_size": 8}, needs=("nll",), validate=_validate,
    score="dense model's perplexity of the window (exp of mean next-token NLL in nats)",
)
def choose(candidates: Candidates, n: int, params: dict) -> Choice:
    """The ``band`` of ``n`` windows by perplexity ``exp(features["nll"])``."""
    ppl = np.exp(candidates.features["nll"].astype(np.float64))
    ranked = take_order(ppl, len(candidates))
    start = {"low": 0, "mid": (len(candidates) - n) // 2, "high": len(candidates) - n}[params["band"]]
    picked = ranked[start : start + n]
    if params["band"] == "high":
        picked = picked[::-1].copy()  # highest first
    return Choice(picked, ppl[picked])
