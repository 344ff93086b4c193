"""Faults a fresh-clone new-user check found (2026-11-30): each gets one clear line before any weights load."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from calib_sweep import models
from calib_sweep.data.sampling import draw_calibration_set
from calib_sweep.data.sources import Document, load_documents
from calib_sweep.errors import ConfigError


def test_model_path_on_an_embedded_model_is_refused():
    cfg = OmegaConf.create({"name": "smollm2-135m-instruct", "source": "embedded", "path": "/nonexistent"})
    with pytest.raises(ConfigError, match=r"model.path='/nonexistent' is set, but model 'smollm2-135m-instruct' is "
                                          r"embedded .* Fix: model.source=pretrained"):
        models.validate_model(cfg)


def test_a_file_that_is_not_json_lines_is_named_with_its_line(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("# Title\n\nprose\n")
    cfg = OmegaConf.create({"name": "local_jsonl", "loader": "jsonl", "path": str(path), "text_field": "text",
                            "heldout_fraction": 0.1})
    with pytest.raises(ConfigError, match=r"README.md:1 is not a JSON object .* Fix: point dataset.path at a .jsonl file"):
        load_documents(cfg)


def test_too_small_source_does_not_suggest_a_seed_when_no_set_fits(word_tokenizer):
    docs = [Document("d0", "the of and to in a is was for on")]
    with pytest.raises(ConfigError, match=r"enough for 0 disjoint set\(s\).* Fix: lower samples.n_samples or "
                                          r"samples.seq_len \(not even one set fits\)"):
        draw_calibration_set(docs, word_tokenizer, 4, 8, 0, source="tiny")
    with pytest.raises(ConfigError, match=r"Fix: use seed<1, lower"):
        draw_calibration_set(docs, word_tokenizer, 1, 8, 3, source="tiny")
