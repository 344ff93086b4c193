"""Compress stage on a tiny Llama built from a config: validation, llmcompressor recipes, verification."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

from calib_sweep import methods
from calib_sweep.errors import CompressionError, ConfigError
from calib_sweep.models import linear_shapes


def cfg(**kw):
    return OmegaConf.create(kw)


GPTQ = dict(name="gptq", w_bits=4, group_size=32, symmetric=True, damp_percent=0.01, act_order=False, block_size=128)
WANDA = dict(name="wanda", sparsity=0.5, structure="unstructured")


@pytest.fixture(scope="module")
def smollm_shapes():
    """Linear shapes of a SmolLM2-135M-shaped Llama (hidden 576), built on the meta device."""
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
        num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
    )
    return linear_shapes(config)


def test_group_size_128_on_hidden_576_is_refused_with_fix(smollm_shapes):
    with pytest.raises(ConfigError) as err:
        methods.validate_method(cfg(**{**GPTQ, "group_size": 128}), smollm_shapes)
    message = str(err.value)
    assert "method.group_size=128" in message and "576" in message and "[32, 64]" in message
    methods.validate_method(cfg(**{**GPTQ, "group_size": 64}), smollm_shapes)  # fits
    methods.validate_method(cfg(**{**GPTQ, "group_size": None}), smollm_shapes)  # per-channel fits


@pytest.mark.parametrize(
    "override, pattern",
    [({"w_bits": 1}, "method.w_bits=1"), ({"w_bits": 16}, "method.w_bits=16"),
     ({"damp_percent": 0}, "method.damp_percent=0"), ({"group_size": 0}, "method.group_size=0")],
)
def test_bad_quantization_values(override, pattern, smollm_shapes):
    with pytest.raises(ConfigError, match=pattern):
        methods.validate_method(cfg(**{**GPTQ, **override}), smollm_shapes)


@pytest.mark.parametrize(
    "override, pattern",
    [({"sparsity": 1.0}, "method.sparsity=1.0"), ({"sparsity": 0}, "method.sparsity=0"),
     ({"structure": "4:2"}, "method.structure='4:2'"), ({"structure": "2:4", "sparsity": 0.6}, r"contradicts method.structure=2:4"),
     ({"structure": "1:7", "sparsity": 6 / 7}, "M=7 does not divide")],
)
def test_bad_pruning_values(override, pattern, smollm_shapes):
    with pytest.raises(ConfigError, match=pattern):
        methods.validate_method(cfg(**{**WANDA, **override}), smollm_shapes)


def test_unknown_method_is_named():
    with pytest.raises(ConfigError, match="method.name='gptqq'.*awq.*dense.*magnitude.*rtn.*sparsegpt.*spqr.*wanda"):
        methods.validate_method(cfg(name="gptqq"))


@pytest.fixture
def tiny_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def calibration_ids(n=8, seq_len=32, vocab=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab, (n, seq_len), generator=g)


def test_gptq_puts_every_group_on_a_4bit_grid(tiny_model):
    before = methods.fingerprint(tiny_model)
    method = cfg(**GPTQ)
    model = methods.compress(tiny_model, calibration_ids(), method)
    report = methods.verify(model, method, before)
    assert report["summary"]["layers"] == 14 and report["summary"]["layers_changed"] == 14
    assert 2 <= report["summary"]["max_distinct_per_group"] <= 16
    # 64-wide inputs in groups of 32 -> 2 groups per row; q_proj has 64 rows.
    assert report["layers"]["model.layers.0.self_attn.q_proj"]["n_groups"] == 128
    assert "lm_head" not in " ".join(report["layers"])


@pytest.mark.parametrize("structure, sparsity", [("unstructured", 0.5), ("2:4", 0.5)])
def test_wanda_reaches_target_sparsity_in_every_layer(tiny_model, structure, sparsity):
    before = methods.fingerprint(tiny_model)
    embed_before = tiny_model.get_input_embeddings().weight.detach().clone()
    method = cfg(name="wanda", sparsity=sparsity, structure=structure)
    model = methods.compress(tiny_model, calibration_ids(), method)
    report = methods.verify(model, method, before)
    for figures in report["layers"].values():
        assert abs(figures["sparsity"] - sparsity) <= 0.001
        if structure == "2:4":
            assert figures["nm_ok"] is True
    # The tied embeddings / lm_head are never pruned.
    assert torch.equal(model.get_input_embeddings().weight, embed_before)


def test_verify_rejects_a_method_that_compressed_nothing(tiny_model):
    before = methods.fingerprint(tiny_model)
    with pytest.raises(CompressionError, match="changed no weight|sparsity"):
        methods.verify(tiny_model, cfg(**WANDA), before)
    with pytest.raises(CompressionError, match="gptq changed no weight"):
        # random fp32 weights have > 16 distinct values per group too; the unchanged check comes first
        methods.verify(tiny_model, cfg(**GPTQ), before)


def test_verify_rejects_nan_weights(tiny_model):
    before = methods.fingerprint(tiny_model)
    with torch.no_grad():
        for module in methods.target_linears(tiny_model).values():
            module.weight.mul_((torch.rand_like(module.weight) > 0.5).float())
        tiny_model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(CompressionError, match="NaN or Inf"):
        methods.verify(tiny_model, cfg(**WANDA), before, tolerance=0.05)


def test_dense_is_untouched(tiny_model):
    before = methods.fingerprint(tiny_model)
    model = methods.compress(tiny_model, calibration_ids(), cfg(name="dense"))
    report = methods.verify(model, cfg(name="dense"), before)
    assert report["summary"]["layers_changed"] == 0


def test_linear_shapes_need_no_weights():
    config = AutoConfig.for_model("llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                  num_attention_heads=32, vocab_size=32000)
    shapes = linear_shapes(config)  # a 7B model on the meta device: instant, no memory
    assert shapes["model.layers.31.mlp.down_proj"] == (4096, 11008)
    assert len(shapes) == 32 * 7 + 1


@pytest.mark.parametrize("name", sorted(methods.KINDS))
def test_shipped_method_configs_fit_the_default_model(name, smollm_shapes):
    """Every conf/method/*.yaml validates, as shipped, on a SmolLM2-135M-shaped model (hidden 576)."""
    from importlib.resources import files

    method = OmegaConf.load(files("calib_sweep") / "conf" / "method" / f"{name}.yaml")
    assert method.name == name and method.save is False
    methods.validate_method(method, smollm_shapes)
    if methods.KINDS[name] == "quantization":
        assert method.w_bits == 4
    if methods.KINDS[name] == "pruning":
        assert method.sparsity == 0.5 and method.structure == "unstructured"
    if "damp_percent" in method:
        assert method.damp_percent == 0.01


def test_save_must_be_a_boolean():
    with pytest.raises(ConfigError, match="method.save='yes'"):
        methods.validate_method(cfg(name="dense", save="yes"))
