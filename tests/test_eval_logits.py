"""Chunked logits (calib_sweep.models.logits): perplexity and KL computed with the LM head on a chunk of
positions at a time equal the full forward pass's figures, on tiny Llama and Gemma-3 (softcapped) models
built from configs, and a model whose logits are not head(decoder(x)) gets its own forward pass."""

from __future__ import annotations

import math

import pytest
import torch

from calib_sweep.evaluation.perplexity import perplexity
from calib_sweep.methods.kl import TopKLogprobs, kl_from_reference, reference_logprobs
from calib_sweep.models import logits as logits_module
from calib_sweep.models.logits import row_chunks, softcap_of, split_head

VOCAB = 97


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlamaForCausalLM(config).eval()


def _gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=64,
                              final_logit_softcapping=5.0, max_position_embeddings=512)
    return Gemma3ForCausalLM(config).eval()


def _stream(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


def _full_perplexity(model, windows: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(input_ids=windows).logits.float()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), windows[:, 1:].reshape(-1), reduction="sum")
    return math.exp(float(nll) / windows[:, 1:].numel())


def test_row_chunks_cover_every_position_once():
    assert [(s.start, s.stop) for s in row_chunks(600, 256)] == [(0, 256), (256, 512), (512, 600)]
    assert list(row_chunks(0, 256)) == []


@pytest.mark.parametrize("build", [_llama, _gemma3], ids=["llama", "gemma3_softcap"])
def test_split_head_gives_the_models_own_logits(build):
    model = build()
    ids = _stream(2 * 40).reshape(2, 40)
    states, head = split_head(model, ids)
    assert states.shape == (2, 40, 32)  # hidden states, not logits: the split was taken
    with torch.no_grad():
        full = model(input_ids=ids).logits.float()
        ours = torch.cat([head(states[1, rows]) for rows in row_chunks(40, 7)])
    assert ours.dtype == torch.float32 and ours.shape == (40, VOCAB)
    torch.testing.assert_close(ours, full[1], rtol=1e-5, atol=1e-5)
    if build is _gemma3:
        assert softcap_of(model.config) == 5.0 and float(ours.abs().max()) <= 5.0


@pytest.mark.parametrize("build", [_llama, _gemma3], ids=["llama", "gemma3_softcap"])
def test_perplexity_in_chunks_equals_the_full_forward_pass(build):
    model = build()
    stream = _stream(3 * 300)
    result = perplexity(model, stream, seq_len=300, batch_size=2)  # 598 + 299 scored positions: 2 + 2 chunks
    expected = _full_perplexity(model, stream.reshape(3, 300))
    assert result["protocol"]["tokens_scored"] == 3 * 299
    assert result["perplexity"] == pytest.approx(expected, rel=1e-6)
    assert 40 < result["perplexity"] < 400  # a random tiny model: near the vocabulary size (97), not 1 or inf


@pytest.mark.parametrize("top_k", [5, None])
def test_kl_in_chunks_equals_the_full_forward_pass(top_k):
    dense, other = _gemma3(), _gemma3()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ids = _stream(2 * 300, seed=1).reshape(2, 300)  # 300 positions per window: 2 chunks of 256
    reference = reference_logprobs(dense, ids, top_k=top_k)
    with torch.no_grad():
        logp = torch.log_softmax(dense(input_ids=ids).logits.float(), -1)
        logq = torch.log_softmax(other(input_ids=ids).logits.float(), -1)
    if top_k is None:
        torch.testing.assert_close(reference, logp, rtol=1e-5, atol=1e-5)
        expected = float((logp.exp() * (logp - logq)).sum(-1).mean())
    else:
        assert isinstance(reference, TopKLogprobs) and reference.values.shape == (2, 300, 5)
        top = torch.topk(logp, 5, dim=-1)
        torch.testing.assert_close(reference.values, top.values, rtol=1e-5, atol=1e-5)
        assert torch.equal(reference.indices, top.indices)
        logq_k = torch.gather(logq, -1, top.indices)
        p_rest, q_rest = 1 - top.values.exp().sum(-1), 1 - logq_k.exp().sum(-1)
        kl = (top.values.exp() * (top.values - logq_k)).sum(-1) + p_rest * (p_rest.log() - q_rest.log())
        expected = float(kl.mean())
    got = kl_from_reference(other, ids, reference)
    assert expected > 1e-3  # the perturbation is visible
    assert got == pytest.approx(expected, rel=1e-4)
    assert kl_from_reference(dense, ids, reference) == pytest.approx(0.0, abs=1e-6)


def test_a_model_whose_logits_are_not_head_of_decoder_uses_its_own_forward(monkeypatch):
    model = _llama()
    wrong = torch.nn.Linear(32, VOCAB, bias=False)
    monkeypatch.setattr(model, "get_output_embeddings", lambda: wrong)
    ids = _stream(30).reshape(1, 30)
    states, head = split_head(model, ids)
    assert states.shape == (1, 30, VOCAB)  # the model's logits, not hidden states
    with torch.no_grad():
        torch.testing.assert_close(head(states[0]), model(input_ids=ids).logits[0].float())
    stream = _stream(2 * 300)
    assert perplexity(model, stream, 300)["perplexity"] == pytest.approx(_full_perplexity(model, stream.reshape(2, 300)),
                                                                        rel=1e-6)


def test_a_model_without_output_embeddings_uses_its_own_forward(monkeypatch):
    model = _llama()
    monkeypatch.setattr(model, "get_output_embeddings", lambda: None)
    states, _ = split_head(model, _stream(20).reshape(1, 20))
    assert states.shape == (1, 20, VOCAB)
    assert logits_module.DEFAULT_ROWS == 256


def test_the_check_runs_once_per_model_and_again_when_its_head_changes(monkeypatch):
    model = _llama()
    ids = _stream(30).reshape(1, 30)
    assert split_head(model, ids)[0].shape == (1, 30, 32)
    calls = []
    model.register_forward_pre_hook(lambda *args: calls.append(1))
    split_head(model, ids)
    assert calls == []  # verified before: the decoder alone runs, not the model's own forward
    monkeypatch.setattr(model, "get_output_embeddings", lambda: torch.nn.Linear(32, VOCAB, bias=False))
    assert split_head(model, ids)[0].shape == (1, 30, VOCAB)  # a new head is checked, fails, falls back
