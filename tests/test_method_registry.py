"""The method registry (issue 25 item 1): a method added from outside the package runs a real job.

A method is one module calling :func:`calib_sweep.methods.register_method` plus a ``method`` config; here
both come from this file (the config as a Hydra ConfigStore node in group ``method``), nothing else is
edited.  Also: an unknown name is one line listing the registered ones, a name is registered once.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from calib_sweep import methods
from calib_sweep.errors import CompressionError, ConfigError
from calib_sweep.job import run_job
from calib_sweep.methods import METHODS, register_method
from calib_sweep.methods.validation import check_pruning, check_quantization
from helpers import compose_cfg, tiny_overrides

BUILT_IN = ["awq", "dense", "gptq", "magnitude", "rtn", "sparsegpt", "spqr", "wanda"]


def _zero_odd_inputs(model, sequences, method_cfg, record):
    """Toy pruning: zero every weight at an odd input column (pattern 1:2, sparsity exactly 0.5); data-free."""
    with torch.no_grad():
        for module in methods.target_linears(model).values():
            module.weight[:, 1::2] = 0
    record["toy_layers"] = len(methods.target_linears(model))
    return model


def _check_odd_inputs(model, method_cfg, report):
    """Toy verify: the odd input columns are exactly zero, the even ones untouched (non-zero)."""
    for name, module in methods.target_linears(model).items():
        if not bool((module.weight[:, 1::2] == 0).all()) or not bool((module.weight[:, ::2] != 0).all()):
            raise CompressionError(f"{name}: not the toy pattern")
    report["summary"]["toy_verified"] = True


def _round_rows(model, sequences, method_cfg, record):
    """Toy quantization: symmetric round-to-nearest per output row on ``2**w_bits - 1`` levels."""
    levels = 2 ** (int(method_cfg.w_bits) - 1) - 1
    with torch.no_grad():
        for module in methods.target_linears(model).values():
            scale = module.weight.abs().amax(dim=1, keepdim=True) / levels
            module.weight.copy_(torch.round(module.weight / scale) * scale)
    return model


@pytest.fixture
def toy_prune():
    """``method=toy_prune`` registered (its config as a ConfigStore node), removed again afterwards."""
    method = register_method("toy_prune", kind="pruning", validate=check_pruning, compress=_zero_odd_inputs,
                             verify=_check_odd_inputs, data_free=True)
    store = ConfigStore.instance()
    store.store(group="method", name="toy_prune", node={"name": "toy_prune", "sparsity": 0.5, "structure": "1:2",
                                                        "save": False})
    yield method
    del METHODS["toy_prune"]
    store.repo["method"].pop("toy_prune.yaml", None)


@pytest.fixture
def toy_quant():
    method = register_method("toy_quant", kind="quantization", validate=check_quantization, compress=_round_rows,
                             save_note="toy: rounded weights stored dense")
    yield method
    del METHODS["toy_quant"]


def test_toy_method_runs_a_real_job(toy_prune, tiny_model_dir, tiny_corpus, tmp_path, isolated_cache):
    assert methods.KINDS["toy_prune"] == "pruning" and "toy_prune" in methods.DATA_FREE  # the live views
    cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=toy_prune", "method.save=true"])
    record = run_job(cfg, tmp_path / "job")
    saved = json.loads((tmp_path / "job" / "results.json").read_text())
    assert saved["status"] == "ok" and saved["config"]["method"] == {"name": "toy_prune", "sparsity": 0.5,
                                                                     "structure": "1:2", "save": True}
    summary = saved["compression"]["summary"]
    assert summary["method"] == "toy_prune" and summary["kind"] == "pruning" and summary["structure"] == "1:2"
    assert summary["layers"] == summary["layers_changed"] == 14  # 2 blocks x 7 linears, head left alone
    assert summary["min_sparsity"] == summary["max_sparsity"] == 0.5 and summary["toy_verified"] is True
    assert all(layer["nm_ok"] for layer in saved["compression"]["layers"].values())
    assert summary["calibration_tokens"] == 4 * 64  # samples=tiny: the registry still cut the calibration set
    ppl, dense = record["metrics"]["perplexity/local_jsonl"], saved["dense"]["metrics"]["perplexity/local_jsonl"]
    assert 10 < ppl < 1000 and ppl != dense and saved["deltas"]["perplexity/local_jsonl"] == pytest.approx(ppl - dense)
    assert saved["compression"]["summary"]["kl_from_dense"] > 0
    folder = tmp_path / "job" / "model"
    declared = json.loads((folder / methods.SAVE_RECORD).read_text())
    assert declared["method"] == "toy_prune" and declared["format"] == "dense"
    assert declared["declared_in"] == "sparsity_config" and declared["sparsity_structure"] == "1:2"
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert all(bool((m.weight[:, 1::2] == 0).all()) for m in methods.target_linears(reloaded).values())


def test_toy_quantization_verified_and_saved_with_its_note(toy_quant, tiny_model_dir, tmp_path):
    method_cfg = OmegaConf.create({"name": "toy_quant", "w_bits": 4, "group_size": None, "save": True})
    dense = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    shapes = {name: tuple(m.weight.shape) for name, m in methods.target_linears(dense).items()}
    methods.validate_method(method_cfg, shapes)
    with pytest.raises(ConfigError, match="method.w_bits=9 must be an integer in 2..8"):
        methods.validate_method(OmegaConf.merge(method_cfg, {"w_bits": 9}), shapes)
    model = copy.deepcopy(dense)
    before = methods.fingerprint(model)
    model = methods.compress(model, torch.randint(2, 80, (4, 16), generator=torch.Generator().manual_seed(0)), method_cfg)
    report = methods.verify(model, method_cfg, before)
    assert report["summary"]["kind"] == "quantization" and report["summary"]["layers_changed"] == 14
    assert 2 <= report["summary"]["max_distinct_per_group"] <= 15  # 2 * 7 + 1 levels per row
    assert report["summary"]["calibration_tokens"] == 64 and methods.build_recipe(method_cfg) is None
    assert "toy_quant" not in methods.DATA_FREE
    record = json.loads((methods.save(model, method_cfg, tmp_path / "model") / methods.SAVE_RECORD).read_text())
    assert record == {**record, "method": "toy_quant", "kind": "quantization", "format": "dense", "declared_in": None,
                      "note": "toy: rounded weights stored dense"}
    assert record["weight_bytes"] >= record["dense_bytes"] > 0


def test_unknown_method_is_one_line_listing_the_registered(toy_quant):
    with pytest.raises(ConfigError) as err:
        methods.validate_method(OmegaConf.create({"name": "gptqq"}))
    message = str(err.value)
    assert "\n" not in message and message.startswith("method.name='gptqq' is unknown.")
    assert message.endswith(f"Fix: use one of {sorted(BUILT_IN + ['toy_quant'])}.")
    with pytest.raises(ConfigError, match="method.name='nope' is unknown"):
        methods.compress(torch.nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.long), OmegaConf.create({"name": "nope"}))


def test_a_name_is_registered_once(toy_quant):
    gptq = METHODS["gptq"]
    with pytest.raises(ValueError, match="method 'gptq' is registered twice"):
        register_method("gptq", kind="quantization", compress=_round_rows)
    with pytest.raises(ValueError, match="method 'toy_quant' is registered twice"):
        register_method("toy_quant", kind="quantization", compress=_round_rows)
    assert METHODS["gptq"] is gptq and METHODS["toy_quant"] is toy_quant  # the first registrations stand
    with pytest.raises(ValueError, match="kind='quantize' is not one of"):
        register_method("toy_bad", kind="quantize", compress=_round_rows)
    with pytest.raises(ValueError, match="kind 'pruning' needs compress"):
        register_method("toy_bad", kind="pruning")
    assert "toy_bad" not in METHODS and sorted(methods.KINDS) == sorted(BUILT_IN + ["toy_quant"])


def test_built_in_registrations():
    """Every shipped method is registered with the kind and data-freeness results.json and the report rely on."""
    assert dict(methods.KINDS) == {
        "dense": "none", "rtn": "quantization", "gptq": "quantization", "awq": "quantization",
        "spqr": "quantization", "sparsegpt": "pruning", "wanda": "pruning", "magnitude": "pruning",
    }
    assert methods.DATA_FREE == frozenset({"dense", "rtn", "magnitude"}) and len(methods.DATA_FREE) == 3
    assert [m.name for m in METHODS.values() if m.recipe is not None] == ["rtn", "gptq", "awq", "sparsegpt", "wanda"]
