"""A faster lm-eval LM for multiple-choice loglikelihood: each shared context is run once, its KV
cache is reused by all of its continuations, and the LM head is applied only where a token is scored.

lm-eval's ``HFLM`` scores every ``(context, continuation)`` pair as one sequence and computes the
full-vocabulary log-softmax at every position.  For multiple choice the context (question, passage)
is repeated once per choice and only the continuation positions are read.  :class:`FastHFLM`
(a subclass of ``lm_eval.models.huggingface.HFLM``) overrides ``_loglikelihood_tokens``:

1. each request is truncated exactly as HFLM does (``(context + continuation)[-(max_length + 1):]``,
   left-truncated; counted in :attr:`FastHFLM.truncated_requests`), giving an effective context
   ``ctx`` (>= 1 token) and the continuation ``cont``;
2. requests are grouped by ``ctx``; the contexts of several groups (longest first, little padding) are
   run through the decoder (``model.get_decoder()``, no LM head) in one right-padded batch with
   ``use_cache=True`` (a context longer than the token budget alone, in budget-sized chunks); the last
   context position's hidden state scores every continuation's first token (a one-token continuation
   needs nothing more);
3. the longer continuations of a pack of contexts are scored in batches: input ``cont[:-1]``
   (right-padded) on a ``DynamicCache`` rebuilt from the cached keys/values of each row's context
   (with several contexts: an attention mask hiding each row's context padding, positions from its
   true length);
4. the LM head (``model.get_output_embeddings()``, then ``config.final_logit_softcapping`` where set,
   as Gemma-2/3 do) is applied to the scored hidden rows only, in row chunks; log-softmax (in
   HFLM's ``softmax_dtype``), the continuation's log-probability and ``is_greedy`` (every scored
   position's argmax equals its token) are reduced at once, so no full-vocabulary tensor outlives a chunk.

Results are HFLM's up to floating-point reassociation (per-request loglikelihood within 1e-4 nats
in float32, same ``is_greedy``; tests/test_scorer.py, bench/zeroshot_speed.py) and are returned in
lm-eval's request order, with the same ``cache_hook`` entries.  ``loglikelihood_rolling`` and
``generate_until`` are HFLM's own; so is everything when the model is not a causal LM whose logits
equal ``head(decoder(x))`` (checked once on a short probe) or whose cache is not a ``DynamicCache``
of dynamic (optionally sliding-window) layers: then a warning is logged and HFLM's path is used
(:attr:`FastHFLM.fallback_reason`).

With SDPA or eager attention (the default of the study's models) a pack is not padded at all: its
contexts form ONE row under a block-diagonal causal mask (positions restarting per context; at most
``pack_tokens`` tokens, a longer context alone up to ``token_budget``), and its longer continuations
form one row per ``pack_tokens`` tokens, each token seeing its own context's block of the cache and its
own continuation (a custom 4D mask: boolean for SDPA, additive for eager).  On a sliding-window
model (Gemma-3) a packed row stays shorter than the window; longer contexts take the padded path.

Otherwise memory is bounded by ``token_budget``: a context batch holds at most ``token_budget`` padded tokens,
a continuation batch at most ``token_budget`` tokens of (context + padded continuation) per row
summed over rows (at least one row: a request never waits or is dropped), and the head runs on at
most ``head_rows`` rows at a time.

Measured speed (bench/zeroshot_speed.py, 2-core CPU, limit 40, 2026-12-06): 2.6x HFLM on SmolLM2-135M
ARC-Easy, 2.0x HellaSwag, 1.6x BoolQ; 4.3x on Gemma-3-270m ARC-Easy; identical accuracy.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM

from calib_sweep.errors import ConfigError
from calib_sweep.models.logits import apply_head, softcap_of

log = logging.getLogger(__name__)

#: ``eval.zeroshot.scorer`` values: ours (default) and lm-eval's own HFLM.
SCORERS = ("fast", "hflm")

Request = tuple[Any, list[int], list[int]]

#: A batch (rows sorted longest first, padded to the first) takes one more row while its padded tokens
#: stay within ``PAD_SLACK`` x its real tokens, or within ``SMALL_BATCH`` tokens (where a forward pass
#: costs about the same whatever its size: ~30 ms for SmolLM2-135M on 2 CPU cores up to ~64 tokens).
PAD_SLACK = 1.25
SMALL_BATCH = 192


def _takes(rows: int, width: int, real: int) -> bool:
    """Whether a batch of ``rows`` rows padded to ``width`` holding ``real`` real tokens wastes little enough."""
    return rows * width <= max(PAD_SLACK * real, SMALL_BATCH)


def check_scorer(value: Any) -> str:
    """``value`` if it is one of :data:`SCORERS`.

    Raises:
        ConfigError: any other value (one line naming it and the options).
    """
    if not isinstance(value, str) or value not in SCORERS:
        raise ConfigError(
            f"eval.zeroshot.scorer={value!r} is not a scorer. Fix: one of {', '.join(SCORERS)} "
            "(fast: shared-context KV reuse, same results as hflm: lm-eval's HFLM)."
        )
    return value


class FastHFLM(HFLM):
    """lm-eval's ``HFLM`` with shared-context, KV-cached, scored-rows-only ``loglikelihood``.

    Args:
        token_budget: tokens per forward pass (see the module docstring); int >= 2.
        head_rows: rows the LM head and log-softmax handle at once (memory ``head_rows x vocab``
            floats); int >= 1.
        pack_tokens: tokens of one packed row (SDPA / eager attention); int >= 1.
        **kwargs: ``HFLM``'s (``pretrained`` = the in-memory model, ``tokenizer``, ``batch_size``
            (used only by HFLM's own paths), ``max_length``, ...).

    Attributes:
        truncated_requests: requests whose context + continuation exceeded ``max_length + 1`` tokens
            and were left-truncated as HFLM does (cumulative over calls).
        fallback_reason: why HFLM's own path is used, or ``None`` (the fast path is used).

    Raises:
        ConfigError: ``token_budget``, ``head_rows`` or ``pack_tokens`` out of range.
    """

    def __init__(self, *args, token_budget: int = 2048, head_rows: int = 256, pack_tokens: int = 384, **kwargs):
        if isinstance(token_budget, bool) or not isinstance(token_budget, int) or token_budget < 2:
            raise ConfigError(f"FastHFLM token_budget={token_budget!r} must be an integer >= 2. Fix: e.g. 2048.")
        if isinstance(head_rows, bool) or not isinstance(head_rows, int) or head_rows < 1:
            raise ConfigError(f"FastHFLM head_rows={head_rows!r} must be an integer >= 1. Fix: e.g. 256.")
        if isinstance(pack_tokens, bool) or not isinstance(pack_tokens, int) or pack_tokens < 1:
            raise ConfigError(f"FastHFLM pack_tokens={pack_tokens!r} must be an integer >= 1. Fix: e.g. 384.")
        super().__init__(*args, **kwargs)
        self.token_budget = token_budget
        self.head_rows = head_rows
        self.pack_tokens = pack_tokens
        self.truncated_requests = 0
        self.fallback_reason: str | None = None
        self._checked = False

    # ------------------------------------------------------------------ set-up checks

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                              enabled=self.mixed_precision_dtype is not None)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``[rows, vocab]`` of hidden rows ``[rows, hidden]``: the output embedding, then softcapping
        (:func:`calib_sweep.models.logits.apply_head`)."""
        return apply_head(self._out, hidden, softcap_of(self.model.config))

    def _check_fast_path(self, probe: list[int]) -> None:
        """Set :attr:`fallback_reason` unless logits == head(decoder(x)) on ``probe`` and the cache is dynamic."""
        self._checked = True
        if self.backend != "causal":
            self.fallback_reason = f"backend {self.backend!r} is not causal"
        else:
            try:
                self._decoder = self.model.get_decoder()
                self._out = self.model.get_output_embeddings()
            except (AttributeError, NotImplementedError, ValueError) as exc:
                self.fallback_reason = f"no decoder / output embeddings ({exc})"
            if self.fallback_reason is None and (self._decoder is self.model or self._out is None):
                self.fallback_reason = "no separate decoder and output embeddings"
        if self.fallback_reason is None:
            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

            ids = torch.tensor([probe[:16]], dtype=torch.long, device=self.device)
            with torch.no_grad(), self._autocast():
                full = self.model(ids).logits[0].float()
                out = self._decoder(input_ids=ids, use_cache=True)
                ours = self._head(out.last_hidden_state[0]).float()
            cache = out.past_key_values
            tol = 1e-3 * max(1.0, float(full.abs().max()))
            if full.shape != ours.shape or float((full - ours).abs().max()) > tol:
                self.fallback_reason = "the model's logits are not output_embeddings(decoder(x)) (+ softcapping)"
            elif not isinstance(cache, DynamicCache) or any(
                    type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer) for layer in cache.layers):
                self.fallback_reason = f"cache {type(cache).__name__} is not a DynamicCache of dynamic layers"
        if self.fallback_reason is not None:
            log.warning("FastHFLM: using HFLM's own loglikelihood path: %s", self.fallback_reason)

    # ------------------------------------------------------------------ scoring

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        """``(loglikelihood, is_greedy)`` per ``(cache key, context tokens, continuation tokens)``, in order.

        ``override_bs`` (set by HFLM's ``loglikelihood_rolling``) and models failing the set-up
        check go to HFLM's own implementation.
        """
        if not requests:
            return []
        if not self._checked:
            first = requests[0]
            self._check_fast_path(list(first[1]) + list(first[2]))
        if override_bs is not None or self.fallback_reason is not None:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)

        limit = self.max_length
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        truncated = 0
        for index, (_, context_enc, continuation_enc) in enumerate(requests):
            if not context_enc or not continuation_enc:
                raise ValueError(f"request {index}: empty context ({len(context_enc)} tokens) or continuation "
                                 f"({len(continuation_enc)} tokens); lm-eval always gives both")
            if len(continuation_enc) > limit:
                raise ValueError(f"request {index}: continuation of {len(continuation_enc)} tokens exceeds the "
                                 f"model's max_length {limit} (HFLM cannot score it either)")
            whole = list(context_enc) + list(continuation_enc)
            if len(whole) > limit + 1:
                truncated += 1
            context = tuple(whole[-(limit + 1):][: -len(continuation_enc)])
            groups.setdefault(context, []).append((index, list(continuation_enc)))
        if truncated:
            self.truncated_requests += truncated
            log.warning("FastHFLM: %d request(s) longer than max_length %d + 1 tokens, left-truncated as HFLM does",
                        truncated, limit)

        results: list[tuple[float, bool] | None] = [None] * len(requests)
        ordered = sorted(groups.items(), key=lambda item: -len(item[0]))
        with torch.no_grad(), self._autocast():
            for pack in self._packs(ordered):
                self._score_pack(pack, results)
        for (key, _, _), answer in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return results  # type: ignore[return-value]

    def _sliding_window(self) -> int | None:
        config = self._decoder.config
        types = getattr(config, "layer_types", None) or []
        window = getattr(config, "sliding_window", None)
        if window and (not types or any("sliding" in str(t) for t in types)):
            return int(window)
        return None

    def _packs(self, ordered):
        """Consecutive groups (longest context first) whose contexts fit one padded batch of
        ``token_budget`` tokens.  On a sliding-window model a group joins a pack of several only if its
        context plus its longest continuation is shorter than the window (so no window ever starts
        inside the padding); a context longer than the budget is a pack of its own."""
        window = self._sliding_window()
        pack: list = []
        width = real = 0
        for context, members in ordered:
            prefix = len(context)
            longest = max(len(cont) for _, cont in members)
            alone = prefix > self.token_budget or (window is not None and len(context) + longest >= window - 1)
            if window is not None and self._packed_ok():  # one packed row must stay inside the window
                alone = alone or real + prefix + sum(len(c) for _, c in members) >= window - 1
            packed = self._packed_ok()
            if pack and (alone or (real + prefix > min(self.pack_tokens, self.token_budget) if packed else (
                    width * (len(pack) + 1) > self.token_budget or not _takes(len(pack) + 1, width, real + prefix)))):
                yield pack
                pack, width, real = [], 0, 0
            pack.append((context, members))
            width, real = max(width, prefix), real + prefix
            if alone:
                yield pack
                pack, width, real = [], 0, 0
        if pack:
            yield pack

    def _prefill(self, contexts: list[tuple[int, ...]]):
        """Run whole contexts through the decoder: ``((per layer (keys, values) [n, heads, kept, dim], tokens seen),
        last hidden state [n, hidden])`` (the last real position of each: it predicts every continuation's first
        token).  Several contexts run as one right-padded batch (causal attention: a row never sees its
        padding); a single long one in budget-sized chunks (a sliding layer then keeps only its window;
        ``tokens seen`` counts them all)."""
        width = max(len(c) for c in contexts)
        pad = self.eot_token_id if self.eot_token_id is not None else 0
        ids = torch.tensor([list(c) + [pad] * (width - len(c)) for c in contexts], dtype=torch.long, device=self.device)
        step = self.token_budget if len(contexts) == 1 else width
        cache = None
        for start in range(0, width, step):
            out = self._decoder(input_ids=ids[:, start: start + step], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
        hidden = out.last_hidden_state  # [n, last chunk, hidden]
        last = torch.tensor([len(c) - 1 - (width - hidden.shape[1]) for c in contexts], device=self.device)
        return ([(layer.keys, layer.values) for layer in cache.layers], width), hidden[torch.arange(len(contexts)), last]

    def _cache_for(self, prefill, rows: torch.Tensor | None, count: int):
        """A fresh ``DynamicCache`` with the prefill's rows ``rows`` (``None``: its single row, expanded to ``count``)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self._decoder.config)
        layers, seen = prefill
        for layer, (keys, values) in zip(cache.layers, layers):
            if rows is None:
                keys, values = keys.expand(count, -1, -1, -1), values.expand(count, -1, -1, -1)
            else:
                keys, values = keys.index_select(0, rows), values.index_select(0, rows)
            layer.update(keys, values)
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = seen  # a sliding layer keeps only its window but has seen them all
        return cache

    def _packed_ok(self) -> bool:
        """Whether the decoder takes a custom 4D mask this scorer can build (SDPA: boolean, eager: additive)."""
        return getattr(self._decoder.config, "_attn_implementation", None) in ("sdpa", "eager")

    def _mask4d(self, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``[1, 1, q, kv]`` attention mask from boolean ``allowed [q, kv]`` in the decoder's format."""
        if self._decoder.config._attn_implementation == "sdpa":
            return allowed[None, None]
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)[None, None]

    def _score_packed(self, pack, results) -> None:
        """The pack's contexts as ONE row (no padding): a block-diagonal causal mask, positions restarting
        per context; then all longer continuations as one row per chunk of ``pack_tokens`` tokens, each
        token seeing its own context's block of the cache and its own continuation's earlier tokens."""
        contexts = [list(c) for c, _ in pack]
        dtype = self._decoder.get_input_embeddings().weight.dtype
        if self.mixed_precision_dtype is not None:
            dtype = self.mixed_precision_dtype
        seg = torch.cat([torch.full((len(c),), g, device=self.device) for g, c in enumerate(contexts)])
        pos = torch.cat([torch.arange(len(c), device=self.device) for c in contexts])
        ids = torch.tensor([t for c in contexts for t in c], dtype=torch.long, device=self.device)[None]
        allowed = (seg[:, None] == seg[None, :]) & (pos[None, :] <= pos[:, None])
        kwargs = {"attention_mask": self._mask4d(allowed, dtype), "position_ids": pos[None]} if len(pack) > 1 else {}
        out = self._decoder(input_ids=ids, use_cache=True, **kwargs)
        ends = torch.cumsum(torch.tensor([len(c) for c in contexts], device=self.device), 0) - 1
        last = out.last_hidden_state[0, ends]  # [groups, hidden]
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        members = [(g, index, cont) for g, (_, group) in enumerate(pack) for index, cont in group]
        single = [m for m in members if len(m[2]) == 1]
        if single:
            self._reduce(single, [last[g: g + 1] for g, _, _ in single], results)
        longer = [m for m in members if len(m[2]) > 1]
        chunk: list = []
        size = 0
        for member in longer + [None]:
            if chunk and (member is None or size + len(member[2]) - 1 > self.pack_tokens):
                self._score_packed_chunk(contexts, seg, layers, last, chunk, dtype, results)
                chunk, size = [], 0
            if member is not None:
                chunk.append(member)
                size += len(member[2]) - 1

    def _score_packed_chunk(self, contexts, seg, layers, last, chunk, dtype, results) -> None:
        """One packed continuation row (see :meth:`_score_packed`) on a fresh copy of the pack's cache."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self._decoder.config)
        for layer, (keys, values) in zip(cache.layers, layers):
            layer.update(keys, values)
        q_group = torch.cat([torch.full((len(c) - 1,), g, device=self.device) for g, _, c in chunk])
        q_member = torch.cat([torch.full((len(c) - 1,), m, device=self.device) for m, (_, _, c) in enumerate(chunk)])
        q_off = torch.cat([torch.arange(len(c) - 1, device=self.device) for _, _, c in chunk])
        allowed = torch.cat([seg[None, :] == q_group[:, None],
                             (q_member[None, :] == q_member[:, None]) & (q_off[None, :] <= q_off[:, None])], dim=1)
        lengths = torch.tensor([len(c) for c in contexts], device=self.device)
        ids = torch.tensor([t for _, _, c in chunk for t in c[:-1]], dtype=torch.long, device=self.device)[None]
        hidden = self._decoder(input_ids=ids, past_key_values=cache, use_cache=True,
                               attention_mask=self._mask4d(allowed, dtype),
                               position_ids=(lengths[q_group] + q_off)[None]).last_hidden_state[0]
        rows, start = [], 0
        for g, _, cont in chunk:
            rows.append(torch.cat([last[g: g + 1], hidden[start: start + len(cont) - 1]]))
            start += len(cont) - 1
        self._reduce(chunk, rows, results)

    def _score_pack(self, pack, results) -> None:
        """Score every continuation of the groups ``pack`` (``[(context, [(request index, tokens)])]``) into
        ``results``: one-token continuations from the contexts' last hidden states alone, longer ones in
        batches of at most ``token_budget`` (context width + padded continuation) tokens per row, summed."""
        if self._packed_ok() and (len(pack) > 1 or len(pack[0][0]) <= self.token_budget):
            window = self._sliding_window()
            if window is None or len(pack[0][0]) + sum(len(c) for _, c in pack[0][1]) < window - 1 or len(pack) > 1:
                return self._score_packed(pack, results)
        prefill, last = self._prefill([context for context, _ in pack])
        width = prefill[1]
        members = [(g, index, cont) for g, (_, group) in enumerate(pack) for index, cont in group]
        single = [m for m in members if len(m[2]) == 1]
        if single:
            self._reduce(single, [last[g: g + 1] for g, _, _ in single], results)
        longer = sorted((m for m in members if len(m[2]) > 1), key=lambda m: -len(m[2]))  # a batch's width: its first
        batch: list = []
        real = 0
        for member in longer:
            rows, longest = len(batch) + 1, len(batch[0][2]) - 1 if batch else 0
            if batch and (rows * (width + longest) > self.token_budget or not _takes(rows, longest, real + len(member[2]) - 1)):
                self._score_batch(pack, prefill, last, batch, results)
                batch, real = [], 0
            batch.append(member)
            real += len(member[2]) - 1
        if batch:
            self._score_batch(pack, prefill, last, batch, results)

    def _score_batch(self, pack, prefill, last, batch, results) -> None:
        """Run ``cont[:-1]`` of each member (right-padded) on its context's cache; score with :meth:`_reduce`."""
        width = max(len(cont) for _, _, cont in batch) - 1
        pad = self.eot_token_id if self.eot_token_id is not None else 0
        ids = torch.tensor([cont[:-1] + [pad] * (width + 1 - len(cont)) for _, _, cont in batch], dtype=torch.long,
                           device=self.device)
        kwargs: dict[str, Any] = {}
        if len(pack) == 1:  # one context: its cache as it is, positions continue from it
            cache = self._cache_for(prefill, None, len(batch))
        else:  # several: each row sees its own context (not its padding), positions from its true length
            rows = torch.tensor([g for g, _, _ in batch], dtype=torch.long, device=self.device)
            cache = self._cache_for(prefill, rows, len(batch))
            lengths = torch.tensor([len(pack[g][0]) for g, _, _ in batch], dtype=torch.long, device=self.device)
            context_mask = torch.arange(prefill[1], device=self.device)[None, :] < lengths[:, None]
            kwargs["attention_mask"] = torch.cat(
                [context_mask, torch.ones(len(batch), width, dtype=torch.bool, device=self.device)], dim=1).long()
            kwargs["position_ids"] = lengths[:, None] + torch.arange(width, device=self.device)[None, :]
        hidden = self._decoder(input_ids=ids, past_key_values=cache, use_cache=True,
                               **kwargs).last_hidden_state  # [rows, width, hidden]
        self._reduce(batch, [torch.cat([last[g: g + 1], hidden[b, : len(cont) - 1]])
                             for b, (g, _, cont) in enumerate(batch)], results)

    def _reduce(self, members, hidden_rows: list[torch.Tensor], results) -> None:
        """``results[index] = (sum of log p(token), every token greedy)`` for ``members`` ``[(group, index, tokens)]``
        from their scored hidden rows (``[len(tokens), hidden]`` each), through the head in ``head_rows`` chunks."""
        scored = torch.cat(hidden_rows)
        targets = torch.tensor([t for _, _, cont in members for t in cont], dtype=torch.long, device=self.device)
        logprobs, greedy = [], []
        for start in range(0, scored.shape[0], self.head_rows):
            logits = self._head(scored[start: start + self.head_rows])
            lsm = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
            target = targets[start: start + self.head_rows]
            logprobs.append(lsm.gather(1, target[:, None])[:, 0])
            greedy.append(lsm.argmax(dim=-1) == target)
        logprob, hit = torch.cat(logprobs), torch.cat(greedy)
        start = 0
        for _, index, cont in members:
            end = start + len(cont)
            results[index] = (float(logprob[start:end].sum()), bool(hit[start:end].all()))
            start = end
