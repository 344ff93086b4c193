"""Folder claims (fault 3): no sweep, run or job ever writes into another one's folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from calib_sweep import claims
from helpers import tiny_overrides


def test_claim_folder_moves_to_the_first_free_numbered_folder(tmp_path):
    first = claims.claim_folder(tmp_path / "sweep", "sweep")
    second = claims.claim_folder(tmp_path / "sweep", "sweep")
    third = claims.claim_folder(tmp_path / "sweep", "sweep")
    assert (first, second, third) == (tmp_path / "sweep", tmp_path / "sweep_2", tmp_path / "sweep_3")
    owner = json.loads((second / claims.FOLDER_CLAIM).read_text())
    assert owner["pid"] == os.getpid() and owner["kind"] == "sweep"


def test_job_folder_of_another_config_is_refused_untouched(tmp_path):
    folder = tmp_path / "0_rtn"
    claims.claim_job_folder(folder, "a" * 64)
    (folder / "results.json").write_text('{"status": "ok"}')
    with pytest.raises(claims.FolderInUse, match=rf"job folder {folder} is in use by another job \(config key aaaaaaaaaaaa"):
        claims.claim_job_folder(folder, "b" * 64)
    assert (folder / "results.json").read_text() == '{"status": "ok"}'


def test_same_job_takes_over_unless_its_process_still_runs(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"config_key": "k", "pid": int(dead.stdout), "host": os.uname().nodename}
    (folder / claims.JOB_CLAIM).write_text(json.dumps(record))
    claims.claim_job_folder(folder, "k")  # its process is gone: a rerun takes the folder over
    assert json.loads((folder / claims.JOB_CLAIM).read_text())["pid"] == os.getpid()
    (folder / claims.JOB_CLAIM).write_text(json.dumps({**record, "pid": os.getppid()}))  # alive
    with pytest.raises(claims.FolderInUse, match="in use by the same job still running"):
        claims.claim_job_folder(folder, "k")


def test_two_sweeps_started_at_once_in_one_folder_keep_all_results(tiny_model_dir, tiny_corpus, tmp_path):
    """The reported case: two concurrent sweeps with the same hydra.sweep.dir."""
    base = [sys.executable, "-m", "calib_sweep", "-m", *tiny_overrides(tiny_model_dir, tiny_corpus), "seed=0,1",
            "threads=1", "eval.dense_baseline=false", "hydra.sweep.dir=multirun/same"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    procs = [subprocess.Popen([*base, f"method={m}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for m in ("rtn", "magnitude")]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    assert sum("already belongs to another sweep (running or finished); writing to multirun/same_2" in o[1] for o in outputs) == 1
    methods_by_folder = {}
    for folder in (tmp_path / "multirun" / "same", tmp_path / "multirun" / "same_2"):
        records = [json.loads(p.read_text()) for p in folder.rglob("results.json")]
        assert len(records) == 2 and all(r["status"] == "ok" for r in records)
        methods_by_folder[folder.name] = {r["config"]["method"]["name"] for r in records}
        # The sweep's own record names its own overrides.
        sweep = (folder / "multirun.yaml").read_text()
        assert f"method={next(iter(methods_by_folder[folder.name]))}" in sweep
        for job in folder.glob("[0-9]_*"):
            overrides = (job / ".hydra" / "overrides.yaml").read_text()
            assert f"method={next(iter(methods_by_folder[folder.name]))}" in overrides
    assert sorted(map(tuple, methods_by_folder.values())) == [("magnitude",), ("rtn",)]
