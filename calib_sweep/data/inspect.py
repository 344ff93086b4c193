"""Inspection of calibration samples (the study's third recommendation: look at the data, remove anomalies).

Per sample: length in characters and tokens, share of non-alphabetic characters (whitespace
excluded), share of repeated lines, share of distinct tokens, and a language guess from English
function-word frequency.  A sample is flagged when a statistic falls outside the range of ordinary
prose (thresholds in :data:`THRESHOLDS`).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_ENGLISH = set(
    "the of and to a in is that it was for on as with by be at this from or an are not have his but had "
    "they which you he she we were their been has its there can all one more will would also her into".split()
)

#: Flag thresholds: non-alphabetic share, repeated-line share, distinct-token share, English word share.
THRESHOLDS = {"non_alpha": 0.35, "repeated_lines": 0.3, "distinct_tokens": 0.2, "english_words": 0.08}


def guess_language(text: str) -> str:
    """``"en"`` when at least 8% of the words are common English function words, ``"code"`` when the
    text looks like source code, else ``"other"``."""
    words = re.findall(r"[A-Za-z']+", text.lower())
    if words and sum(w in _ENGLISH for w in words) / len(words) >= THRESHOLDS["english_words"]:
        return "en"
    if re.search(r"^\s*(def |class |import |from \S+ import |#include|function )", text, re.M):
        return "code"
    return "other"


def sample_stats(text: str, token_ids: list[int]) -> dict[str, Any]:
    """Statistics of one calibration sample.

    Args:
        text: the decoded sample.
        token_ids: its token ids (length = seq_len).

    Returns:
        ``{"chars", "tokens", "non_alpha", "repeated_lines", "distinct_tokens", "language"}``;
        shares are fractions in [0, 1].
    """
    visible = [c for c in text if not c.isspace()]
    non_alpha = sum(not c.isalpha() for c in visible) / max(len(visible), 1)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    counts = Counter(lines)
    repeated = sum(n for n in counts.values() if n > 1) / max(len(lines), 1)
    return {
        "chars": len(text),
        "tokens": len(token_ids),
        "non_alpha": round(non_alpha, 4),
        "repeated_lines": round(repeated, 4),
        "distinct_tokens": round(len(set(token_ids)) / max(len(token_ids), 1), 4),
        "language": guess_language(text),
    }


def flags(stats: dict[str, Any], expect_language: str = "en") -> list[str]:
    """Reasons a sample looks anomalous (empty list = ordinary)."""
    found = []
    if stats["non_alpha"] > THRESHOLDS["non_alpha"]:
        found.append(f"non-alphabetic {stats['non_alpha']:.0%}")
    if stats["repeated_lines"] > THRESHOLDS["repeated_lines"]:
        found.append(f"repeated lines {stats['repeated_lines']:.0%}")
    if stats["distinct_tokens"] < THRESHOLDS["distinct_tokens"]:
        found.append(f"only {stats['distinct_tokens']:.0%} distinct tokens")
    if expect_language and stats["language"] != expect_language:
        found.append(f"language {stats['language']}")
    return found


def inspect_set(calib, tokenizer, expect_language: str = "en") -> list[dict[str, Any]]:
    """Statistics and flags of every sample of a :class:`~calib_sweep.data.CalibrationSet`."""
    rows = []
    for index, ids in enumerate(calib.input_ids.tolist()):
        text = tokenizer.decode(ids)
        stats = sample_stats(text, ids)
        rows.append({"index": index, **stats, "flags": flags(stats, expect_language), "text": text})
    return rows
