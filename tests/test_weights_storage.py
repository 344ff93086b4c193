"""Base-weight provenance (issue 26 item 2): how the embedded models' weights were stored, and the warning
when a quantization job's grid is at or near that one."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from calib_sweep import assets, models
from calib_sweep.models.storage import describe, grid_warning, gguf_storage, weights_storage
from calib_sweep.report import collect, evidence_tables, summarize
from helpers import compose_cfg

SMOLLM2 = {"format": "gguf", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
           "families": {"mlp.down_proj": {"Q4_1": 30}}, "linear_params": {"Q4_1": 1000},
           "grids": {"Q4_1": {"bits": 4, "group_size": 32, "symmetric": False}}}


def method(**fields):
    return OmegaConf.create(fields)


def test_embedded_smollm2_is_stored_as_q4_1_in_every_decoder_linear():
    storage = gguf_storage(assets.fetch("smollm2_135m_instruct_gguf"))
    linears = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    assert {family: storage["families"][family] for family in linears} == {family: {"Q4_1": 30} for family in linears}
    assert storage["families"]["embed_tokens"] == {"Q8_0": 1}
    assert list(storage["linear_params"]) == ["Q4_1"]
    # Every weight of the 210 decoder linears (30 layers x 7), as the converted model's shapes count them.
    shapes = models.linear_shapes(models.load_config(compose_cfg([]).model))
    assert len([name for name in shapes if name != "lm_head"]) == 210
    assert storage["linear_params"]["Q4_1"] == sum(out * inp for name, (out, inp) in shapes.items() if name != "lm_head")
    assert storage["grids"]["Q4_1"] == {"bits": 4, "group_size": 32, "symmetric": False}
    assert describe(storage) == "GGUF SmolLM2-135M-Instruct.Q4_1.gguf: Q4_1 (4-bit g32 asymmetric) 100% of linear weights"
    assert weights_storage(compose_cfg([]).model) == storage


def test_grid_warning_names_both_grids_and_only_for_quantization_near_the_base():
    assert grid_warning(SMOLLM2, method(name="gptq", w_bits=4, group_size=64)) == (
        "4-bit g64 on weights already on a 4-bit g32 asymmetric grid (GGUF Q4_1, 100% of linear weights within "
        "1 bit of the job's): rounding is favoured")
    assert grid_warning(SMOLLM2, method(name="rtn", w_bits=3, group_size=None)).endswith("rounding may be favoured")
    assert grid_warning(SMOLLM2, method(name="gptq", w_bits=2, group_size=64)) is None  # 2 bits below the base
    assert grid_warning(SMOLLM2, method(name="wanda", sparsity=0.5)) is None  # pruning: no grid
    assert grid_warning({"format": "checkpoint", "torch_dtype": "bfloat16"}, method(name="gptq", w_bits=4)) is None
    mixed = {**SMOLLM2, "linear_params": {"Q4_1": 40, "Q8_0": 60},
             "grids": {**SMOLLM2["grids"], "Q8_0": {"bits": 8, "group_size": 32, "symmetric": True}}}
    assert grid_warning(mixed, method(name="gptq", w_bits=4, group_size=64)) is None  # under half near


def test_random_and_hub_models_record_their_format(tiny_model_dir):
    assert weights_storage(OmegaConf.create({"name": "r", "source": "config", "init": "random"})) == {"format": "random"}
    local = weights_storage(OmegaConf.create({"name": "tiny", "source": "pretrained", "path": str(tiny_model_dir)}))
    assert local["format"] == "checkpoint" and local["quantization_config"] is None


def test_report_flags_groups_quantized_near_their_base_grid(tmp_path):
    def job(name, method_cfg, storage):
        folder = tmp_path / "sweep" / name
        folder.mkdir(parents=True)
        record = {"status": "ok", "config": {"method": method_cfg, "model": {"name": "smollm2_135m"}},
                  "metrics": {"perplexity/offline_wikipedia": 30.0}}
        if storage is not None:
            record["weights_storage"] = storage
        (folder / "results.json").write_text(json.dumps(record))
        return collect.read_job(folder)

    jobs = [job("gptq", {"name": "gptq", "w_bits": 4, "group_size": 64}, SMOLLM2),
            job("wanda", {"name": "wanda", "sparsity": 0.5}, SMOLLM2),
            job("old", {"name": "gptq", "w_bits": 4, "group_size": 64}, None)]
    assert jobs[0].base_grid.startswith("4-bit g64 on weights already on a 4-bit g32")
    assert jobs[1].base_grid is None and jobs[2].base_grid is None  # pruning; a record from before the key
    summary = summarize(jobs)
    (table,) = [t for t in evidence_tables.tables(summary, with_variant=False) if t.anchor == "base_grid"]
    assert len(table.rows) == 1 and "gptq" in table.rows[0][0] and "rounding is favoured" in table.rows[0][1]
    assert evidence_tables.rows(summary)["base_grid"] == [{"group": table.rows[0][0], "warning": jobs[0].base_grid}]
