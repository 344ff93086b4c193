"""eval=study_cpu (issue 28 item 2) and experiment=replication_cpu_v2 (item 3): the item counts follow the rule
that made them, and the v2 grid script runs the jobs its config documents."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from study_cpu_items import items_needed  # noqa: E402

from calib_sweep.evaluation.tasks import task_metrics  # noqa: E402


def test_items_needed_rule():
    # p = 0.5 inside the interval: the worst case, 0.25 / 0.02^2 = 625 items
    assert items_needed(0.51, 200, 0.02, 2376) == (625, 0.5)
    # p = 0.235 on 200 items: Wilson upper end 0.2984 -> ceil(0.2984 * 0.7016 / 0.0004) = 524
    n, worst = items_needed(0.235, 200, 0.02, 1172)
    assert n == 524 and abs(worst - 0.29841) < 1e-4
    assert items_needed(0.555, 200, 0.02, 277) == (277, 0.5)  # capped at the task's size: scored in full


def test_study_cpu_counts_give_item_se_at_most_2_points():
    with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["eval=study_cpu"])
    limits = dict(cfg.eval.zeroshot.limits)
    assert set(limits) == set(cfg.eval.zeroshot.tasks) and len(limits) == 9
    assert (limits["rte"], limits["openbookqa"]) == (277, 500)  # full sets
    # the dense probe accuracies in the config's header: p*(1-p*)/n <= 0.02^2 for every task
    worst = {"arc_easy": 0.5, "arc_challenge": 0.298, "boolq": 0.454, "hellaswag": 0.474, "piqa": 0.571,
             "winogrande": 0.5, "lambada_openai": 0.408}
    for task, p in worst.items():
        assert (p * (1 - p) / limits[task]) ** 0.5 <= 0.02 + 1e-6, task
        assert task_metrics(task) is None or "acc" in task_metrics(task)


def test_replication_v2_grid(tmp_path):
    fake = tmp_path / "fake_python"
    fake.write_text('#!/bin/sh\nshift 3\necho "STEP $*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PY": str(fake), "REPLICATION_LOCK": "", "REPLICATION_OUT": str(tmp_path / "out")}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "run_replication_v2.sh")], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    steps = [line.split()[1:] for line in out.splitlines() if line.startswith("STEP ")]
    jobs = 0
    with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
        for overrides in steps:
            assert overrides[0] == "experiment=replication_cpu_v2" and overrides[-1].startswith("hydra.sweep.dir=")
            sizes = [len(o.split("=", 1)[1].split(",")) for o in overrides[1:-1]]
            count = 1
            for size in sizes:
                count *= size
            jobs += count
            single = [o.split(",")[0] if "," in o else o for o in overrides[:-1]]
            cfg = compose(config_name="config", overrides=single)
            assert cfg.resume.archive_dir == "docs/replication_v2/records"
            assert (cfg.samples.n_samples, cfg.samples.seq_len) == (16, 256)
            assert dict(cfg.eval.zeroshot.limits)["arc_easy"] == 625
            if cfg.method.name in ("gptq", "rtn"):
                assert (cfg.method.w_bits, cfg.method.group_size, cfg.method.symmetric) == (3, 64, False)
            if cfg.method.name == "gptq":
                assert cfg.method.static_groups is False
    # 10 seeds x 3 sources x 3 methods + controls 2 x 3 x 2 + noise floor 2 sets x 2 row orders x 3 methods
    assert jobs == 90 + 12 + 12 == 114
