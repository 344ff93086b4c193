"""Every method on the tiny Llama: verification, C05 (singular Hessian), C06 (padding), save, KL, optimum."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from calib_sweep import methods
from calib_sweep.methods.hessian import accumulate_hessians, calibration_sequences, damped_inverse_cholesky


def cfg(**kw):
    return OmegaConf.create(kw)


def ids(n=8, seq_len=32, seed=0):
    return torch.randint(2, 80, (n, seq_len), generator=torch.Generator().manual_seed(seed))


GPTQ = dict(name="gptq", backend="llmcompressor", w_bits=4, group_size=32, symmetric=True, damp_percent=0.01,
            act_order=False, block_size=128)


@pytest.fixture(scope="module")
def dense(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def run(dense, method, input_ids=None, mask=None):
    model = copy.deepcopy(dense)
    before = methods.fingerprint(model)
    model = methods.compress(model, ids() if input_ids is None else input_ids, method, attention_mask=mask)
    return model, methods.verify(model, method, before)


@pytest.mark.parametrize(
    "method",
    [
        dict(name="rtn", w_bits=4, group_size=32, symmetric=True),
        dict(name="awq", w_bits=4, group_size=32, symmetric=False, duo_scaling=True, n_grid=3),
        dict(name="sparsegpt", sparsity=0.5, structure="unstructured", damp_percent=0.01, block_size=128),
        dict(name="sparsegpt", sparsity=0.5, structure="2:4", damp_percent=0.01, block_size=128),
        dict(name="magnitude", sparsity=0.5, structure="unstructured"),
        dict(name="magnitude", sparsity=0.5, structure="4:8"),
        dict(name="wanda", sparsity=0.5, structure="4:8"),
    ],
    ids=lambda m: f"{m['name']}-{m.get('structure', m.get('w_bits'))}",
)
def test_method_is_verified(dense, method):
    input_ids = ids(2, 16) if method["name"] == "awq" else ids()  # AWQ's grid search is slow on a CPU
    model, report = run(dense, cfg(**method), input_ids)
    summary = report["summary"]
    assert summary["layers_changed"] == 14
    if "sparsity" in method:
        for figures in report["layers"].values():
            assert abs(figures["sparsity"] - 0.5) <= 0.001
            assert figures.get("nm_ok", True) is True
    else:
        assert 2 <= summary["max_distinct_per_group"] <= 16
    if method["name"] == "sparsegpt":
        assert set(report["damping"]) == set(report["layers"]) and summary["max_damp"] == 0.01


def test_c05_singular_hessian_raises_damping_per_layer(dense):
    # C05: 2 calibration samples repeating one token. Tiny initial damping makes the Cholesky
    # factorization fail; llmcompressor would silently fall back to round-to-nearest.
    repeated = torch.full((2, 32), 7, dtype=torch.long)
    for name in ("gptq", "sparsegpt"):
        extra = dict(sparsity=0.5, structure="unstructured", block_size=128) if name == "sparsegpt" else {}
        base = GPTQ if name == "gptq" else {}
        method = cfg(**{**base, **extra, "name": name, "damp_percent": 1e-9})
        model, report = run(dense, method, repeated)
        assert all(torch.isfinite(m.weight).all() for m in methods.target_linears(model).values())
        assert set(report["damping"]) == set(report["layers"])
        assert report["summary"]["damp_raised_layers"] >= 1 and report["summary"]["max_damp"] > 1e-9
        assert all(report["layers"][k]["damp"] == v for k, v in report["damping"].items())
    # With the study's damping the same data needs no escalation but still works.
    _, report = run(dense, cfg(**GPTQ), repeated)
    assert report["summary"]["max_damp"] == 0.01


def test_gptq_and_sparsegpt_equal_plain_llmcompressor_bit_for_bit(dense):
    # Where llmcompressor's factorization succeeds our damping patch must change nothing: GPTQ on
    # outlier-heavy models amplifies rounding differences (SmolLM2: 3% perplexity from one float).
    from datasets import Dataset
    from llmcompressor import oneshot

    calib = ids()
    data = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()})
    for method in (cfg(**GPTQ), cfg(name="sparsegpt", sparsity=0.5, structure="unstructured", damp_percent=0.01, block_size=128)):
        ours, report = run(dense, method, calib)
        plain = copy.deepcopy(dense)
        oneshot(model=plain, dataset=data, recipe=methods.build_recipe(method), num_calibration_samples=calib.shape[0],
                max_seq_length=calib.shape[1], shuffle_calibration_samples=False)
        for name, layer in methods.target_linears(ours).items():
            assert torch.equal(layer.weight, methods.target_linears(plain)[name].weight), (method.name, name)
        assert report["summary"]["max_damp"] == 0.01


def test_damping_escalates_tenfold_and_fails_clearly_on_nan():
    h = torch.ones(8, 8)  # rank 1
    h[0, 0] = 1 + 1e-12
    _, frac, _ = damped_inverse_cholesky(h * 1e6, 1e-12, "x")
    assert frac > 1e-12 and math.log10(frac / 1e-12) == pytest.approx(round(math.log10(frac / 1e-12)))
    with pytest.raises(methods.CompressionError, match="Hessian of x holds NaN"):
        damped_inverse_cholesky(h * float("nan"), 0.01, "x")


def padded(input_ids, pad_len=8, left=False, seed=1):
    garbage = torch.randint(2, 80, (input_ids.shape[0], pad_len), generator=torch.Generator().manual_seed(seed))
    zeros, ones = torch.zeros_like(garbage), torch.ones_like(input_ids)
    if left:
        return torch.cat([garbage, input_ids], 1), torch.cat([zeros, ones], 1)
    return torch.cat([input_ids, garbage], 1), torch.cat([ones, zeros], 1)


def test_c06_padding_never_enters_statistics(dense):
    clean = ids(4, 24)
    layers = methods.target_linears(dense)
    reference = accumulate_hessians(dense, calibration_sequences(clean), layers)
    for left in (False, True):
        batch, mask = padded(clean, left=left)
        hessians = accumulate_hessians(dense, calibration_sequences(batch, mask), layers)
        for name in layers:
            torch.testing.assert_close(hessians[name], reference[name], rtol=1e-5, atol=1e-6)
    # Same for the llmcompressor statistics: Wanda's activation norms and GPTQ's Hessians give
    # identical weights with and without garbage padding under mask 0.
    batch, mask = padded(clean)
    for method in (cfg(name="wanda", sparsity=0.5, structure="unstructured"), cfg(**GPTQ)):
        a, _ = run(dense, method, clean)
        b, _ = run(dense, method, batch, mask)
        for (name, la), lb in zip(methods.target_linears(a).items(), methods.target_linears(b).values()):
            assert torch.equal(la.weight, lb.weight), name


def test_gpt2_conv1d_and_unmapped_awq_are_refused_before_loading():
    from transformers import GPT2Config

    from calib_sweep.models import linear_shapes

    shapes = linear_shapes(GPT2Config(n_layer=1, n_embd=64, n_head=4, vocab_size=100))
    with pytest.raises(methods.ConfigError, match="Conv1D"):
        methods.validate_method(cfg(**GPTQ), shapes)
    methods.validate_method(cfg(name="dense"), shapes)
    awq = cfg(name="awq", w_bits=4, group_size=32, symmetric=False)
    with pytest.raises(methods.ConfigError, match="method.name=awq has no layer mappings"):
        methods.validate_method(awq, {"transformer.h.0.attn.c_attn": (192, 64)})
    opt = {f"model.decoder.layers.0.{n}": (64, 64) for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                           "self_attn.out_proj", "fc1", "fc2")}
    methods.validate_method(awq, opt)
    with pytest.raises(methods.ConfigError, match="method.n_grid=2"):
        methods.validate_method(cfg(**{**awq, "n_grid": 2}))


@torch.no_grad()
def mean_nll(model, input_ids):
    return float(model(input_ids=input_ids, labels=input_ids).loss)


def test_saved_compressed_model_reloads_with_the_same_perplexity(dense, tmp_path):
    method = cfg(**GPTQ, save=True)
    model, _ = run(dense, method)
    held_out = ids(2, 48, seed=5)
    expected = mean_nll(model, held_out)
    layer = "model.layers.1.mlp.down_proj"
    quantized = methods.target_linears(model)[layer].weight.detach().clone()
    folder = methods.save(model, method, tmp_path / "model")  # compresses the in-memory model too
    assert "quantization_config" in (folder / "config.json").read_text()
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert math.exp(mean_nll(reloaded, held_out)) == pytest.approx(math.exp(expected), rel=1e-4)
    torch.testing.assert_close(methods.target_linears(reloaded)[layer].weight, quantized)
    assert not torch.equal(methods.target_linears(reloaded)[layer].weight, methods.target_linears(dense)[layer].weight)


def test_kl_from_dense_reference(dense):
    held_out = ids(2, 24, seed=3)
    full = methods.reference_logprobs(dense, held_out, top_k=None)
    assert full.dtype == torch.float32 and full.shape == (2, 24, dense.config.vocab_size) and full.device.type == "cpu"
    top = methods.reference_logprobs(dense, held_out, top_k=8)
    assert top.values.shape == (2, 24, 8)
    assert methods.kl_from_reference(dense, held_out, full) == pytest.approx(0.0, abs=1e-6)
    assert methods.kl_from_reference(dense, held_out, top) == pytest.approx(0.0, abs=1e-6)
    pruned, _ = run(dense, cfg(name="magnitude", sparsity=0.5, structure="unstructured"))
    kl_full = methods.kl_from_reference(pruned, held_out, full)
    kl_top = methods.kl_from_reference(pruned, held_out, top)
    kl_all = methods.kl_from_reference(pruned, held_out, methods.reference_logprobs(dense, held_out, top_k=10**6))
    assert kl_full > 0 and 0 <= kl_top <= kl_full + 1e-6  # top-k + rest bucket: a lower bound
    assert kl_all == pytest.approx(kl_full, rel=1e-3)
    with pytest.raises(methods.ConfigError, match="token_ids"):
        methods.kl_from_reference(pruned, held_out[:1], full)


def test_optimum_backend_without_the_extra_is_a_config_error(monkeypatch):
    monkeypatch.setattr(methods, "optimum_available", lambda: False)
    with pytest.raises(methods.ConfigError, match=r"method.backend=optimum needs the optional extra.*\[optimum\]"):
        methods.validate_method(cfg(**{**GPTQ, "backend": "optimum"}))


@pytest.mark.skipif(not methods.optimum_available(), reason="extra [optimum] (optimum 2.3.0 + gptqmodel 7.6.0) not installed")
def test_optimum_gptq_matches_llmcompressor_gptq(dense, tmp_path):
    hessians = accumulate_hessians(dense, calibration_sequences(ids()), methods.target_linears(dense))

    @torch.no_grad()
    def error(model):
        ref = methods.target_linears(dense)
        return sum(float(torch.trace((l.weight - ref[n].weight) @ hessians[n] @ (l.weight - ref[n].weight).T))
                   for n, l in methods.target_linears(model).items())

    a, _ = run(dense, cfg(**GPTQ))
    b, report = run(dense, cfg(**{**GPTQ, "backend": "optimum"}))
    assert report["summary"]["max_distinct_per_group"] <= 16
    assert error(b) == pytest.approx(error(a), rel=0.25)
    # Saving this backend writes plain dequantized weights (no wrong gptq_v2 tag): same loss on reload.
    held_out = ids(2, 48, seed=5)
    folder = methods.save(b, cfg(**{**GPTQ, "backend": "optimum"}), tmp_path / "optimum")
    assert "quantization_config" not in (folder / "config.json").read_text()
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert mean_nll(reloaded, held_out) == pytest.approx(mean_nll(b, held_out), rel=1e-5)


def test_awq_on_opt_uses_explicit_mappings(tiny_model_dir, tmp_path):
    """OPT is not in llmcompressor's AWQ registry; its default (Llama) mappings would not resolve."""
    import shutil

    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    config = OPTConfig(vocab_size=81, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                       word_embed_proj_dim=64, max_position_embeddings=128)
    OPTForCausalLM(config).save_pretrained(tmp_path)
    for path in tiny_model_dir.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(path, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    _, report = run(model, cfg(name="awq", w_bits=4, group_size=32, symmetric=False, n_grid=3), ids(2, 16))
    assert report["summary"]["layers_changed"] == 12 and report["summary"]["max_distinct_per_group"] <= 16
