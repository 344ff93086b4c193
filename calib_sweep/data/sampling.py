"""Calibration sets: seeded, pairwise-disjoint windows of ``seq_len`` tokens with a manifest.

Policy (the same for every source):

1. The calibration part of the source (see :mod:`calib_sweep.data.sources`) is tokenized document by
   document without special tokens, special-token strings in the text tokenized as text (a chat
   document is rendered with its chat template first, :mod:`calib_sweep.data.chat`); each document
   is followed by the model's end-of-text token
   (:func:`calib_sweep.models.document_separator`: ``<|endoftext|>`` for SmolLM2, ``<eos>`` for
   Gemma, the tokenizer's EOS token by default), recorded in the manifest as ``separator_token_id``.
2. The documents, in source order, form one token stream that is cut into non-overlapping *slots*
   of ``seq_len`` tokens.  Long documents therefore give several windows (nothing is dropped), and
   documents shorter than ``seq_len`` are concatenated with EOS separators (the tail of the stream
   shorter than ``seq_len`` is unused).
3. The slots are put in one fixed pseudo-random order (``dataset.permutation_seed``, not the job's
   seed), and seed ``k`` takes slots ``[k * n_samples, (k + 1) * n_samples)`` of that order.  Sets of
   the same size from different seeds are therefore pairwise disjoint by construction, as the study
   requires (Williams & Aletras 2024, Section 3: ten non-overlapping calibration sets per source).
4. Models that need a BOS token at the start of every sequence (``model.prepend_bos=true``, e.g.
   Gemma, whose perplexity without it is ~30x higher) get slots of ``seq_len - 1`` tokens with the
   BOS token put in front, so rows still hold ``seq_len`` tokens.
5. Too little data is an error, never a silent shrink: the message says how many disjoint sets of
   this size the source can give.  With ``samples.allow_fewer=true`` the draw instead takes the
   slots that remain for this seed (at least one), logs a warning, and the manifest records the
   ``n_samples`` actually used next to the ``n_samples_requested``.

The manifest records, per sequence, which document(s) and token spans it came from, plus a SHA-256
of all token ids, so a set can be published and rebuilt exactly.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from calib_sweep.data.sources import Document
from calib_sweep.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class CalibrationSet:
    """A drawn calibration set.

    Attributes:
        input_ids: ``int64`` tensor of shape ``[n_samples, seq_len]`` (token ids, no padding).
        sequences: one manifest entry per row: ``{"slot": int, "pieces": [{"doc_id", "start",
            "end"}]}`` where ``start``/``end`` are token offsets in that document (end exclusive;
            offset ``len(doc)`` is its EOS separator).
        source: dataset name.
        seed: the draw's seed.
        slots_available: number of ``seq_len`` slots the source's calibration part holds.
        documents_used: number of distinct documents the set's tokens come from.
        n_samples_requested: the configured ``n_samples`` (differs from ``n_samples`` only with
            ``allow_fewer``).
        token_sha256: SHA-256 of ``input_ids`` as little-endian int64 bytes.
        extra: kind-specific manifest fields (mixture components, generation settings).
        bos_token_id: the BOS token put in front of every row (``None``: rows are plain slots).
        separator_token_id: the token that ends every document in the stream (``None``: none).
        stream_cache: whether the token stream came from the cache (``{"reused", "key"}``; not part
            of the manifest).
        selection_scoring: for a model-based selection strategy, ``{"seconds", "windows", "reused",
            "keys"}`` of scoring the source's windows (not part of the manifest; empty otherwise).
    """

    input_ids: torch.Tensor
    sequences: list[dict[str, Any]]
    source: str
    seed: int
    slots_available: int
    documents_used: int = 0
    n_samples_requested: int = 0
    token_sha256: str = field(default="")
    extra: dict[str, Any] = field(default_factory=dict)
    bos_token_id: int | None = None
    separator_token_id: int | None = None
    stream_cache: dict[str, Any] = field(default_factory=dict)
    selection_scoring: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.token_sha256:
            self.token_sha256 = token_hash(self.input_ids)

    @property
    def n_samples(self) -> int:
        """Number of sequences (rows)."""
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        """Tokens per sequence."""
        return int(self.input_ids.shape[1])

    def manifest(self) -> dict[str, Any]:
        """JSON-ready record of this set (the ``calibration`` key of ``results.json``).

        A set chosen by a selection strategy other than ``random`` also has ``selection`` (strategy,
        parameters, score meaning, the share's candidate slots) and a ``score`` per sequence; a
        ``random`` set's manifest is the same as before selection strategies existed.
        """
        selection = self.extra.get("selection")
        share = self.n_samples * (selection["params"]["pool_factor"] if selection else 1)
        policy = ("documents joined with the end-of-text token (separator_token_id) into one stream; non-overlapping seq_len slots; "
                  "fixed slot permutation; seed k takes slots [k*n, (k+1)*n)")
        if selection:
            policy = policy.replace("seed k takes slots [k*n, (k+1)*n)",
                                    f"seed k's share is slots [k*n*f, (k+1)*n*f) (f = pool_factor); selection "
                                    f"{selection['strategy']} chooses n of them")
        return {
            "source": self.source,
            "seed": self.seed,
            "n_samples": self.n_samples,
            "n_samples_requested": self.n_samples_requested or self.n_samples,
            "seq_len": self.seq_len,
            "n_tokens": self.n_samples * self.seq_len,
            "slots_available": self.slots_available,
            "max_disjoint_sets": self.slots_available // max(share, 1),
            "documents_used": self.documents_used,
            "token_sha256": self.token_sha256,
            "bos_token_id": self.bos_token_id,
            "separator_token_id": self.separator_token_id,
            "policy": policy
            + ("; slots of seq_len - 1 tokens after a BOS token" if self.bos_token_id is not None else ""),
            **self.extra,
            "sequences": self.sequences,
        }


def token_hash(input_ids: torch.Tensor) -> str:
    """SHA-256 of a token-id tensor, as little-endian int64 bytes in row-major order."""
    array = np.ascontiguousarray(input_ids.detach().cpu().numpy().astype("<i8"))
    return hashlib.sha256(array.tobytes()).hexdigest()


def validate_row_order_seed(seed: Any) -> None:
    """Check ``perturb.row_order_seed`` (null, or an integer >= 0).

    Raises:
        ConfigError: anything else, named with the fix.
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(
            f"perturb.row_order_seed={seed!r} must be null (the drawn order) or an integer >= 0. "
            "Fix: e.g. perturb.row_order_seed=1."
        )


def permute_rows(input_ids: torch.Tensor, seed: int) -> tuple[torch.Tensor, list[int]]:
    """The calibration set's rows in a seeded random order (a numerical perturbation, not new data).

    Compression methods accumulate statistics (Hessians, activation norms) over the rows; a different
    order sums the same numbers in another order, so any change in the result is floating-point noise
    (``experiment=noise_floor``).

    Args:
        input_ids: ``[n_samples, seq_len]`` int64 token ids.
        seed: seed of ``torch.randperm`` (CPU generator).

    Returns:
        ``(permuted, order)``: ``permuted[i] == input_ids[order[i]]``, same shape and dtype.
    """
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(int(input_ids.shape[0]), generator=generator)
    return input_ids[order.to(input_ids.device)].contiguous(), [int(i) for i in order]


def validate_samples(
    n_samples: Any, seq_len: Any, seed: Any, max_positions: int | None = None, prepend_bos: bool = False,
    allow_fewer: Any = False,
) -> None:
    """Check the calibration-set size before anything is loaded.

    Raises:
        ConfigError: ``n_samples`` or ``seq_len`` not a positive integer, ``seed`` negative,
            ``allow_fewer`` (``samples.allow_fewer``) not a boolean,
            ``seq_len`` above the model's ``max_position_embeddings``, or (``prepend_bos``) no room
            for text after the BOS token.
    """
    for name, value, example in (("samples.n_samples", n_samples, 32), ("samples.seq_len", seq_len, 256)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a positive integer. Fix: e.g. {name}={example} (samples=cpu).")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be an integer >= 0. Fix: e.g. seed=0.")
    if not isinstance(allow_fewer, bool):
        raise ConfigError(f"samples.allow_fewer={allow_fewer!r} must be true or false. "
                          f"Fix: samples.allow_fewer=true or samples.allow_fewer=false.")
    if prepend_bos and seq_len < 2:
        raise ConfigError(
            f"samples.seq_len={seq_len} leaves no text after the BOS token (model.prepend_bos=true). Fix: samples.seq_len>=2."
        )
    if max_positions is not None and seq_len > max_positions:
        raise ConfigError(
            f"samples.seq_len={seq_len} exceeds the model's max_position_embeddings={max_positions}. "
            f"Fix: samples.seq_len<={max_positions}."
        )


def resolve_separator(tokenizer, separator_token_id: int | None = -1) -> int | None:
    """The separator token id: ``separator_token_id``, where ``-1`` (the default of every function
    here) means the tokenizer's EOS token and ``None`` means no separator."""
    return tokenizer.eos_token_id if separator_token_id == -1 else separator_token_id


def tokenize_documents(docs: list[Document], tokenizer, separator_token_id: int | None = -1) -> list[list[int]]:
    """Token ids of each document (no special tokens added) followed by ``separator_token_id``.

    Text is tokenized as text: special-token strings inside a document (``<|endoftext|>``,
    ``<|im_start|>``, ``<bos>``) become ordinary pieces (``split_special_tokens=True``), so the
    separator and the BOS in front of a row are the only control ids a row holds.  A chat document
    (``Document.messages``) is rendered with its chat template; the template's markup keeps its
    special tokens, the contents are tokenized as text (:mod:`calib_sweep.data.chat`).

    ``separator_token_id``: the model's end-of-text token (:func:`calib_sweep.models.document_separator`);
    ``-1`` (default) means the tokenizer's EOS token, ``None`` means no separator.

    Raises:
        ConfigError: chat documents and a tokenizer without a chat template (and no
            ``dataset.chat_template``), or a template that fails on a conversation.
    """
    from calib_sweep.data import chat

    sep = resolve_separator(tokenizer, separator_token_id)
    encoded: list[list[int] | None] = [None] * len(docs)
    plain = [i for i, d in enumerate(docs) if d.messages is None]
    for index, ids in zip(plain, chat.encode_text(tokenizer, [docs[i].text for i in plain])):
        encoded[index] = ids
    by_template: dict[str | None, list[int]] = {}
    for index, doc in enumerate(docs):
        if doc.messages is not None:
            by_template.setdefault(doc.chat_template, []).append(index)
    for override, indices in by_template.items():
        template, _ = chat.resolve_template(tokenizer, override)
        for index, ids in zip(indices, chat.encode_conversations([docs[i].messages for i in indices], tokenizer, template)):
            encoded[index] = ids
    return [list(ids) + ([int(sep)] if sep is not None else []) for ids in encoded]


def _tokenization_ident(docs: list[Document], tokenizer) -> dict[str, Any]:
    """What besides documents, tokenizer and separator shapes a token stream (part of its cache key):
    special-token strings split as text, and the chat templates (SHA-256) of chat documents."""
    from calib_sweep.data import chat

    ident: dict[str, Any] = {"special_token_text": "split"}
    overrides = {doc.chat_template for doc in docs if doc.messages is not None}
    if overrides:
        ident["chat"] = {"version": chat.CHAT_ENCODING_VERSION, "templates": sorted(
            chat.template_sha256(chat.resolve_template(tokenizer, o)[0]) for o in overrides)}
    return ident


def token_stream(
    docs: list[Document], tokenizer, separator_token_id: int | None = -1
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Documents tokenized and joined into one stream (each followed by the separator), cached.

    The stream depends only on the documents, the tokenizer and the separator (and a chat
    document's template), never on the calibration set drawn from it, so it is computed once per
    (content, tokenizer, separator, template) and
    read memory-mapped afterwards (:func:`calib_sweep.cache.cached_arrays`).  Tokenizers that are
    not Hugging Face fast tokenizers are not cached.

    Returns:
        ``(stream, starts, info)``: ``int64 [n_tokens]`` (read-only when reused), the stream offset
        of each document ``int64 [len(docs) + 1]`` (``starts[-1] == n_tokens``), and
        ``{"reused": bool, "key": str | None}``.
    """
    from calib_sweep import cache

    separator = resolve_separator(tokenizer, separator_token_id)

    def compute() -> dict[str, np.ndarray]:
        token_lists = tokenize_documents(docs, tokenizer, separator)
        starts = np.cumsum([0] + [len(t) for t in token_lists]).astype(np.int64)
        stream = np.fromiter((tok for toks in token_lists for tok in toks), dtype=np.int64, count=int(starts[-1]))
        return {"stream": stream, "starts": starts}

    fingerprint = cache.tokenizer_fingerprint(tokenizer)
    if fingerprint is None:
        arrays = compute()
        return arrays["stream"], arrays["starts"], {"reused": False, "key": None}
    ident = {"documents": cache.documents_fingerprint(docs), "n_documents": len(docs), "tokenizer": fingerprint,
             "separator_token_id": separator, **_tokenization_ident(docs, tokenizer)}
    arrays, info = cache.cached_arrays("token_streams", ident, compute)
    return arrays["stream"], arrays["starts"], info


def draw_calibration_set(
    docs: list[Document],
    tokenizer,
    n_samples: int,
    seq_len: int,
    seed: int,
    source: str,
    permutation_seed: int = 0,
    allow_fewer: bool = False,
    bos_token_id: int | None = None,
    separator_token_id: int | None = -1,
    selection: Any = None,
    model=None,
) -> CalibrationSet:
    """Draw the ``seed``-th disjoint calibration set of ``n_samples`` x ``seq_len`` tokens.

    Args:
        docs: the source's calibration part, in source order.
        tokenizer: a Hugging Face tokenizer.
        n_samples: sequences in the set.
        seq_len: tokens per sequence.
        seed: which disjoint set to take (0, 1, 2, ...).
        source: dataset name, recorded in the manifest and in errors.
        permutation_seed: seed of the fixed slot order shared by all draws of this source.
        allow_fewer: when the source is too small, use the slots left for this seed (warning)
            instead of raising.
        bos_token_id: put this token in front of every row; slots then hold ``seq_len - 1``
            stream tokens (``None``: slots of ``seq_len``).
        separator_token_id: the token after every document (see :func:`tokenize_documents`).
        selection: the ``selection`` config (``None``: ``random``); other strategies choose ``n_samples``
            of the ``n_samples * pool_factor`` slots of seed's share (:mod:`calib_sweep.data.selection`).
        model: the dense model, for strategies that score windows with it.

    Returns:
        A :class:`CalibrationSet` whose ``input_ids`` has shape ``[n_samples, seq_len]``, dtype int64.

    Raises:
        ConfigError: the source cannot give ``seed + 1`` disjoint sets (shares) of this size (the
            message says how many it can give and how to fix it), or a bad ``selection``.
        ValueError: a model-based strategy without ``model``.
    """
    from calib_sweep.data import selection as selections

    strategy, params = selections.resolve(selection)
    if strategy.name != "random" or params["pool_factor"] != 1:  # random from a pool: its share's first n
        return _select_calibration_set(
            docs, tokenizer, n_samples, seq_len, seed, source, permutation_seed, allow_fewer, bos_token_id,
            separator_token_id, strategy, params, model,
        )
    validate_samples(n_samples, seq_len, seed, prepend_bos=bos_token_id is not None)
    slot_len = seq_len - (bos_token_id is not None)  # stream tokens per row
    separator = resolve_separator(tokenizer, separator_token_id)
    stream, starts, stream_cache = token_stream(docs, tokenizer, separator)  # starts: offset of each document
    total = int(starts[-1])
    slots = total // slot_len
    needed = (seed + 1) * n_samples
    requested = n_samples
    if slots < needed and allow_fewer and slots > seed * n_samples:
        n_samples = slots - seed * n_samples
        log.warning(
            "dataset %r gives only %d of the %d requested windows of %d tokens for seed=%d "
            "(samples.allow_fewer=true): using %d", source, n_samples, requested, seq_len, seed, n_samples,
        )
    elif slots < needed:
        can_give = slots // n_samples
        window = f"seq_len={seq_len}" + (f" (BOS + {slot_len} text tokens)" if bos_token_id is not None else "")
        fix = (f"use seed<{can_give}, lower samples.n_samples or samples.seq_len, or choose a larger source" if can_give
               else "lower samples.n_samples or samples.seq_len (not even one set fits), or choose a larger source")
        if slots > seed * n_samples:  # some windows are left for this seed: a shorter set is possible
            fix += f", or samples.allow_fewer=true to use the {slots - seed * n_samples} window(s) left"
        raise ConfigError(
            f"dataset {source!r} has {total} calibration tokens = {slots} non-overlapping windows of "
            f"{window}, enough for {can_give} disjoint set(s) of n_samples={n_samples}; "
            f"seed={seed} needs {needed} windows. Fix: {fix}."
        )
    order = np.random.default_rng(permutation_seed).permutation(slots)
    # seed k's block starts at k * the requested size, also when allow_fewer shortened this one
    chosen = order[seed * requested : seed * requested + n_samples]
    rows = np.stack([stream[s * slot_len : (s + 1) * slot_len] for s in chosen])
    if bos_token_id is not None:
        rows = np.concatenate([np.full((len(rows), 1), int(bos_token_id), dtype=np.int64), rows], axis=1)

    sequences = [{"slot": int(slot), "pieces": _pieces(int(slot), slot_len, starts, docs)} for slot in chosen.tolist()]
    used = {piece["doc_id"] for seq in sequences for piece in seq["pieces"]}
    return CalibrationSet(
        n_samples_requested=requested,
        input_ids=torch.from_numpy(rows),
        sequences=sequences,
        source=source,
        seed=seed,
        slots_available=slots,
        documents_used=len(used),
        bos_token_id=None if bos_token_id is None else int(bos_token_id),
        separator_token_id=None if separator is None else int(separator),
        stream_cache=stream_cache,
    )


def _pieces(slot: int, slot_len: int, starts: np.ndarray, docs: list[Document]) -> list[dict[str, Any]]:
    """The (doc_id, start, end) token spans of one slot (see :class:`CalibrationSet`)."""
    lo, hi = slot * slot_len, (slot + 1) * slot_len
    pieces = []
    index = bisect.bisect_right(starts, lo) - 1
    while index < len(docs) and starts[index] < hi:
        begin, end = max(lo, starts[index]), min(hi, starts[index + 1])
        if end > begin:
            pieces.append({"doc_id": docs[index].doc_id, "start": int(begin - starts[index]), "end": int(end - starts[index])})
        index += 1
    return pieces


def pool_error(source: str, strategy: str, factor: int, total: int, slots: int, n_samples: int, seq_len: int,
               seed: int, bos: bool) -> ConfigError:
    """The one-line error for a source too small for seed's share of ``n_samples * factor`` candidates."""
    share = n_samples * factor
    can_give = slots // share
    window = f"seq_len={seq_len}" + (" (BOS + text tokens)" if bos else "")
    fix = (f"use seed<{can_give}, lower selection.pool_factor, samples.n_samples or samples.seq_len, or choose a larger source"
           if can_give else "lower selection.pool_factor, samples.n_samples or samples.seq_len (not even one share fits), "
           "or choose a larger source")
    left = slots - seed * share
    if left > 0:  # some candidates are left for this seed: a smaller share is possible
        fix += f", or samples.allow_fewer=true to choose from the {left} candidate(s) left"
    return ConfigError(
        f"dataset {source!r} has {slots} non-overlapping windows of {window} ({total} tokens): selection={strategy} "
        f"(pool_factor={factor}) can give {can_give} disjoint set(s) of n_samples={n_samples} from shares of {share} "
        f"candidates; seed={seed} needs {(seed + 1) * share} windows. Fix: {fix}."
    )


def selection_pool(slots: int, n_samples: int, seed: int, factor: int, permutation_seed: int) -> np.ndarray:
    """Seed's share of the fixed slot permutation: ``int64 [n_samples * factor]`` slot ids (permutation
    positions ``[seed*n*f, (seed+1)*n*f)``; fewer when the permutation ends sooner)."""
    order = np.random.default_rng(permutation_seed).permutation(slots)
    share = n_samples * factor
    return order[seed * share : (seed + 1) * share].astype(np.int64)


def _select_calibration_set(
    docs, tokenizer, n_samples, seq_len, seed, source, permutation_seed, allow_fewer, bos_token_id,
    separator_token_id, strategy, params, model,
) -> CalibrationSet:
    """:func:`draw_calibration_set` for a strategy other than ``random`` (see that function)."""
    from calib_sweep.data.selection import Candidates
    from calib_sweep.data.selection.scoring import slot_rows, source_features

    validate_samples(n_samples, seq_len, seed, prepend_bos=bos_token_id is not None)
    if strategy.needs and model is None:
        raise ValueError(f"selection={strategy.name} scores windows with the model: call after loading it")
    factor = int(params["pool_factor"])
    slot_len = seq_len - (bos_token_id is not None)
    separator = resolve_separator(tokenizer, separator_token_id)
    stream, starts, stream_cache = token_stream(docs, tokenizer, separator)
    total = int(starts[-1])
    slots = total // slot_len
    requested = n_samples
    left = slots - seed * n_samples * factor
    if left < n_samples * factor and allow_fewer and left > 0:
        n_samples = min(n_samples, left)
        log.warning("dataset %r: seed=%d's share holds only %d of %d candidate windows (samples.allow_fewer=true): "
                    "choosing %d", source, seed, left, requested * factor, n_samples)
    elif left < n_samples * factor:
        raise pool_error(source, strategy.name, factor, total, slots, n_samples, seq_len, seed, bos_token_id is not None)
    pool = selection_pool(slots, requested, seed, factor, permutation_seed)
    lengths = np.diff(starts)
    touched = []  # documents (with tokens) each candidate window touches
    for slot in pool.tolist():
        first = int(np.searchsorted(starts, slot * slot_len, side="right")) - 1
        last = int(np.searchsorted(starts, (slot + 1) * slot_len - 1, side="right")) - 1
        ids = np.arange(first, last + 1)
        touched.append(ids[lengths[ids] > 0])
    scoring: dict[str, Any] = {}
    features: dict[str, np.ndarray] = {}
    if strategy.needs:
        by_pool, scoring = source_features(model, stream, slot_len, slots, strategy.needs, params, bos_token_id,
                                           stream_cache.get("key"), slots=pool)
        features = {name: np.asarray(values) for name, values in by_pool.items()}
    candidates = Candidates(
        slots=pool, rows=slot_rows(stream, pool, slot_len, None),
        n_documents=np.array([len(t) for t in touched], dtype=np.int64),
        longest_document=np.array([int(lengths[t].max()) for t in touched], dtype=np.int64),
        features=features,
    )
    choice = strategy.choose(candidates, n_samples, params)
    chosen = pool[choice.indices]
    if len(set(chosen.tolist())) != n_samples:
        raise RuntimeError(f"selection={strategy.name} chose {len(set(chosen.tolist()))} distinct windows, not {n_samples}")
    rows = slot_rows(stream, chosen, slot_len, bos_token_id)
    sequences = []
    used = set()
    for slot, score in zip(chosen.tolist(), choice.scores.tolist()):
        pieces = _pieces(slot, slot_len, starts, docs)
        used.update(p["doc_id"] for p in pieces)
        sequences.append({"slot": int(slot), "pieces": pieces, "score": round(float(score), 6)})
    calib = CalibrationSet(
        n_samples_requested=requested, input_ids=torch.from_numpy(rows), sequences=sequences, source=source,
        seed=seed, slots_available=slots, documents_used=len(used),
        bos_token_id=None if bos_token_id is None else int(bos_token_id),
        separator_token_id=None if separator is None else int(separator),
        stream_cache=stream_cache, selection_scoring=scoring,
    )
    calib.extra = {"selection": {
        "strategy": strategy.name, "params": params, "score": strategy.score,
        "pool": {"permutation_seed": int(permutation_seed), "positions": [seed * requested * factor, seed * requested * factor + len(pool)],
                 "slots": [int(s) for s in pool]},
        **({"info": choice.info} if choice.info else {}),
    }}
    return calib
