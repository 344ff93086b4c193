"""The report's display conventions, shared by every table (:mod:`.tables`, :mod:`.evidence_tables`,
:mod:`.layers`) and the HTML page (:mod:`.html`): the :class:`Table` they build and how one value is shown.

Accuracy in percent (``results.json`` holds fractions), everything else in its own unit; ``–``
(:data:`DASH`) marks an undefined figure (SD of one seed, a metric no finished job reported).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from calib_sweep.report.aggregate import is_accuracy, metric_label

DASH = "–"


@dataclass
class Table:
    """A titled table of display strings."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    anchor: str = ""
    figures: list[str] = field(default_factory=list)


def fmt(metric: str, value: float | None, *, spread: bool = False) -> str:
    """Display one value: accuracy in percent (2 decimals), others with 2 decimals or 3 significant digits."""
    if value is None:
        return DASH
    if not math.isfinite(value):
        return str(value)
    if is_accuracy(metric):
        return f"{value * 100:.2f}"
    if abs(value) >= 1 or (value == 0 and not spread):
        return f"{value:.2f}"
    return f"{value:.3g}"


def unit(metric: str) -> str:
    """A column header naming the metric and its display unit: ``piqa (%)``, ``ppl wikitext``."""
    return f"{metric_label(metric)} (%)" if is_accuracy(metric) else metric_label(metric)
