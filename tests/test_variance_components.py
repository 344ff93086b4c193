"""Variance components (calib_sweep.report.variance): shares recovered from synthetic jobs of known variance,
exact duplicate reruns collapsed, too-small groups as ``n/a (...)`` text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calib_sweep.report.collect import Job
from calib_sweep.report.variance import components, csv_rows, figure, table, write_csv

METRIC = "perplexity/wikitext"


def _job(method: str, source: str, seed: int, value: float, rerun: int = 0) -> Job:
    config = {"model": {"name": "tiny"}, "method": {"name": method}, "dataset": {"name": source},
              "samples": {"n_samples": 16, "seq_len": 64}, "seed": seed}
    if rerun:
        config["perturb"] = {"row_order_seed": rerun}
    return Job(folder=Path(f"/x/{method}/{source}/{seed}/{rerun}"), status="ok", config=config,
               metrics={METRIC: float(value)}, repeat=bool(rerun))


def _sweep(sd_source: float, sd_set: float, sd_noise: float, sources=12, sets=6, reruns=3, seed=0,
           method="gptq") -> list[Job]:
    rng = np.random.default_rng(seed)
    jobs = []
    for s in range(sources):
        a = rng.normal(0, sd_source)
        for k in range(sets):
            b = rng.normal(0, sd_set)
            for r in range(reruns):
                jobs.append(_job(method, f"src{s}", k, 20 + a + b + rng.normal(0, sd_noise), r))
    return jobs


def test_shares_recovered_from_known_variances():
    # true variances 9, 4, 1 -> shares 0.64, 0.29, 0.07
    (row,) = components(_sweep(3.0, 2.0, 1.0), [METRIC])
    assert row.na is None and row.sources == 12 and row.sets == 72 and row.observations == 216
    assert row.duplicates_collapsed == 0
    assert row.var_noise == pytest.approx(1.0, rel=0.25)
    assert row.var_set == pytest.approx(4.0, rel=0.4)
    assert row.share_source == pytest.approx(9 / 14, abs=0.2)
    assert row.share_noise == pytest.approx(1 / 14, abs=0.04)
    assert row.share_source + row.share_set + row.share_noise == pytest.approx(1.0)
    assert row.ci_noise_low < row.var_noise < row.ci_noise_high
    assert row.ci_set_low < row.var_set < row.ci_set_high
    assert row.estimator.startswith("MixedLM REML")


def test_exact_duplicate_reruns_collapse_and_give_zero_noise():
    jobs = []
    rng = np.random.default_rng(1)
    for s in range(6):
        a = rng.normal(0, 2)
        for k in range(4):
            v = 10 + a + rng.normal(0, 1)
            jobs += [_job("wanda", f"src{s}", k, v, r) for r in range(3)]  # threads change nothing
    (row,) = components(jobs, [METRIC])
    assert row.reruns == 72 and row.observations == 24 and row.duplicates_collapsed == 48
    assert row.var_noise == 0.0 and row.share_noise == 0.0
    assert "noise 0" in row.estimator
    assert row.share_text("noise") == "0%"


def test_too_small_groups_are_na_text(tmp_path):
    one_source = [_job("gptq", "src0", k, 10.0 + k, r) for k in range(3) for r in range(2)]
    no_reruns = [_job("sparsegpt", f"src{s}", k, 10.0 + s + 0.1 * k) for s in range(3) for k in range(3)]
    rows = components(one_source + no_reruns, [METRIC, "runtime/seconds"])
    by = {r.method: r for r in rows}
    assert set(by) == {"gptq", "sparsegpt"}  # runtime is not an evidence metric
    assert by["gptq"].na == "sources=1 < 2" and by["gptq"].share_text("source") == "n/a (sources=1 < 2)"
    assert by["sparsegpt"].na.startswith("no reruns") and by["sparsegpt"].share_source is None
    rendered = table(rows)
    assert rendered.rows[0][-1].startswith("n/a (")
    assert figure(rows) is None  # nothing decomposed: no figure
    path = write_csv(rows, tmp_path)
    assert path.name == "variance_components.csv" and "n/a (sources=1 < 2)" in path.read_text()
    assert csv_rows([]) == {}


def test_report_writes_csv_table_and_figure(tmp_path):
    from test_report import _config, write_job

    from calib_sweep.report import write_report

    sweep, num = tmp_path / "s", 0
    for s, source in enumerate(("c4", "wikitext")):
        for seed in range(3):
            for rows in (None, 1):  # canonical job and one rerun under perturb.row_order_seed=1
                config = _config("gptq", source, seed)
                config["perturb"] = {"row_order_seed": rows}
                ppl = 30.0 + 2 * s + 0.5 * seed + (0.01 if rows else 0.0)
                write_job(sweep, num, config, metrics={"perplexity/wikitext": ppl, "zeroshot/mean_acc": 0.5})
                num += 1
    out = tmp_path / "r"
    files = write_report([sweep], out, wandb=False, say=lambda _: None)
    (row,) = [r for r in files.summary.variance if r.metric == "perplexity/wikitext"]
    assert (row.sources, row.sets, row.observations, row.reruns) == (2, 6, 12, 12)
    assert row.na is None and row.share_noise < 0.01
    # zeroshot/mean_acc is 0.5 everywhere: every rerun a duplicate, nothing varies
    (acc,) = [r for r in files.summary.variance if r.metric == "zeroshot/mean_acc"]
    assert acc.duplicates_collapsed == 6 and acc.na == "all values equal"
    assert (out / "variance_components.csv") in files.csvs
    assert "## Variance components" in (out / "report.md").read_text()
    assert (out / "figures" / "variance_components.png").exists()
    assert "Variance components" in (out / "report.html").read_text()
