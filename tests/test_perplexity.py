"""Perplexity protocol: exact values on models whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from calib_sweep.evaluation import perplexity


class UniformLM(torch.nn.Module):
    """Predicts every token with probability 1/vocab: perplexity is exactly ``vocab``."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab)})()


def test_uniform_model_has_perplexity_vocab_and_protocol_is_recorded():
    tokens = torch.arange(1000) % 50
    result = perplexity(UniformLM(50), tokens, seq_len=100, max_windows=4, batch_size=3, text="toy")
    assert result["perplexity"] == pytest.approx(50.0, rel=1e-6)
    assert result["protocol"] == {
        "text": "toy", "seq_len": 100, "stride": 100, "windows": 4, "windows_available": 10,
        "tokens_scored": 4 * 99, "tokens_in_text": 1000, "batch_size": 3, "bos_token_id": None,
    }


def test_batch_size_does_not_change_perplexity(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokens = torch.randint(2, 80, (2000,), generator=torch.Generator().manual_seed(0))
    one = perplexity(model, tokens, seq_len=64, batch_size=1)
    eight = perplexity(model, tokens, seq_len=64, batch_size=8)
    assert one["protocol"]["windows"] == 31
    assert one["perplexity"] == pytest.approx(eight["perplexity"], rel=1e-5)
    # A random 81-token model is close to uniform: perplexity near the vocabulary size.
    assert 40 < one["perplexity"] < 200
    # It matches the loss transformers computes itself for one window.
    window = tokens[:64].unsqueeze(0)
    with torch.no_grad():
        hf_loss = model(input_ids=window, labels=window).loss
    assert perplexity(model, tokens[:64], seq_len=64)["perplexity"] == pytest.approx(math.exp(float(hf_loss)), rel=1e-5)


def test_too_short_text_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one window of seq_len=512"):
        perplexity(UniformLM(5), torch.zeros(100, dtype=torch.long), seq_len=512)


def test_bos_windows_hold_seq_len_minus_one_text_tokens_all_scored(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokens = torch.randint(2, 80, (640,), generator=torch.Generator().manual_seed(1))
    result = perplexity(model, tokens, seq_len=64, batch_size=4, bos_token_id=1)
    protocol = result["protocol"]
    assert protocol["windows"] == 640 // 63 == 10 and protocol["stride"] == 63 and protocol["bos_token_id"] == 1
    assert protocol["tokens_scored"] == 10 * 63  # every text token, the first given only the BOS token
    # Equal to transformers' own loss over [BOS] + 63 text tokens, window by window.
    nll = 0.0
    with torch.no_grad():
        for w in range(10):
            window = torch.cat([torch.tensor([1]), tokens[w * 63 : (w + 1) * 63]]).unsqueeze(0)
            nll += float(model(input_ids=window, labels=window).loss) * 63
    assert result["perplexity"] == pytest.approx(math.exp(nll / 630), rel=1e-5)
    assert result["perplexity"] != pytest.approx(perplexity(model, tokens, seq_len=64)["perplexity"], rel=1e-3)
