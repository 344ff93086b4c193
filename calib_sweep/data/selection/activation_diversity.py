"""``selection=activation_diversity``: one window per k-means cluster of the dense model's activations.

Each candidate is the mean over its tokens of the hidden state of layer ``layer`` (index into
``output_hidden_states``: 0 = embeddings; ``null`` = the middle layer, ``num_hidden_layers // 2``).
scikit-learn's :class:`~sklearn.cluster.KMeans` (``n`` clusters, Lloyd's algorithm with k-means++
initialisation, Arthur & Vassilvitskii 2007; seeded by ``kmeans_seed``) clusters the share's
candidates, and the window nearest each centre is taken, so the set covers the activation space as
evenly as ``n`` points can.  Rows are in cluster order.
"""

from __future__ import annotations

import numpy as np

from calib_sweep.data.selection import Candidates, Choice, register_strategy
from calib_sweep.errors import ConfigError


def _validate(params: dict) -> None:
    layer = params["layer"]
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise ConfigError(f"selection.layer={layer!r} must be null (the middle layer) or an integer. Fix: e.g. selection.layer=6.")
    for name in ("kmeans_seed", "batch_size"):
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "batch_size" else 0):
            raise ConfigError(f"selection.{name}={value!r} must be an integer >= {1 if name == 'batch_size' else 0}. Fix: e.g. selection.{name}=8.")


@register_strategy(
    "activation_diversity", defaults={"pool_factor": 4, "layer": None, "kmeans_seed": 0, "batch_size": 8},
    needs=("pooled",), validate=_validate,
    score="Euclidean distance of the window's mean-pooled hidden state to its k-means centre",
)
def choose(candidates: Candidates, n: int, params: dict) -> Choice:
    """k-means with ``n`` clusters on ``features["pooled"]`` (``[m, d]``); the member nearest each centre."""
    from sklearn.cluster import KMeans

    points = np.asarray(candidates.features["pooled"], dtype=np.float64)
    kmeans = KMeans(n_clusters=n, random_state=int(params["kmeans_seed"]), n_init=10).fit(points)
    distances = np.linalg.norm(points[:, None, :] - kmeans.cluster_centers_[None, :, :], axis=2)  # [m, n]
    picked, scores = [], []
    for cluster in range(n):
        members = np.flatnonzero(kmeans.labels_ == cluster)
        if members.size == 0:  # k-means leaves no cluster empty, but never take a window twice
            members = np.setdiff1d(np.arange(len(points)), picked)
        best = members[np.argmin(distances[members, cluster])]
        picked.append(int(best))
        scores.append(float(distances[best, cluster]))
    return Choice(np.array(picked, dtype=np.int64), np.array(scores), {"inertia": float(kmeans.inertia_)})
