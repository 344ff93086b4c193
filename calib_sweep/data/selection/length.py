"""``selection=length``: windows cut from one document, or from the longest documents.

``mode: single_document`` (default) takes the windows that touch the fewest documents (1 = no
separator join inside the row), ties in pool order; if the share holds fewer than ``n`` single-document
windows the rest are the least-joined ones, and the manifest says how many were single-document.
``mode: longest_document`` takes the windows whose longest document is longest.
"""

from __future__ import annotations

from calib_sweep.data.selection import Candidates, Choice, register_strategy, take_order
from calib_sweep.errors import ConfigError

MODES = ("single_document", "longest_document")


def _validate(params: dict) -> None:
    if params["mode"] not in MODES:
        raise ConfigError(f"selection.mode={params['mode']!r} is unknown for selection=length. Fix: selection.mode=<one of {list(MODES)}>.")


@register_strategy(
    "length", defaults={"pool_factor": 4, "mode": "single_document"}, validate=_validate,
    score="single_document: documents the window touches (1 = one document); longest_document: tokens of the "
          "longest document it touches",
)
def choose(candidates: Candidates, n: int, params: dict) -> Choice:
    """Rank by documents touched (ascending) or longest document (descending); ``n`` indices."""
    if params["mode"] == "single_document":
        scores = candidates.n_documents.astype(float)
        picked = take_order(scores, n)
        return Choice(picked, scores[picked], {"single_document_windows": int((scores[picked] == 1).sum())})
    scores = candidates.longest_document.astype(float)
    picked = take_order(scores, n, descending=True)
    return Choice(picked, scores[picked])
