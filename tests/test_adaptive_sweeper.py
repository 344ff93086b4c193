"""``hydra/sweeper=calib_adaptive`` as users launch it: ``python -m calib_sweep -m hydra/sweeper=calib_adaptive ...``
on the tiny model (issue 30).

GPTQ's perplexity moves with the calibration set; RTN is data-free, so its cells' half-width is exactly 0
and it stops at ``min_sets`` under any target.  The SLURM test is at the end (marked ``slurm``; it skips
without a running cluster, as in ``tests/test_slurm.py``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import run_cli, tiny_overrides


def base(model_dir: Path, corpus: Path) -> list[str]:
    return ["-m", "hydra/sweeper=calib_adaptive", *tiny_overrides(model_dir, corpus), "eval.dense_baseline=false",
            "eval.kl_windows=0", "eval.layer_diagnostics=false"]


def adaptive_summary(sweep: Path) -> dict:
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["adaptive"]["sweeper"] == "calib_adaptive"
    return summary


def cells_by_method(summary: dict) -> dict[str, dict]:
    return {c["cell"].split("method=")[1].split()[0]: c for c in summary["adaptive"]["cells"]}


def test_loose_target_stops_at_min_sets(tiny_model_dir, tiny_corpus, tmp_path):
    sweep = tmp_path / "multirun" / "loose"
    proc = run_cli([*base(tiny_model_dir, tiny_corpus), "method=gptq", "hydra.sweeper.targets={perplexity:0.5}",
                    f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = adaptive_summary(sweep)
    assert summary["counts"]["ok"] == 3 and summary["exit_status"] == 0
    (cell,) = summary["adaptive"]["cells"]
    assert cell["cell"] == "" and cell["overrides"][-1] == "method=gptq"  # one cell: nothing swept names it
    assert cell["seeds"] == [0, 1, 2] and cell["sets"] == 3
    assert cell["stop"] == "target reached" and summary["adaptive"]["rounds"] == 1
    # The half-width is the report's Student t interval of the three seeds' perplexities, relative to their mean.
    values = [json.loads(p.read_text())["metrics"]["perplexity/local_jsonl"] for p in sorted(sweep.glob("*/results.json"))]
    assert len(values) == 3 and len(set(values)) == 3  # three distinct calibration sets
    from calib_sweep.report.statistics import t_bounds
    import numpy as np
    low, high = t_bounds(np.asarray(values))
    mean = sum(values) / 3
    assert math.isclose(cell["half_widths"]["perplexity"], (high - low) / 2 / mean, rel_tol=1e-9)
    assert 0 < cell["half_widths"]["perplexity"] <= 0.5
    assert "calib_sweep: adaptive sweep: 1 cells, 3 jobs in 1 rounds (3 ran, 0 done before)" in proc.stderr
    assert "  (one cell): 3 sets, perplexity +-" in proc.stderr and ": target reached" in proc.stderr
    assert sorted(p.name for p in sweep.glob("*_gptq_*")) == ["0_gptq_local_jsonl_s0", "1_gptq_local_jsonl_s1",
                                                          "2_gptq_local_jsonl_s2"]


def test_strict_target_budget_stops_midway_and_rerun_continues_to_max_sets(tiny_model_dir, tiny_corpus, tmp_path):
    args = [*base(tiny_model_dir, tiny_corpus), "method=gptq,rtn", "hydra.sweeper.targets={perplexity:1e-9}",
            "hydra.sweeper.min_sets=2", "hydra.sweeper.max_sets=4"]
    first = tmp_path / "multirun" / "first"
    proc = run_cli([*args, "hydra.sweeper.max_jobs=5", f"hydra.sweep.dir={first}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = adaptive_summary(first)
    cells = cells_by_method(summary)
    # Round 1: 2 seeds of each cell (4 jobs); RTN is data-free: half-width exactly 0, target reached; GPTQ
    # wants 2 more seeds in round 2 (doubling from 2 sets), of which the budget (5 jobs) allows one.
    assert cells["rtn"]["stop"] == "target reached" and cells["rtn"]["seeds"] == [0, 1]
    assert cells["rtn"]["half_widths"]["perplexity"] == 0.0
    assert cells["gptq"]["stop"] == "budget" and cells["gptq"]["seeds"] == [0, 1, 2] and cells["gptq"]["sets"] == 3
    assert cells["gptq"]["half_widths"]["perplexity"] > 1e-9
    assert summary["adaptive"]["jobs_ran"] == 5 and summary["adaptive"]["rounds"] == 2
    assert summary["counts"] == {"ok": 5, "failed": 0, "skipped": 0, "not_started": 0}
    assert "method=gptq: 3 sets" in proc.stderr and ": budget" in proc.stderr
    # The report lists every cell with its stop reason and marks the one the budget cut (issue 30 item 3).
    from calib_sweep.report import write_report

    md = (write_report([first], tmp_path / "report", wandb=False).markdown).read_text()
    assert "Adaptive sweeps: calibration sets per cell and why each stopped" in md
    (gptq_row,) = [line for line in md.splitlines() if line.startswith("| first | method=gptq")]
    assert "| 3 |" in gptq_row and "**budget: below target**" in gptq_row and "(target ±1e-07%)" in gptq_row
    (rtn_row,) = [line for line in md.splitlines() if line.startswith("| first | method=rtn")]
    assert "perplexity ±0% (target ±1e-07%)" in rtn_row and rtn_row.rstrip(" |").endswith("target reached")
    # The same command again, without the budget: the 5 finished jobs are skipped (resume by config key) and
    # count; only seed 3 of GPTQ runs, and the strict target ends it at max_sets.
    second = tmp_path / "multirun" / "second"
    proc = run_cli([*args, f"hydra.sweep.dir={second}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = adaptive_summary(second)
    cells = cells_by_method(summary)
    assert cells["gptq"]["stop"] == "max_sets" and cells["gptq"]["seeds"] == [0, 1, 2, 3] and cells["gptq"]["sets"] == 4
    assert cells["rtn"]["stop"] == "target reached" and cells["rtn"]["sets"] == 2
    assert summary["adaptive"]["jobs_ran"] == 1 and summary["counts"]["skipped"] == 5 and summary["counts"]["ok"] == 1
    ran = [p.parent.name for p in second.glob("*/results.json")]
    assert ran == [next(p.name for p in second.glob("*_gptq_local_jsonl_s3"))]
    assert summary["adaptive"]["rounds"] == 2
    assert "6 jobs in 2 rounds (1 ran, 5 done before)" in proc.stderr and ": max_sets" in proc.stderr


def test_failed_jobs_stop_their_cell(tiny_model_dir, tiny_corpus, tmp_path):
    """A cell whose jobs fail gets no more seeds (stop ``failed``); every job refused by a config check: exit 2."""
    sweep = tmp_path / "multirun" / "failing"
    proc = run_cli([*base(tiny_model_dir, tiny_corpus), "method=rtn", "threads=0", "hydra.sweeper.min_sets=2",
                    f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    summary = adaptive_summary(sweep)
    (cell,) = summary["adaptive"]["cells"]
    assert cell["stop"] == "failed" and cell["seeds"] == [0, 1] and cell["sets"] == 0 and cell["failed"] == 2
    assert cell["half_widths"] == {"perplexity": None} and summary["adaptive"]["rounds"] == 1
    assert summary["counts"]["failed"] == 2 and summary["refused"] == 2
    assert "(one cell): 0 sets (2 failed), perplexity n/a: failed" in proc.stderr


@pytest.mark.parametrize("extra, expected", [
    (["seed=0,1"], "seed=0,1: the calib_adaptive sweeper owns the seed"),
    (["hydra.sweeper.min_sets=1"], "hydra.sweeper.min_sets=1: a CI half-width needs at least 2"),
    (["hydra.sweeper.min_sets=3", "hydra.sweeper.max_sets=2"], "hydra.sweeper.max_sets=2 must be an integer >= hydra.sweeper.min_sets=3"),
    (["hydra.sweeper.targets={perplexity:0}"], "hydra.sweeper.targets.perplexity=0: a target is a CI half-width and must be a number > 0"),
    (["hydra.sweeper.targets={ppl:0.01}"], "hydra.sweeper.targets: unknown metric 'ppl'"),
    (["hydra.sweeper.targets={mean_acc:0.01}"], "hydra.sweeper.targets.mean_acc: the jobs of cell 'method=rtn' run no zero-shot task"),
    (["hydra.sweeper.targets={perplexity/wikitext2:0.01}"], "measure perplexity on ['local_jsonl'], not 'wikitext2'"),
    (["hydra.sweeper.targets={zeroshot/arc_easy/perplexity:0.05}", "eval.zeroshot.tasks=[arc_easy]"],
     "hydra.sweeper.targets.zeroshot/arc_easy/perplexity: lm-eval's arc_easy reports ['acc', 'acc_norm'], not 'perplexity'"),
    (["hydra.sweeper.targets={zeroshot/boolq/acc_norm:0.05}", "eval.zeroshot.tasks=[boolq]"],
     "lm-eval's boolq reports ['acc'], not 'acc_norm'. Fix: target zeroshot/boolq/acc"),
    (["hydra.sweeper.targets=5"], "hydra.sweeper.targets=5 must map metrics to CI half-widths"),
    (["hydra.sweeper.targets=[perplexity]"], "hydra.sweeper.targets=['perplexity'] must map metrics to CI half-widths"),
])
def test_bad_input_one_line_exit_2_before_any_job(tiny_model_dir, tiny_corpus, tmp_path, extra, expected):
    sweep = tmp_path / "multirun" / "bad"
    proc = run_cli([*base(tiny_model_dir, tiny_corpus), "method=rtn,magnitude", *extra, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("calib_sweep: error: ") and expected in lines[0] and "Fix: " in lines[0]
    assert not sweep.exists()  # no job started, nothing left behind
    assert not (tmp_path / "multirun" / ".index").exists()


def test_plan_rules_without_jobs():
    """The planner itself: interleaved seeds, next unused integers, growth at most doubling, missing metrics."""
    from calib_sweep import adaptive

    targets = adaptive.parse_targets({"perplexity": 0.001, "zeroshot/arc_easy/acc": 0.02})
    assert [(t.relative, t.half_width) for t in targets] == [(True, 0.001), (False, 0.02)]
    a, b = adaptive.Cell(["method=a", "x=1"], ("method",)), adaptive.Cell(["method=b", "x=1"], ("method",), seeds=[1])
    b.results[1] = {"perplexity/x": 10.0, "zeroshot/arc_easy/acc": 0.5}
    assert [(c.label, s) for c, s in adaptive.plan([a, b], targets, 3, 10)] == [
        ("method=a", 0), ("method=b", 0), ("method=a", 1), ("method=b", 2), ("method=a", 2)]
    noisy = adaptive.Cell(["method=n"], ("method",), seeds=[0, 1, 2],
                          results={s: {"perplexity/x": v, "zeroshot/arc_easy/acc": 0.5} for s, v in enumerate([10.0, 12.0, 8.0])})
    # far from +-0.1%: sets_needed is huge, so the cell at most doubles (3 -> 6 seeds)
    assert [s for _, s in adaptive.plan([noisy], targets, 3, 10)] == [3, 4, 5]
    # at min_sets=2 the SD of 2 sets already plans: it doubles (2 -> 4), not one set per round
    pair = adaptive.Cell(["method=p"], ("method",), seeds=[0, 1],
                         results={s: {"perplexity/x": v, "zeroshot/arc_easy/acc": 0.5} for s, v in enumerate([10.0, 12.0])})
    assert [s for _, s in adaptive.plan([pair], targets, 2, 10)] == [2, 3]
    # and stops growing once 2 sets give the precision: +-50% of a mean of 11 from 10 and 12 needs 3 sets
    # (t_{0.975,2} * 1.414 / sqrt(3) = 3.51 <= 5.5; with 2 sets 12.7 * 1.414 / sqrt(2) = 12.7 > 5.5)
    loose = adaptive.parse_targets({"perplexity": 0.5})
    assert [s for _, s in adaptive.plan([pair], loose, 2, 10)] == [2]
    assert adaptive.missing_metric([noisy], adaptive.parse_targets({"mean_acc": 0.01})).startswith(
        "hydra.sweeper.targets.mean_acc: the jobs of 'method=n' do not report it")


@pytest.mark.slurm
@pytest.mark.skipif(shutil.which("sbatch") is None, reason="sbatch not found: no SLURM here "
                    "(start a one-node cluster with scripts/local_slurm.sh start)")
def test_adaptive_rounds_are_slurm_job_arrays(tiny_model_dir, tiny_corpus, tmp_path):
    """Through the local SLURM cluster: each round is one job array (round 1: 2 cells x 2 seeds; round 2:
    GPTQ's seeds 2 and 3, doubling from 2 sets); RTN stops at min_sets, GPTQ at max_sets."""
    proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        why = f"sbatch is installed but no SLURM controller answers ({proc.stderr.strip()}). Fix: scripts/local_slurm.sh start"
        if os.environ.get("CALIB_SWEEP_REQUIRE_SLURM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    partition = os.environ.get("CALIB_SWEEP_SLURM_PARTITION") or next(
        line.split()[0].rstrip("*") for line in proc.stdout.splitlines() if line.split()[0].endswith("*"))
    sweep = tmp_path / "multirun" / "slurm"
    node = ["hydra/launcher=slurm", f"hydra.launcher.partition={partition}", "hydra.launcher.gpus_per_node=null",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4", "hydra.launcher.timeout_min=30"]
    try:
        proc = run_cli([*base(tiny_model_dir, tiny_corpus), "method=gptq,rtn", "hydra.sweeper.targets={perplexity:1e-9}",
                        "hydra.sweeper.min_sets=2", "hydra.sweeper.max_sets=4", *node, f"hydra.sweep.dir={sweep}"],
                       tmp_path, timeout=900)
    finally:
        arrays = {p.name.split("_")[0] for p in sweep.glob(".submitit/*") if p.name.split("_")[0].isdigit()}
        if arrays:
            subprocess.run(["scancel", *arrays], capture_output=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = adaptive_summary(sweep)
    cells = cells_by_method(summary)
    assert cells["gptq"]["stop"] == "max_sets" and cells["gptq"]["sets"] == 4
    assert cells["rtn"]["stop"] == "target reached" and cells["rtn"]["sets"] == 2
    records = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    assert summary["adaptive"]["rounds"] == 2
    # one submission per round: a job array (a round of one job would be a plain job: submitit submits a
    # single job without an array, so it has no SLURM_ARRAY_JOB_ID)
    arrays = [r["slurm"].get("array_job_id", r["slurm"]["slurm_job_id"]) for r in records]
    assert len(set(arrays)) == 2 and sorted(arrays.count(a) for a in set(arrays)) == [2, 4]


def _adaptive_and_fixed(adaptive_experiment: str, fixed_experiment: str, cell: list[str]):
    """``(sweeper config, adaptive job config without hydra, fixed job config)`` of one cell, composed."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
        adaptive = compose(config_name="config", overrides=[f"experiment={adaptive_experiment}", *cell],
                           return_hydra_config=True)
        fixed = compose(config_name="config", overrides=[f"experiment={fixed_experiment}", *cell])
    sweeper = adaptive.hydra.sweeper
    del adaptive.hydra
    return sweeper, OmegaConf.to_container(adaptive, resolve=True), OmegaConf.to_container(fixed, resolve=True)


def test_replication_adaptive_is_replication_cpus_grid_under_the_adaptive_sweeper():
    """experiment=replication_adaptive: the same jobs as replication_cpu (same config, so its finished jobs are
    skipped by config key), its seed range dropped, the documented targets."""
    from omegaconf import OmegaConf

    sweeper, adaptive, fixed = _adaptive_and_fixed("replication_adaptive", "replication_cpu",
                                                   ["method=sparsegpt", "dataset=offline_news", "seed=4"])
    assert sweeper._target_ == "hydra_plugins.calib_adaptive.AdaptiveSweeper"
    assert OmegaConf.to_container(sweeper.targets) == {"perplexity": 0.01, "mean_acc": 0.01}
    assert (sweeper.min_sets, sweeper.max_sets) == (3, 10) and sweeper.params.seed is None
    assert sweeper.params.method == "gptq,sparsegpt,wanda,rtn,magnitude"
    assert adaptive == fixed


def test_replication_adaptive_v2_is_replication_cpu_v2s_jobs_under_the_adaptive_sweeper():
    """experiment=replication_adaptive_v2: replication_cpu_v2's jobs (the same config, so its archived records
    are skipped and count), the documented targets and 3-10 sets."""
    from omegaconf import OmegaConf

    cell = ["method=gptq", "method.static_groups=false", "method.w_bits=3", "method.group_size=64",
            "method.symmetric=false", "dataset=offline_news", "seed=7"]
    sweeper, adaptive, fixed = _adaptive_and_fixed("replication_adaptive_v2", "replication_cpu_v2", cell)
    assert sweeper._target_ == "hydra_plugins.calib_adaptive.AdaptiveSweeper"
    assert OmegaConf.to_container(sweeper.targets) == {"perplexity": 0.01, "mean_acc": 0.01}
    assert (sweeper.min_sets, sweeper.max_sets) == (3, 10)
    assert adaptive["resume"]["archive_dir"] == "docs/replication_v2/records"
    assert adaptive == fixed


def test_report_table_marks_cells_below_target_and_unfinished_ones(tmp_path):
    from calib_sweep.report.adaptive import table

    record = {"targets": {"perplexity": {"half_width": 0.01, "relative": True}, "mean_acc": {"half_width": 0.01, "relative": False}},
              "cells": [
                  {"cell": "method=a", "sets": 10, "half_widths": {"perplexity": 0.02, "mean_acc": 0.005}, "stop": "max_sets"},
                  {"cell": "method=b", "sets": 4, "half_widths": {"perplexity": 0.005, "mean_acc": 0.004}, "stop": "target reached"},
                  {"cell": "method=c", "sets": 3, "half_widths": {"perplexity": None, "mean_acc": None}, "stop": None}]}
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "adaptive.json").write_text(json.dumps(record))
    rows = {r[1]: r for r in table([tmp_path]).rows}
    assert rows["method=a"][3] == "perplexity ±2% (target ±1%); mean_acc ±0.005 (target ±0.01)"
    assert rows["method=a"][4] == "**max_sets: below target**" and rows["method=b"][4] == "target reached"
    assert rows["method=c"][3] == "perplexity n/a (target ±1%); mean_acc n/a (target ±0.01)"
    assert rows["method=c"][4].startswith("not finished") and "None" not in rows["method=c"][4]
    assert table([tmp_path / "nothing"]) is None


def test_report_lists_a_rerun_of_the_same_sweep_once(tmp_path):
    """Rerunning an adaptive sweep with the same hydra.sweep.dir writes <dir>_2 (the folder claim); the report
    lists each cell once, from the latest record, naming the folder it continues; another sweep stays."""
    import os

    from calib_sweep.report.adaptive import table

    targets = {"perplexity": {"half_width": 0.01, "relative": True}}

    def cell(name, sets, stop):
        return {"cell": name, "overrides": [name, "x=1"], "sets": sets, "half_widths": {"perplexity": 0.02}, "stop": stop}

    for folder, sets, stop, mtime in [("ad", 3, "budget", 1_000), ("ad_2", 5, "max_sets", 2_000)]:
        (tmp_path / folder).mkdir()
        state = tmp_path / folder / "adaptive.json"
        state.write_text(json.dumps({"targets": targets, "cells": [cell("method=a", sets, stop), cell("method=b", 3, stop)]}))
        os.utime(state, (mtime, mtime))
    (tmp_path / "other").mkdir()  # other cells: a different sweep, listed too
    (tmp_path / "other" / "adaptive.json").write_text(json.dumps({"targets": targets, "cells": [cell("method=c", 4, "target reached")]}))
    rows = table([tmp_path]).rows
    assert [(r[0], r[1], r[2]) for r in rows] == [("ad_2 (continues ad)", "method=a", "5"), ("ad_2 (continues ad)", "method=b", "3"),
                                                   ("other", "method=c", "4")]
    # the older record newer on disk (copied back, say) wins: the latest state is the one kept
    os.utime(tmp_path / "ad" / "adaptive.json", (3_000, 3_000))
    assert [(r[0], r[2]) for r in table([tmp_path]).rows][:1] == [("ad (continues ad_2)", "3")]


def test_task_metrics_are_read_from_lm_evals_own_yamls():
    """The pre-flight check's source: each task's metric_list (arc_challenge through its include of arc_easy);
    a group (MMLU) is unknown, so not checked."""
    from calib_sweep.evaluation.tasks import task_metrics

    assert task_metrics("arc_easy") == task_metrics("arc_challenge") == {"acc", "acc_norm"}
    assert task_metrics("boolq") == task_metrics("winogrande") == task_metrics("rte") == {"acc"}
    assert task_metrics("lambada_openai") == {"acc", "perplexity"}
    assert task_metrics("mmlu") is None and task_metrics("not_a_task") is None


@pytest.mark.parametrize("min_sets, expected", [
    ("abc", r"hydra.sweeper.min_sets='abc' is not an integer .* Fix: hydra.sweeper.min_sets=3"),
    (1, r"hydra.sweeper.min_sets=1: a CI half-width needs at least 2 calibration sets"),
])
def test_min_sets_message_names_what_is_wrong(min_sets, expected):
    from calib_sweep.adaptive import check_settings
    from calib_sweep.errors import ConfigError

    with pytest.raises(ConfigError, match=expected):
        check_settings(min_sets, 10, None, None)
