"""``selection=dedup``: the random draw with near-duplicate windows removed first.

Candidates are visited in pool order; a window whose estimated Jaccard similarity of token
``shingle``-grams with an already kept window reaches ``threshold`` is dropped, and the first ``n``
kept windows are the set.  Similarity is estimated with MinHash (Broder 1997) and candidates found
with MinHash LSH (``datasketch.MinHashLSH``; Leskovec, Rajaraman & Ullman, *Mining of Massive
Datasets*, ch. 3), ``num_perm`` permutations seeded by ``minhash_seed``.
"""

from __future__ import annotations

import numpy as np

from calib_sweep.data.selection import Candidates, Choice, register_strategy
from calib_sweep.errors import ConfigError


def _validate(params: dict) -> None:
    threshold = params["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ConfigError(f"selection.threshold={threshold!r} must lie in (0, 1). Fix: e.g. selection.threshold=0.5.")
    for name in ("shingle", "num_perm"):
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"selection.{name}={value!r} must be an integer >= 1. Fix: e.g. selection.{name}=5.")


def minhash(row: np.ndarray, shingle: int, num_perm: int, seed: int):
    """``datasketch.MinHash`` of a token row's ``shingle``-grams (``int64 [L]`` -> sketch)."""
    from datasketch import MinHash

    values = row.tolist()
    grams = {" ".join(map(str, values[i : i + shingle])).encode() for i in range(max(len(values) - shingle + 1, 1))}
    sketch = MinHash(num_perm=num_perm, seed=seed)
    sketch.update_batch(sorted(grams))
    return sketch


@register_strategy(
    "dedup", defaults={"pool_factor": 2, "threshold": 0.5, "shingle": 5, "num_perm": 128, "minhash_seed": 1},
    validate=_validate,
    score="highest estimated Jaccard similarity (MinHash) with an earlier kept window (0 = none similar)",
)
def choose(candidates: Candidates, n: int, params: dict) -> Choice:
    """The first ``n`` candidates (pool order) that are not near-duplicates of an earlier kept one."""
    from datasketch import MinHashLSH

    threshold = float(params["threshold"])
    lsh = MinHashLSH(threshold=threshold, num_perm=int(params["num_perm"]))
    sketches = {}
    picked, scores, removed = [], [], 0
    for index, row in enumerate(candidates.rows):
        if len(picked) == n:
            break
        sketch = minhash(row, int(params["shingle"]), int(params["num_perm"]), int(params["minhash_seed"]))
        similar = max((sketch.jaccard(sketches[key]) for key in lsh.query(sketch)), default=0.0)
        if similar >= threshold:
            removed += 1
            continue
        lsh.insert(str(index), sketch)
        sketches[str(index)] = sketch
        picked.append(index)
        scores.append(float(similar))
    if len(picked) < n:
        raise ConfigError(
            f"selection=dedup kept only {len(picked)} of the {len(candidates)} candidate windows (threshold {threshold}); "
            f"{n} needed. Fix: raise selection.pool_factor or selection.threshold."
        )
    return Choice(np.array(picked, dtype=np.int64), np.array(scores), {"near_duplicates_removed": removed})
