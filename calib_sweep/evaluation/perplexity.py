"""Perplexity over non-overlapping windows, with its protocol recorded.

Protocol (the one of the GPTQ/SparseGPT/Wanda reference scripts for WikiText-2): the evaluation text
is one token stream (documents joined by EOS), cut into non-overlapping windows of ``seq_len``
tokens (stride = ``seq_len``); within each window every token after the first is scored given the
tokens before it in that window, so a window scores ``seq_len - 1`` tokens.  Perplexity is
``exp(total negative log-likelihood / tokens scored)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch


@torch.no_grad()
def perplexity(
    model,
    token_ids: torch.Tensor,
    seq_len: int,
    max_windows: int | None = None,
    batch_size: int = 1,
    text: str = "text",
) -> dict[str, Any]:
    """Perplexity of ``model`` on a token stream.

    Args:
        model: a Hugging Face causal LM (its device is used).
        token_ids: ``int64`` tensor of shape ``[n_tokens]``.
        seq_len: window length in tokens.
        max_windows: use only the first this-many windows (``None`` = all).
        batch_size: windows per forward pass (does not change the result beyond float rounding).
        text: name of the text, recorded in the protocol.

    Returns:
        ``{"perplexity": float, "protocol": {...}}`` with the text name, seq_len, stride, windows
        used and available, tokens scored and tokens in the stream.

    Raises:
        ValueError: the stream is shorter than one window, or the loss is not finite.
    """
    available = int(token_ids.numel()) // seq_len
    if available < 1:
        raise ValueError(
            f"evaluation text {text!r} has {token_ids.numel()} tokens, fewer than one window of seq_len={seq_len}. "
            f"Fix: lower eval.perplexity.seq_len."
        )
    windows = available if max_windows is None else min(available, int(max_windows))
    device = next(model.parameters()).device
    data = token_ids[: windows * seq_len].reshape(windows, seq_len)
    total_nll, scored = 0.0, 0
    for start in range(0, windows, batch_size):
        batch = data[start : start + batch_size].to(device)
        logits = model(input_ids=batch).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
        ).double().sum()  # float64 accumulation: the sum over many tokens stays exact
        total_nll += float(nll)
        scored += batch[:, 1:].numel()
    mean = total_nll / scored
    if not math.isfinite(mean):
        raise ValueError(f"perplexity on {text!r} is not finite (mean NLL {mean}): the model outputs NaN/Inf.")
    return {
        "perplexity": math.exp(mean),
        "protocol": {
            "text": text,
            "seq_len": seq_len,
            "stride": seq_len,
            "windows": windows,
            "windows_available": available,
            "tokens_scored": scored,
            "tokens_in_text": int(token_ids.numel()),
            "batch_size": batch_size,
        },
    }
