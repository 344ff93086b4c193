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
    env = {**os.environ, "PY": str(fake), "TESTBED_LOCK": "", "TESTBED_OUT": str(tmp_path / "out"),
           "TESTBED_ARCHIVE": str(tmp_path / "records")}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "run_testbed.sh")], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [line.split()[1:] for line in out.splitlines() if line.startswith("POINT ")]


def test_every_grid_point_composes(tmp_path):
    points = grid_points(tmp_path)
    assert len(points) == testbed_table.TOTAL_JOBS == 64
    assert points[0][:2] == ["model=smollm2_135m", "method=rtn"]
    assert sum(p[0] == "model=gemma3_270m" for p in points) == 14
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
    assert len(gptq) == 54 and sum("method.static_groups=false" in p for p in gptq) == 30
    assert not any("method.group_size=null" in p and "method.static_groups=true" in p for p in gptq)


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
    assert testbed_table.main(["--root", str(root), "--out", str(out), "--archive", str(tmp_path / "none")]) == 0
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
    assert "5 of 64 jobs finished" in readme
    import datetime

    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    assert f"Measured {today} on `hardware not recorded`" in readme  # the fake records have no runtime.hardware
    assert "No setting qualifies yet" in readme  # GPTQ ties RTN here


def test_archived_records_count_once_and_name_their_day(tmp_path):
    """A committed record (docs/testbed/records/<point>.json) is read without any multirun folder, and the
    same job also under the root counts once; its day is its ``finished`` field, not the file's mtime."""
    archive, root = tmp_path / "records", tmp_path / "testbed"
    rtn = {"name": "rtn", "w_bits": 3, "group_size": None, "symmetric": True}
    _job(root / "p" / "0", rtn, 0, 60.0, 1.0, 3.0)
    archive.mkdir()
    record = json.loads((root / "p" / "0" / "results.json").read_text())
    record["finished"] = "2026-11-30T10:00:00+00:00"
    record["runtime"] = {"hardware": {"id": "cpu Test x2 threads"}}
    (archive / "p.json").write_text(json.dumps(record))
    measured: dict = {}
    groups, jobs = testbed_table.collect(tmp_path / "missing", measured, archive)
    assert jobs == 1 and measured == {"cpu Test x2 threads": {"2026-11-30"}}
    groups, jobs = testbed_table.collect(root, {}, archive)
    assert jobs == 1 and groups[("smollm2-135m", 3, None, True, "rtn")]["seeds"] == {0: (60.0, 1.0, 3.0)}
    out = tmp_path / "docs"
    assert testbed_table.main(["--root", str(tmp_path / "missing"), "--archive", str(archive), "--out", str(out)]) == 0
    assert "Measured 2026-11-30 on `cpu Test x2 threads`" in (out / "README.md").read_text()


def test_script_skips_archived_points_and_archives_finished_ones(tmp_path):
    """run_testbed.sh: a point with an ok record in the archive is not run again; a point that finishes is
    copied there (so a new checkout resumes from the commit)."""
    archive = tmp_path / "records"
    archive.mkdir()
    first = "smollm2_135m_w3_gnull_rtn_symtrue"
    (archive / f"{first}.json").write_text(json.dumps({"status": "ok"}))
    fake = tmp_path / "fake_python"
    # Stands in for a job: writes an ok results.json into <sweep dir>/0/ and prints the point.
    fake.write_text('#!/bin/sh\nshift 4\nfor a; do case $a in hydra.sweep.dir=*) d=${a#hydra.sweep.dir=};; esac; done\n'
                    'mkdir -p "$d/0"; echo \'{"status": "ok", "x": 1}\' > "$d/0/results.json"; echo "POINT $*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PY": str(fake), "TESTBED_LOCK": "", "TESTBED_OUT": str(tmp_path / "out"),
           "TESTBED_ARCHIVE": str(archive)}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "run_testbed.sh")], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert f"archived {first}" in out
    assert sum(line.startswith("POINT ") for line in out.splitlines()) == testbed_table.TOTAL_JOBS - 1
    assert len(list(archive.glob("*.json"))) == testbed_table.TOTAL_JOBS
    assert json.loads((archive / "smollm2_135m_w3_gnull_rtn_symfalse.json").read_text()) == {"status": "ok", "x": 1}


def _row(model, bits, sym, kind, mean, sd, rtn, dense=20.0):
    return {"model": model, "w_bits": bits, "group_size": 64, "symmetric": sym, "variant": kind, "n_sets": 3,
            "perplexity_mean": mean, "perplexity_sd": sd, "rtn_perplexity": rtn,
            "gptq_minus_rtn": "" if kind == "rtn" else round(mean - rtn, 4), "dense_perplexity": dense,
            "grid_warning": ""}


def test_recommendation_needs_a_usable_model_and_a_clear_gptq_win():
    """2-bit (GPTQ far ahead of RTN but 50x the dense perplexity) is not recommended; 3-bit, where GPTQ beats
    RTN by > 2 set SDs in both symmetries within 4x dense, is; 4-bit, where RTN wins one symmetry, is not."""
    smol = testbed_table.STUDY_MODEL
    table = []
    for bits, (rtn_t, rtn_f, g_t, g_f, sd) in {2: (9000, 5000, 1500, 1000, 50), 3: (80, 60, 50, 45, 2),
                                              4: (27.0, 25.0, 26.0, 25.5, 0.2)}.items():
        table += [_row(smol, bits, True, "rtn", rtn_t, "", rtn_t), _row(smol, bits, True, "gptq faithful", g_t, sd, rtn_t),
                  _row(smol, bits, False, "rtn", rtn_f, "", rtn_f), _row(smol, bits, False, "gptq faithful", g_f, sd, rtn_f)]
    lines = testbed_table.reading(table)
    assert "not usable: 50.0x the dense perplexity > 4x" in lines[0]
    assert lines[1].endswith("by 7.5-15.0 set SDs; qualifies.")
    assert "RTN ties or wins in some symmetry" in lines[2]
    assert lines[-1].startswith(f"\nRecommended for the study: {smol} 3-bit g64 (faithful GPTQ 45.00 vs RTN 60.00, 2.25x dense")


def test_missing_root_exits_2(tmp_path, capsys):
    assert testbed_table.main(["--root", str(tmp_path / "nope"), "--archive", str(tmp_path / "nope2"),
                               "--out", str(tmp_path)]) == 2
    assert "--root" in capsys.readouterr().err
