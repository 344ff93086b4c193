"""Selection strategies inside a job (issue 16): scoring after the model loads with its own timing,
manifest and rebuild, bad input before the model loads."""

from __future__ import annotations

import io
import json

import pytest

from calib_sweep.data import cli
from calib_sweep.errors import ConfigError
from calib_sweep.job import run_job
from helpers import compose_cfg, tiny_overrides


def test_perplexity_job_scores_after_loading_with_its_own_timing(tiny_model_dir, tiny_corpus, isolated_cache, tmp_path):
    overrides = tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=dense", "selection=perplexity_high"]
    record = run_job(compose_cfg(overrides), tmp_path / "job")
    assert record["status"] == "ok"
    assert record["timings"]["selection_scoring"] > 0 and record["caches"]["selection_features"]["reused"] is False
    selection = record["calibration"]["selection"]
    assert selection["strategy"] == "perplexity" and selection["params"]["band"] == "high"
    scores = [q["score"] for q in record["calibration"]["sequences"]]
    assert scores == sorted(scores, reverse=True) and len(selection["pool"]["slots"]) == 16
    out = io.StringIO()
    assert cli.cmd_rebuild(str(tmp_path / "job" / "results.json"), None, out=out) is True
    assert record["caches"]["selection_features"]["windows"] == 16  # the share only, not the whole source
    again = run_job(compose_cfg(overrides + ["seed=1"]), tmp_path / "job1")
    assert again["caches"]["selection_features"]["reused"] is False  # another seed: another share
    assert not {q["slot"] for q in again["calibration"]["sequences"]} & {q["slot"] for q in record["calibration"]["sequences"]}
    low = run_job(compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=dense", "selection=perplexity"]),
                  tmp_path / "job_low")
    assert low["caches"]["selection_features"]["reused"] is True  # seed 0's share again, another band: cached


def test_random_job_manifest_has_no_selection(tiny_model_dir, tiny_corpus, tmp_path):
    record = run_job(compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=dense"]), tmp_path / "job")
    assert "selection" not in record["calibration"] and "selection_scoring" not in record["timings"]


@pytest.mark.parametrize("extra, match, stage", [
    # a bad value needs no data: refused at validate, in milliseconds
    (["selection=perplexity", "selection.band=top"], r"selection.band='top' is unknown", "validate"),
    # a layer the model lacks needs only its config.json: refused in prepare
    (["selection=activation_diversity", "selection.layer=999"],
     r"selection.layer=999 does not exist in a model of 2 layers. Fix: 0 <= selection.layer <= 2", "prepare"),
    # the pool's size needs the source's tokens: refused in calibrate, still before the model loads
    (["selection=activation_diversity", "seed=30"], r"selection=activation_diversity \(pool_factor=4\) can give \d+ disjoint set",
     "calibrate"),
])
def test_bad_selection_fails_before_the_model_loads(tiny_model_dir, tiny_corpus, tmp_path, extra, match, stage):
    with pytest.raises(ConfigError, match=match):
        run_job(compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=dense", *extra]), tmp_path / "job")
    saved = json.loads((tmp_path / "job" / "results.json").read_text())
    assert saved["status"] == "failed" and saved["stage"] == stage and "load" not in saved["timings"]
