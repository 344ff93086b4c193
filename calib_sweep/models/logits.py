"""Logits a chunk of positions at a time: the decoder once, the LM head on at most ``rows`` positions.

A causal LM's forward pass returns full-vocabulary logits for every position (``[batch, seq_len, V]``:
100 MB per 512-token window at SmolLM2's V = 49,152 in float32, 537 MB at Gemma-3's 262,144), and the
perplexity and KL passes then take a log-softmax of all of it at once (another tensor of that size).
:func:`split_head` runs the model's decoder (``model.get_decoder()``) to its final hidden states
(``[batch, seq_len, hidden]``) and hands back the LM head (``model.get_output_embeddings()``, then
``config.final_logit_softcapping`` where set, as Gemma-2/3 do) as a function the caller applies to row
chunks, so no full-vocabulary tensor outlives a chunk.  The zero-shot scorer
(:mod:`calib_sweep.evaluation.scorer`) uses the same head.

The split is checked against the model's own forward pass on a 16-token probe (logits within
``1e-3 x max(1, max |logit|)``), once per model object and again whenever its decoder, output
embedding or softcap change (compression changes weights in place, not which modules compute); a
model whose logits are not ``head(decoder(x))`` (or that has no separate decoder and output embedding)
gets its own forward pass instead, so results never depend on the split being valid.  The values equal the full forward pass's up to float reassociation
(``tests/test_eval_logits.py``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

#: Positions whose logits are materialised at once (memory ``rows x V x 4`` bytes: 50 MB at V = 49,152).
DEFAULT_ROWS = 256

#: Per model: ``((id(decoder), id(output embedding), softcap), split valid)`` of its last probe check.
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def softcap_of(config) -> float | None:
    """``final_logit_softcapping`` of a model config (or of its text config), ``None`` when unset."""
    cap = getattr(config, "final_logit_softcapping", None)
    if cap is None:
        text = getattr(config, "get_text_config", None)
        cap = getattr(text(), "final_logit_softcapping", None) if text is not None else None
    return float(cap) if cap else None


def apply_head(out_embedding: torch.nn.Module, hidden: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Logits ``[..., V]`` (the model's dtype) of hidden states ``[..., hidden]``: the output embedding,
    then ``tanh(logits / cap) * cap`` when ``cap`` is set."""
    logits = out_embedding(hidden)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.no_grad()
def split_head(model, input_ids: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """``(states, head)`` for ``input_ids`` (``int64 [batch, seq_len]``, on the model's device).

    With a valid split, ``states`` is the decoder's final hidden states ``[batch, seq_len, hidden]`` and
    ``head(rows [r, hidden])`` returns float32 logits ``[r, V]``; otherwise ``states`` is the model's own
    logits ``[batch, seq_len, V]`` and ``head`` only casts to float32.  Either way
    ``head(states[b, t0:t1])`` are the float32 logits of those positions.
    """
    try:
        decoder, out = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError, ValueError):
        decoder = out = None
    if decoder is not None and out is not None and decoder is not model:
        cap = softcap_of(model.config)
        modules = (id(decoder), id(out), cap)
        known = _CHECKED.get(model)
        if known is None or known[0] != modules:
            probe = input_ids[:1, :16]
            full = model(input_ids=probe, use_cache=False).logits[0].float()
            ours = apply_head(out, decoder(input_ids=probe, use_cache=False).last_hidden_state[0], cap).float()
            tolerance = 1e-3 * max(1.0, float(full.abs().max()))
            known = (modules, full.shape == ours.shape and float((full - ours).abs().max()) <= tolerance)
            _CHECKED[model] = known
        if known[1]:
            states = decoder(input_ids=input_ids, use_cache=False).last_hidden_state
            return states, lambda rows: apply_head(out, rows, cap).float()
    return model(input_ids=input_ids).logits, lambda rows: rows.float()


def row_chunks(n: int, rows: int = DEFAULT_ROWS):
    """``slice`` objects covering ``range(n)`` in steps of ``rows`` (``rows >= 1``)."""
    return (slice(start, min(start + rows, n)) for start in range(0, n, max(1, int(rows))))
