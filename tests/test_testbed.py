"""The testbed (issue 26 item 3): every grid point of scripts/run_testbed.sh composes, and
bench/testbed_table.py turns results.json files into the CSV and README with the right figures."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import testbed_table  # noqa: E402

SMOL = {"format": "gguf", "file": "smol.gguf", "linear_params": {"Q4_1": 100},
        "grids": {"Q4_1": {"bits": 4, "group_size": 32, "symmetric": False}}}


def grid_points(tmp_path: Path) -> list[list[str]]:
    """The override lists run_testbed.sh passes, captured by running it with a stand-in python."""
    fake = tmp_path / "fake_python"
    fake.write_text('#!/bin/sh\nshift 4\necho "POINT $*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PY": str(fake), "TESTBED_LOCK": "", "TESTBED_OUT": str(tmp_path / "out")}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "run_testbed.sh")], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [line.split()[1:] for line in out.splitlines() if line.startswith("POINT ")]


def test_every_grid_point_composes(tmp_path):
    points = grid_points(tmp_path)
    assert len(points) == testbed_table.TOTAL_JOBS == 70
    assert points[0][:2] == ["model=smollm2_135m", "method=rtn"]
    assert points[-1][0] == "model=gemma3_270m"
    with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
        for overrides in points:
            sweep_dir = overrides.pop()
            assert sweep_dir.startswith("hydra.sweep.dir=")
            cfg = compose(config_name="config", overrides=["experiment=testbed", *overrides])
            assert list(cfg.eval.zeroshot.tasks) == []
            assert (cfg.samples.n_samples, cfg.samples.seq_len, cfg.eval.perplexity.max_windows) == (32, 256, 8)
            assert cfg.logger.enabled is False
            assert cfg.method.name in ("rtn", "gptq")
    gptq = [p for p in points if "method=gptq" in p]
    assert len(gptq) == 60 and sum("method.static_groups=false" in p for p in gptq) == 30


def _job(folder: Path, method: dict, seed: int, ppl: float, kl: float, compress: float, model="smollm2-135m") -> None:
    folder.mkdir(parents=True)
    record = {"status": "ok", "config": {"model": {"name": model}, "method": method, "seed": seed},
              "metrics": {"perplexity/offline_wikipedia": ppl, "compression/kl_from_dense": kl},
              "timings": {"compress": compress}, "weights_storage": SMOL}
    (folder / "results.json").write_text(json.dumps(record))


def test_table_from_synthetic_results(tmp_path):
    root = tmp_path / "testbed"
    rtn = {"name": "rtn", "w_bits": 4, "group_size": 64, "symmetric": True}
    _job(root / "rtn" / "0_rtn", rtn, 0, 27.0, 0.30, 4.0)
    for seed, ppl in enumerate((26.0, 27.0, 28.0)):
        _job(root / f"f{seed}" / "0_gptq", {"name": "gptq", "w_bits": 4, "group_size": 64, "symmetric": True,
                                            "static_groups": False}, seed, ppl, 0.2 + seed / 100, 120.0)
    _job(root / "s0" / "0_gptq", {"name": "gptq", "w_bits": 4, "group_size": 64, "symmetric": True,
                                  "static_groups": True}, 0, 29.5, 0.4, 30.0)
    # a resumed run: skipped.json points at the first seed-0 faithful job, which is not counted twice
    (root / "f0_2" / "0_gptq").mkdir(parents=True)
    (root / "f0_2" / "0_gptq" / "skipped.json").write_text(json.dumps({"results": str(root / "f0" / "0_gptq" / "results.json")}))
    out = tmp_path / "docs"
    assert testbed_table.main(["--root", str(root), "--out", str(out)]) == 0
    table = list(csv.DictReader(open(out / "testbed.csv")))
    assert [r["variant"] for r in table] == ["rtn", "gptq faithful", "gptq static"]
    faithful = table[1]
    assert faithful["n_sets"] == "3" and float(faithful["perplexity_mean"]) == 27.0
    assert float(faithful["perplexity_sd"]) == 1.0 and float(faithful["kl_mean"]) == 0.21
    assert float(faithful["rtn_perplexity"]) == 27.0 and float(faithful["gptq_minus_rtn"]) == 0.0
    assert float(table[2]["gptq_minus_rtn"]) == 2.5 and table[2]["perplexity_sd"] == ""
    assert float(faithful["compress_s_mean"]) == 120.0
    assert "Q4_1 (4-bit g32 asymmetric) 100%" in faithful["base_grid"] and faithful["grid_warning"]
    readme = (out / "README.md").read_text()
    assert "5 of 70 jobs finished" in readme
    import datetime

    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    assert f"Measured {today} on `hardware not recorded`" in readme  # the fake records have no runtime.hardware
    assert "No setting yet where the best faithful GPTQ beats the best RTN" in readme


def test_missing_root_exits_2(tmp_path, capsys):
    assert testbed_table.main(["--root", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "--root" in capsys.readouterr().err
