"""Mixtures and self-generated calibration sets (issue 3.3)."""

from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from calib_sweep.data import build, build_calibration_set, validate_source
from calib_sweep.errors import ConfigError
from conftest import make_text, write_jsonl


@pytest.fixture
def two_sources(tmp_path, monkeypatch):
    """conf/dataset replaced by two local JSON-lines sources and a 3:1 mixture of them."""
    rng = random.Random(1)
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in ("alpha", "beta"):
        path = write_jsonl(tmp_path / f"{name}.jsonl", [make_text(rng, 300) for _ in range(40)])
        (conf / f"{name}.yaml").write_text(
            f"name: {name}\nloader: jsonl\npath: {path}\ntext_field: text\nheldout_fraction: 0.1\npermutation_seed: 0\n"
        )
    monkeypatch.setattr(build, "CONF_DATASET_DIR", conf)
    return OmegaConf.create({
        "name": "mix", "loader": "mixture", "heldout_fraction": 0.1,
        "components": [{"dataset": "alpha", "weight": 3}, {"dataset": "beta", "weight": 1}],
    })


def test_split_counts_add_up():
    assert build.split_counts(10, [0.5, 0.5]) == [5, 5]
    assert build.split_counts(7, [3, 1]) == [5, 2]
    assert build.split_counts(128, [1, 1, 1]) == [43, 43, 42]
    assert sum(build.split_counts(33, [0.2, 0.3, 0.5])) == 33


def test_mixture_draws_by_weight_and_stays_disjoint(two_sources, word_tokenizer):
    sets = [build_calibration_set(two_sources, word_tokenizer, 8, 32, seed) for seed in range(3)]
    first = sets[0].manifest()
    assert first["n_samples"] == 8 and [c["n_samples"] for c in first["components"]] == [6, 2]
    assert [s["source"] for s in first["sequences"]] == ["alpha"] * 6 + ["beta"] * 2
    keys = [{(s["source"], s["slot"]) for s in c.sequences} for c in sets]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])


def test_mixture_needs_two_real_components(two_sources):
    bad = OmegaConf.merge(two_sources, {"components": [{"dataset": "alpha", "weight": 1}]})
    with pytest.raises(ConfigError, match="at least 2 components"):
        validate_source(bad)
    bad = OmegaConf.merge(two_sources, {"components": [{"dataset": "alpha", "weight": 1}, {"dataset": "nope", "weight": 1}]})
    with pytest.raises(ConfigError, match="'nope' has no config"):
        validate_source(bad)
    bad = OmegaConf.merge(two_sources, {"components": [{"dataset": "alpha", "weight": 0}, {"dataset": "beta", "weight": 1}]})
    with pytest.raises(ConfigError, match="weight=0"):
        validate_source(bad)


def test_self_generated_is_seeded_and_recorded(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = OmegaConf.load(build.CONF_DATASET_DIR / "self_generated.yaml")
    a = build_calibration_set(cfg, tokenizer, 3, 20, seed=0, model=model)
    b = build_calibration_set(cfg, tokenizer, 3, 20, seed=0, model=model)
    c = build_calibration_set(cfg, tokenizer, 3, 20, seed=1, model=model)
    assert a.input_ids.shape == (3, 20) and a.input_ids.dtype == torch.int64
    assert torch.equal(a.input_ids, b.input_ids) and not torch.equal(a.input_ids, c.input_ids)
    assert (a.input_ids[:, 0] == tokenizer.eos_token_id).all()  # tiny tokenizer has no BOS: starts from EOS
    manifest = a.manifest()
    assert manifest["generation"]["temperature_initial"] == 1.0 and manifest["generation"]["generation_seed"] == 0
    assert c.manifest()["generation"]["generation_seed"] == 1
    with pytest.raises(ConfigError, match="dataset.temperature=0"):
        validate_source(OmegaConf.merge(cfg, {"temperature": 0}))
