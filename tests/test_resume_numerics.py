"""Resume by numerical identity (issue 31 item 1): a skipped job was computed the way a rerun would compute it."""

from __future__ import annotations

import json
import os

import pytest

from calib_sweep import job, numerics
from calib_sweep.errors import ConfigError
from helpers import compose_cfg, run_cli, tiny_overrides

CPU2 = {"threads": 2, "dtype": "torch.float32", "device": "cpu", "hardware_id": "cpu X [AVX2, mkl] x2 threads"}


def test_mismatch_names_the_first_difference_in_words():
    one_thread = {**CPU2, "threads": 1, "hardware_id": "cpu X [AVX2, mkl] x1 threads"}
    assert numerics.mismatch(one_thread, CPU2) == "earlier result used 1 thread, this job 2"
    assert numerics.mismatch({**CPU2, "dtype": "torch.bfloat16"}, CPU2) == \
        "earlier result used dtype torch.bfloat16, this job torch.float32"
    assert numerics.mismatch({**CPU2, "device": "cuda"}, CPU2) == "earlier result used device cuda, this job cpu"
    assert numerics.mismatch({**CPU2, "hardware_id": "cpu Y [AVX512, mkl] x2 threads"}, CPU2) == \
        "earlier result used hardware cpu Y [AVX512, mkl] x2 threads, this job cpu X [AVX2, mkl] x2 threads"
    assert numerics.mismatch(CPU2, CPU2) is None
    assert numerics.mismatch({}, CPU2) is None  # a record older than the runtime block: nothing to compare
    assert numerics.mismatch(one_thread, None) is None  # invalid settings: validation reports them


def test_recorded_reads_the_runtime_block_of_results_json():
    runtime = {"device": "cuda:0", "dtype": "torch.float32", "threads": 4, "hardware": {"id": "cuda H200 x4 threads"}}
    assert numerics.recorded(runtime) == {"threads": 4, "dtype": "torch.float32", "device": "cuda",
                                          "hardware_id": "cuda H200 x4 threads"}
    assert numerics.recorded(None) == {} and numerics.recorded({"threads": 2}) == {"threads": 2}


def test_environment_is_what_the_job_records():
    env = numerics.environment("cpu", "auto", 1)
    assert env["threads"] == 1 and env["dtype"] == "torch.float32" and env["device"] == "cpu"
    assert env["hardware_id"].startswith("cpu ") and env["hardware_id"].endswith(" x1 threads")
    assert numerics.environment("cpu", "float64x", 1) is None


def test_resume_match_is_validated_in_one_line():
    with pytest.raises(ConfigError, match=r"resume.match='loose' is not one of \['strict', 'config'\]"):
        job.validate(compose_cfg(["resume.match=loose"]))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores: 2 parallel jobs then get 1 thread each")
def test_parallel_results_are_rerun_by_a_serial_sweep_unless_match_config(tiny_model_dir, tiny_corpus, tmp_path):
    cores = len(os.sched_getaffinity(0))
    base = ["-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "method=wanda", "seed=0,1"]
    first = run_cli([*base, "hydra/launcher=local_parallel", "hydra.sweep.dir=multirun/par"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    threads = {json.loads(p.read_text())["runtime"]["threads"] for p in (tmp_path / "multirun/par").rglob("results.json")}
    assert threads == {cores // 2}
    serial = run_cli([*base, "hydra.sweep.dir=multirun/serial"], tmp_path)
    assert serial.returncode == 0, serial.stderr[-2000:]
    assert serial.stdout.count(f"rerunning: earlier result used {cores // 2} thread") == 2, serial.stdout[-3000:]
    assert not list((tmp_path / "multirun/serial").rglob("skipped.json"))
    rerun = {json.loads(p.read_text())["runtime"]["threads"] for p in (tmp_path / "multirun/serial").rglob("results.json")}
    assert rerun == {cores}
    # The index now points at the serial results; a parallel sweep with resume.match=config skips them anyway.
    loose = run_cli([*base, "hydra/launcher=local_parallel", "resume.match=config", "hydra.sweep.dir=multirun/loose"], tmp_path)
    assert loose.returncode == 0, loose.stderr[-2000:]
    pointers = [json.loads(p.read_text()) for p in (tmp_path / "multirun/loose").rglob("skipped.json")]
    assert len(pointers) == 2 and {p["match"] for p in pointers} == {"config"}
    # And a serial sweep under strict skips the serial results, recording the environment it matched.
    again = run_cli([*base, "hydra.sweep.dir=multirun/again"], tmp_path)
    pointers = [json.loads(p.read_text()) for p in (tmp_path / "multirun/again").rglob("skipped.json")]
    assert again.returncode == 0 and len(pointers) == 2
    assert {p["match"] for p in pointers} == {"strict"} and {p["environment"]["threads"] for p in pointers} == {cores}


def test_report_flags_a_group_that_mixes_float32_and_bfloat16(tmp_path):
    from calib_sweep.report import write_report
    from test_report import _config, write_job

    hw = "cpu AMD EPYC [AVX512, mkl] x2 threads"
    for seed in range(3):
        dtype = "torch.bfloat16" if seed == 2 else "torch.float32"
        write_job(tmp_path / "s", seed, _config("gptq", "c4", seed), metrics={"perplexity/wikitext": 30.0 + seed},
                  extra={"runtime": {"dtype": dtype, "hardware": {"id": hw}}})
    ev = write_report([tmp_path / "s"], tmp_path / "r", wandb=False).summary.evidence
    (flag,) = ev.hardware_flags
    assert flag[1] == [hw, f"{hw}, torch.bfloat16"]
