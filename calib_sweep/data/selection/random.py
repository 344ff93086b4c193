"""``selection=random``: the seeded disjoint draw (the study's protocol, Williams & Aletras 2024, Section 3).

With ``pool_factor`` = 1 (the default) the share of seed ``k`` is the set: no window is scored or dropped,
so the rows, hash and manifest are exactly those of :func:`calib_sweep.data.sampling.draw_calibration_set`
without a selection.  With ``pool_factor`` = f > 1 the set is the first ``n`` of the share's ``n * f``
windows in permutation order: experiment=selection uses f = 4 so that random draws from the same pool as
the strategies it is compared with (a paired comparison, issue 27 item 6).
"""

from __future__ import annotations

import numpy as np

from calib_sweep.data.selection import Candidates, Choice, register_strategy


@register_strategy("random", defaults={"pool_factor": 1}, score="none (every window of the share is taken)")
def choose(candidates: Candidates, n: int, params: dict) -> Choice:
    """The first ``n`` candidates of the share, in permutation order (all of it when ``pool_factor=1``)."""
    return Choice(np.arange(n, dtype=np.int64), np.zeros(n))
