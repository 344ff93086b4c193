"""Inspection of calibration samples (the study's third recommendation: look at the data, remove anomalies).

Per sample: length in characters and tokens, share of non-alphabetic characters (whitespace
excluded), share of repeated lines, share of distinct tokens, and a language guess from English
function-word frequency.  A sample is flagged when a statistic falls outside the range of ordinary
prose (thresholds in :data:`THRESHOLDS`).  Documents holding special-token strings (``<|endoftext|>``,
``<bos>``: tokenized as text, never as control tokens) are counted by :func:`special_token_documents`.
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


def special_token_strings(tokenizer) -> list[str]:
    """The strings of the tokenizer's special tokens (``<|endoftext|>``, ``<|im_start|>``, ``<bos>``,
    ...), longest first; ``[]`` for a tokenizer that has none."""
    found = set(getattr(tokenizer, "all_special_tokens", None) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            found.add(str(token.content))
    return sorted((s for s in found if s), key=lambda s: (-len(s), s))


def special_token_documents(docs, tokenizer) -> dict[str, Any]:
    """Documents whose text holds a special-token string of ``tokenizer``.

    Such strings are tokenized as text (:func:`calib_sweep.data.chat.encode_text`), so they never
    become control tokens; they are flagged because they are unusual in prose (leaked markup, a
    scraped chat log).  A chat document is searched in its message contents only (the template's
    markup is meant to be special).

    Args:
        docs: :class:`~calib_sweep.data.sources.Document` objects.
        tokenizer: the model's tokenizer.

    Returns:
        ``{"documents": int, "total": int, "strings": {string: documents holding it}, "doc_ids":
        [first 5 ids]}``.
    """
    strings = special_token_strings(tokenizer)
    counts: Counter = Counter()
    hits = []
    if strings:
        pattern = re.compile("|".join(re.escape(s) for s in strings))
        for doc in docs:
            texts = [str(m.get("content") or "") for m in doc.messages] if doc.messages is not None else [doc.text]
            found = {match.group(0) for text in texts for match in pattern.finditer(text)}
            if found:
                hits.append(doc.doc_id)
                counts.update(found)
    return {"documents": len(hits), "total": len(docs), "strings": dict(counts.most_common()), "doc_ids": hits[:5]}


def format_special_tokens(found: dict[str, Any], source: str, separator: int | None, bos: int | None) -> str:
    """One line for :func:`special_token_documents` (``data inspect``)."""
    shown = ", ".join(f"{s} in {n}" for s, n in list(found["strings"].items())[:5])
    return (f"special-token strings: {found['documents']} of {found['total']} documents of {source} contain them"
            + (f" ({shown}; e.g. {', '.join(found['doc_ids'][:3])})" if found["documents"] else "")
            + "; tokenized as text, so the only control ids in rows are "
            + (f"the separator ({separator})" if separator is not None else "none from documents (no separator)")
            + (f" and BOS ({bos})" if bos is not None else " (no BOS)"))


def inspect_set(calib, tokenizer, expect_language: str = "en") -> list[dict[str, Any]]:
    """Statistics and flags of every sample of a :class:`~calib_sweep.data.CalibrationSet`."""
    rows = []
    for index, ids in enumerate(calib.input_ids.tolist()):
        text = tokenizer.decode(ids)
        stats = sample_stats(text, ids)
        rows.append({"index": index, **stats, "flags": flags(stats, expect_language), "text": text})
    return rows


def distinct_ngram_ratio(input_ids, n: int = 3) -> float:
    """Distinct token ``n``-grams of a whole set over all its ``n``-grams (rows do not join), in (0, 1].

    Args:
        input_ids: ``int64 [rows, seq_len]`` token ids (tensor or array).
        n: n-gram length in tokens.

    Returns:
        The ratio (1.0 = no n-gram occurs twice anywhere in the set); 0.0 for rows shorter than ``n``.
    """
    grams = [tuple(row[i : i + n]) for row in input_ids.tolist() for i in range(len(row) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def set_stats(calib, model=None, dataset_cfg=None, tokenizer=None, selection=None, separator_token_id=-1,
              batch_size: int = 8, coverage: bool = True) -> dict[str, Any]:
    """Statistics that tell selection strategies apart, for one calibration set.

    * ``distinct_3gram_ratio``: :func:`distinct_ngram_ratio` with ``n = 3``.
    * ``mean_dense_perplexity``: ``exp`` of the dense model's mean next-token NLL over the set's rows.
    * ``activation_coverage``: the source's windows (every slot) are clustered by k-means (scikit-learn,
      ``k = n_samples``, seed 0) on the dense model's mean-pooled hidden states of the selection's layer
      (``selection.layer``; else the middle layer); the share of clusters holding at least one of the
      set's windows, in (0, 1].  Document sources only.

    A statistic that cannot be computed is ``None`` with its reason under ``"<name>_na"``.

    Args:
        calib: the :class:`~calib_sweep.data.CalibrationSet`.
        model: the dense model (``None``: the two model statistics are skipped).
        dataset_cfg, tokenizer, selection, separator_token_id: the set's source, tokenizer, ``selection``
            config and separator (for the coverage's source windows).
        batch_size: windows per forward pass.
        coverage: compute ``activation_coverage`` (it scores every window of the source with the model:
            minutes on a CPU for the offline sources, cached afterwards).
    """
    import math

    import numpy as np

    stats: dict[str, Any] = {"distinct_3gram_ratio": round(distinct_ngram_ratio(calib.input_ids, 3), 4)}
    if model is None:
        for name in ("mean_dense_perplexity", "activation_coverage"):
            stats[name], stats[f"{name}_na"] = None, "no model (--no-model)"
        return stats
    from calib_sweep.data.selection.scoring import window_features

    nll = window_features(model, calib.input_ids, "nll", batch_size=batch_size, desc="inspect: perplexity")
    stats["mean_dense_perplexity"] = round(math.exp(float(np.mean(nll))), 4)
    if not coverage:
        stats["activation_coverage"], stats["activation_coverage_na"] = None, (
            "not requested: inspect --coverage scores every window of the source (minutes on a CPU, then cached)")
        return stats
    stats["activation_coverage"], why = activation_coverage(calib, model, dataset_cfg, tokenizer, selection,
                                                            separator_token_id, batch_size)
    if why is not None:
        stats["activation_coverage_na"] = why
    return stats


def activation_coverage(calib, model, dataset_cfg, tokenizer, selection=None, separator_token_id=-1,
                        batch_size: int = 8) -> tuple[float | None, str | None]:
    """:func:`set_stats`'s ``activation_coverage`` of a set: ``(value in (0, 1], None)`` or ``(None, reason)``
    (document sources only; scores every window of the source with ``model``, cached)."""
    import numpy as np

    if dataset_cfg is None or dataset_cfg.get("loader") in ("mixture", "self_generated") or tokenizer is None:
        return None, "document sources only"
    from sklearn.cluster import KMeans

    from calib_sweep.data.sampling import token_stream
    from calib_sweep.data.selection.scoring import source_features
    from calib_sweep.data.sources import load_documents, split_documents

    docs, _ = split_documents(load_documents(dataset_cfg), float(dataset_cfg.heldout_fraction))
    stream, starts, info = token_stream(docs, tokenizer, separator_token_id)
    slot_len = calib.seq_len - (calib.bos_token_id is not None)
    n_slots = int(starts[-1]) // slot_len
    layer = (selection or {}).get("layer") if (selection or {}).get("name") == "activation_diversity" else None
    pooled, _ = source_features(model, np.asarray(stream), slot_len, n_slots, ("pooled",),
                                {"layer": layer, "batch_size": batch_size}, calib.bos_token_id, info.get("key"))
    k = min(calib.n_samples, n_slots)
    labels = KMeans(n_clusters=k, random_state=0, n_init=10).fit(np.asarray(pooled["pooled"], np.float64)).labels_
    hit = {int(labels[seq["slot"]]) for seq in calib.sequences}
    return round(len(hit) / k, 4), None


def format_set_stats(stats: dict[str, Any], calib) -> str:
    """One line with :func:`set_stats` (``n/a (reason)`` for a missing statistic)."""
    def show(name: str, fmt: str) -> str:
        return format(stats[name], fmt) if stats.get(name) is not None else f"n/a ({stats.get(name + '_na')})"

    strategy = calib.extra.get("selection", {}).get("strategy", "random")
    return (f"set (selection={strategy}): distinct 3-gram ratio {show('distinct_3gram_ratio', '.4f')}, "
            f"mean dense perplexity {show('mean_dense_perplexity', '.3f')}, "
            f"activation coverage {show('activation_coverage', '.3f')}"
            + (f" (share of k = {calib.n_samples} clusters of the source's windows hit)"
               if stats.get("activation_coverage") is not None else ""))
