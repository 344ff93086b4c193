"""The sweep report: numbers on synthetic results with known means and SDs, partial and combined sweeps,
a real (tiny-model) sweep, the CLI's bad input, W&B (offline skip, online through a stand-in module),
and the HTML page in a real headless browser (Debian's chromium).

SD everywhere is the sample standard deviation (ddof=1, divisor n-1).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from calib_sweep.report import describe, load_jobs, summarize, write_report
from calib_sweep.report.__main__ import main as report_main
from calib_sweep.tracking import write_results

CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium"
TASKS = ("boolq", "rte")


def _config(method: str, source: str, seed: int, n: int = 8, seq_len: int = 64, model: str = "toy-7b", **method_params) -> dict:
    return {
        "seed": seed, "device": "cpu", "dtype": "auto",
        "model": {"name": model, "source": "pretrained"},
        "dataset": {"name": source, "loader": "jsonl"},
        "samples": {"n_samples": n, "seq_len": seq_len, "allow_fewer": False},
        "method": {"name": method, **method_params},
        "eval": {"perplexity": {"texts": ["wikitext"], "seq_len": 64}},
        "logger": {"enabled": True, "project": "calib_sweep", "mode": "auto"},
    }


def write_job(sweep: Path, num: int, config: dict, *, metrics: dict | None = None, status: str = "ok",
              error: str | None = None, wandb_mode: str = "offline", hydra_only: bool = False, extra: dict | None = None) -> Path:
    """One job folder laid out like Hydra's multirun: ``<sweep>/<num>_<method>_<source>_s<seed>/``."""
    folder = sweep / f"{num}_{config['method']['name']}_{config['dataset']['name']}_s{config['seed']}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if hydra_only:
        return folder
    record = {"status": status, "config": config, "wandb": {"mode": wandb_mode, "id": None}}
    if status == "ok":
        record["metrics"] = metrics or {}
    else:
        record.update(error=error, error_type="RuntimeError", stage="compress")
    write_results(folder, {**record, **(extra or {})})
    return folder


# Known values: gptq/c4 over four seeds, boolq acc = 0.60, 0.62, 0.64, 0.70 ->
# mean 0.64, sample SD sqrt((0.04^2 + 0.02^2 + 0 + 0.06^2) / 3) = sqrt(0.0056 / 3) = 0.0432049...
BOOLQ = [0.60, 0.62, 0.64, 0.70]
RTE = [0.50, 0.55, 0.53, 0.58]
PPL = [12.5, 12.7, 12.9, 12.7]
BOOLQ_SD = math.sqrt(0.0056 / 3)


def _metrics(boolq: float, rte: float, ppl: float) -> dict:
    return {"zeroshot/boolq/acc": boolq, "zeroshot/boolq/acc_norm": boolq - 0.01, "zeroshot/rte/acc": rte,
            "zeroshot/rte/acc_norm": rte + 0.01, "zeroshot/mean_acc": (boolq + rte) / 2, "perplexity/wikitext": ppl}


def synthetic_sweep(root: Path) -> Path:
    """gptq and wanda x c4 and wikipedia x 4 seeds, with one failed and one missing wanda/wikipedia job."""
    sweep = root / "multirun" / "2026-01-01" / "00-00-00"
    num = 0
    for method, shift in (("gptq", 0.0), ("wanda", -0.05)):
        for source, tilt in (("c4", 0.0), ("wikipedia", 0.01)):
            for seed in range(4):
                config = _config(method, source, seed)
                if method == "wanda" and source == "wikipedia" and seed == 2:
                    write_job(sweep, num, config, status="failed", error="CUDA out of memory on layer 3")
                elif method == "wanda" and source == "wikipedia" and seed == 3:
                    write_job(sweep, num, config, hydra_only=True)
                else:
                    spread = 2.0 if method == "wanda" else 1.0  # pruning swings more
                    write_job(sweep, num, config, metrics=_metrics(
                        0.64 + (BOOLQ[seed] - 0.64) * spread + shift + tilt, RTE[seed] + shift, PPL[seed] + (3 if method == "wanda" else 0)))
                num += 1
    return sweep


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_describe_uses_sample_sd():
    stat = describe(BOOLQ, seeds=range(4))
    assert stat.mean == pytest.approx(0.64) and stat.sd == pytest.approx(BOOLQ_SD)
    assert stat.sd == pytest.approx(statistics.stdev(BOOLQ)) and stat.sd != pytest.approx(statistics.pstdev(BOOLQ))
    assert (stat.min, stat.max, stat.range) == (0.60, 0.70, pytest.approx(0.10))
    one = describe([0.5])
    assert one.mean == 0.5 and one.sd is None and one.range is None  # one value: no spread to speak of
    with_inf = describe([10.0, float("inf"), 12.0])
    assert with_inf.n == 2 and with_inf.n_nonfinite == 1 and with_inf.mean == 11.0


def test_synthetic_sweep_numbers_tables_and_partial_jobs(tmp_path):
    sweep = synthetic_sweep(tmp_path)
    out = tmp_path / "report"
    messages = []
    files = write_report([sweep], out, say=messages.append)
    summary = files.summary
    assert summary.counts == {"ok": 14, "failed": 1, "missing": 1}
    groups = {(g.method, g.source): g for g in summary.groups}
    assert len(groups) == 4 and all(not g.variant for g in groups.values())
    gptq_c4 = groups["gptq", "c4"].stats
    assert gptq_c4["zeroshot/boolq/acc"].mean == pytest.approx(0.64)
    assert gptq_c4["zeroshot/boolq/acc"].sd == pytest.approx(BOOLQ_SD)
    assert gptq_c4["zeroshot/rte/acc"].mean == pytest.approx(statistics.fmean(RTE))
    assert gptq_c4["zeroshot/rte/acc"].sd == pytest.approx(statistics.stdev(RTE))
    assert gptq_c4["perplexity/wikitext"].mean == pytest.approx(12.7) and gptq_c4["perplexity/wikitext"].range == pytest.approx(0.4)
    assert groups["wanda", "c4"].stats["zeroshot/boolq/acc"].sd == pytest.approx(2 * BOOLQ_SD)
    partial = groups["wanda", "wikipedia"]
    assert (partial.count("ok"), partial.count("failed"), partial.count("missing")) == (2, 1, 1)
    assert partial.stats["zeroshot/boolq/acc"].n == 2  # seeds 0 and 1 only
    assert partial.stats["zeroshot/boolq/acc"].sd == pytest.approx(statistics.stdev([0.60 - 0.05 + 0.01 - 0.04 * 1, 0.64 - 0.04 - 0.05 + 0.01]))

    # Dispersion: boolq swings more than rte (the wanda groups double its spread); accuracy first.
    first = summary.dispersion[0]
    assert first.metric in ("zeroshot/boolq/acc", "zeroshot/boolq/acc_norm", "zeroshot/mean_acc")
    order = [d.metric for d in summary.dispersion]
    assert order.index("zeroshot/boolq/acc") < order.index("zeroshot/rte/acc") < order.index("perplexity/wikitext")

    # CSV: raw values, SD with ddof=1.
    rows = {(r["method"], r["source"], r["metric"]): r for r in _read_csv(out / "summary.csv")}
    row = rows["gptq", "c4", "zeroshot/boolq/acc"]
    assert float(row["mean"]) == pytest.approx(0.64) and float(row["sd"]) == pytest.approx(BOOLQ_SD)
    assert (float(row["min"]), float(row["max"]), float(row["range"])) == (0.60, 0.70, pytest.approx(0.10))
    assert row["seeds_ok"] == "4" and rows["wanda", "wikipedia", "perplexity/wikitext"]["seeds_failed"] == "1"
    wide = {(r["method"], r["source"]): r for r in _read_csv(out / "main_table.csv")}
    assert float(wide["gptq", "c4"]["zeroshot/boolq/acc sd"]) == pytest.approx(BOOLQ_SD)
    assert "zeroshot/boolq/acc_norm sd" not in wide["gptq", "c4"]  # the main table has the study's columns only
    jobs = _read_csv(out / "jobs.csv")
    assert sorted(j["status"] for j in jobs).count("ok") == 14
    failed = [j for j in jobs if j["status"] == "failed"][0]
    assert "CUDA out of memory on layer 3" in failed["error"] and failed["seed"] == "2"
    missing = [j for j in jobs if j["status"] == "missing"][0]
    assert missing["method"] == "wanda" and missing["source"] == "wikipedia" and missing["seed"] == "3"
    assert {p.name for p in files.csvs} == {"summary.csv", "main_table.csv", "dispersion.csv", "jobs.csv", "evidence.csv",
                                            "dispersion_tests.csv", "source_comparisons.csv", "hardware.csv", "variance_components.csv"}

    # Markdown and HTML: percent display, mean ± SD, the failed and missing jobs.
    md = files.markdown.read_text()
    assert "| gptq | c4 | 8×64 | 4 | 64.00 ± 4.32 |" in md  # boolq: 64.00 % ± 4.32 pp
    assert "2 (1 failed, 1 missing)" in md and "CUDA out of memory on layer 3" in md and "missing" in md
    assert "ddof=1" in md
    html = files.html.read_text()
    assert "64.00 ± 4.32" in html and "CUDA out of memory on layer 3" in html
    assert html.count("data:image/png;base64,") == len(files.figures) >= 3  # mean acc, per-task acc, perplexity
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", html)  # self-contained
    assert any("not online" in m for m in messages)


def test_combined_sweeps_rerun_supersedes_failure_and_sample_size_curves(tmp_path):
    first = tmp_path / "a"
    write_job(first, 0, _config("gptq", "c4", 0, n=4), metrics={"perplexity/wikitext": 14.0},
              extra={"dense": {"metrics": {"perplexity/wikitext": 10.5, "zeroshot/mean_acc": 0.625}}})
    write_job(first, 1, _config("gptq", "c4", 1, n=4), status="failed", error="killed")
    second = tmp_path / "b"
    write_job(second, 0, _config("gptq", "c4", 1, n=4), metrics={"perplexity/wikitext": 13.0})  # the rerun
    for n, ppls in ((16, (12.0, 12.4)), (64, (11.0, 11.2))):
        for seed, ppl in enumerate(ppls):
            write_job(second, n + seed, _config("gptq", "c4", seed, n=n), metrics={"perplexity/wikitext": ppl})
    out = tmp_path / "combined"
    assert report_main([str(first), str(second), "-o", str(out), "--no-wandb"]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"report.html", "report.md", "sample_size.csv", "summary.csv", "jobs.csv", "figures"} <= files
    jobs = _read_csv(out / "jobs.csv")
    assert [j["status"] for j in jobs].count("superseded") == 1
    assert [j for j in jobs if j["status"] == "superseded"][0]["error"].startswith("superseded by")
    sizes = {(int(r["n_samples"])): r for r in _read_csv(out / "sample_size.csv") if r["metric"] == "perplexity/wikitext"}
    assert sorted(sizes) == [4, 16, 64]
    assert float(sizes[4]["mean"]) == pytest.approx(13.5) and float(sizes[4]["sd"]) == pytest.approx(math.sqrt(0.5))
    assert float(sizes[64]["sd"]) == pytest.approx(statistics.stdev([11.0, 11.2]))
    assert any(p.name.startswith("samples_") for p in (out / "figures").iterdir())
    assert "Sample-size curves" in (out / "report.html").read_text()
    dense = {r["metric"]: float(r["value"]) for r in _read_csv(out / "dense_reference.csv")}
    assert dense == {"perplexity/wikitext": 10.5, "zeroshot/mean_acc": 0.625}
    assert "| toy-7b | 62.50 | 10.50 |" in (out / "report.md").read_text()


def test_method_settings_that_vary_split_groups(tmp_path):
    sweep = tmp_path / "s"
    for i, sparsity in enumerate((0.5, 0.5, 0.7, 0.7)):
        write_job(sweep, i, _config("wanda", "c4", i % 2, sparsity=sparsity), metrics={"perplexity/wikitext": 10 + 10 * sparsity + i % 2})
    write_job(sweep, 9, _config("gptq", "c4", 0, w_bits=4), metrics={"perplexity/wikitext": 9.0})
    summary = summarize(load_jobs([sweep]))
    labels = sorted((g.method, g.variant) for g in summary.groups)
    assert labels == [("gptq", ""), ("wanda", "method.sparsity=0.5"), ("wanda", "method.sparsity=0.7")]


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such folder" in err and "nope" in err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert report_main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no job folders" in err
    proc = subprocess.run([sys.executable, "-m", "calib_sweep.report", str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("calib-sweep-report: error:")


def test_a_folder_without_jobs_beside_one_with_jobs_is_skipped(tmp_path, capsys):
    # `calib-sweep-report multirun outputs` after single runs only: multirun/ holds just its index.
    sweep = synthetic_sweep(tmp_path / "outputs")
    (tmp_path / "multirun" / ".index").mkdir(parents=True)
    jobs = load_jobs([tmp_path / "multirun", sweep])
    assert len(jobs) == len(load_jobs([sweep])) > 0
    assert "multirun holds no job folder; skipped" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("calib-sweep-report")
    assert script.exists(), "calib-sweep-report missing: pip install -e ."
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "ddof=1" in proc.stdout


def test_real_tiny_sweep(tiny_model_dir, tiny_corpus, tmp_path):
    from omegaconf import OmegaConf

    from calib_sweep.job import run_job
    from helpers import compose_cfg, tiny_overrides

    sweep = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    jobs = [("wanda", 0), ("wanda", 1), ("wanda", 2)]
    for num, (method, seed) in enumerate(jobs):
        folder = sweep / f"{num}_{method}_local_jsonl_s{seed}"
        cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + [f"method={method}", f"seed={seed}"])
        (folder / ".hydra").mkdir(parents=True)
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")  # as Hydra does when a job starts
        if seed < 2:  # the last job has not finished
            run_job(cfg, folder)
    proc = subprocess.run([sys.executable, "-m", "calib_sweep.report", str(tmp_path / "multirun")],
                          capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "multirun" / "report"
    assert "jobs: 1 missing, 2 ok" in proc.stdout
    rows = {(r["method"], r["metric"]): r for r in _read_csv(out / "summary.csv")}
    records = [json.loads((sweep / f"{s}_wanda_local_jsonl_s{s}" / "results.json").read_text()) for s in (0, 1)]
    ppls = [r["metrics"]["perplexity/local_jsonl"] for r in records]
    wanda = rows["wanda", "perplexity/local_jsonl"]
    assert float(wanda["mean"]) == pytest.approx(statistics.fmean(ppls))
    assert float(wanda["sd"]) == pytest.approx(statistics.stdev(ppls))
    assert wanda["seeds_ok"] == "2" and wanda["seeds_missing"] == "1"
    assert "box_tiny-llama_perplexity_local_jsonl.png" in {p.name for p in (out / "figures").iterdir()}


class _FakeWandb(types.ModuleType):
    """Stands in for the ``wandb`` module: records init/log/finish and the tables and plots made."""

    def __init__(self):
        super().__init__("wandb")
        self.calls = []
        fake = self

        class Table:
            def __init__(self, columns, data):
                self.columns, self.data = columns, data

        class Run:
            id, url, dir = "r1", "https://wandb.example/r1", None
            summary = {}

            def log(self, data):
                fake.calls.append(("log", data))

            def finish(self, exit_code=0):
                fake.calls.append(("finish", exit_code))

        self.Table = Table
        self.Settings = lambda **kw: kw
        self.Image = lambda path, caption=None: ("image", path, caption)
        self.plot = types.SimpleNamespace(
            bar=lambda table, x, y, title=None: ("bar", x, y), line=lambda table, x, y, stroke=None, title=None: ("line", x, y))
        self.init = lambda **kw: (fake.calls.append(("init", kw)), Run())[1]


def test_wandb_online_logs_tables_and_plots(tmp_path, monkeypatch):
    sweep = tmp_path / "s"
    for seed, (boolq, ppl) in enumerate(((0.6, 12.0), (0.7, 13.0))):
        write_job(sweep, seed, _config("gptq", "c4", seed), metrics=_metrics(boolq, 0.5, ppl), wandb_mode="online")
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "online")
    messages = []
    write_report([sweep], tmp_path / "r", say=messages.append)
    init = [c for c in fake.calls if c[0] == "init"][0][1]
    assert init["project"] == "calib_sweep" and init["mode"] == "online" and init["name"] == "sweep-report"
    logged = [c for c in fake.calls if c[0] == "log"][0][1]
    table = logged["report/main_table"]
    row = dict(zip(table.columns, table.data[0]))
    assert row["zeroshot/boolq/acc mean"] == pytest.approx(0.65) and row["zeroshot/boolq/acc sd"] == pytest.approx(statistics.stdev([0.6, 0.7]))
    assert logged["report/bar/boolq"][0] == "bar" and "report/jobs" in logged and "report/dispersion" in logged
    assert any(k.startswith("report/figure/") for k in logged)
    assert ("finish", 0) in fake.calls and any("logged" in m for m in messages)


def test_wandb_real_library_accepts_the_tables_and_plots(tmp_path, monkeypatch):
    """The real wandb package (written offline, nothing leaves the machine) takes every table, plot and image."""
    import calib_sweep.report.wandb_upload as upload_module

    sweep = tmp_path / "s"
    for n in (4, 16):
        for seed in range(2):
            write_job(sweep, n + seed, _config("gptq", "c4", seed, n=n), metrics=_metrics(0.6 + seed / 10, 0.5, 12 + seed),
                      wandb_mode="online")
    monkeypatch.setenv("WANDB_MODE", "offline")  # the run is written locally ...
    monkeypatch.setattr(upload_module, "resolve_mode", lambda cfg: "online")  # ... though the report believes it is online
    messages = []
    write_report([sweep], tmp_path / "r", say=messages.append)
    assert any("summary logged" in m for m in messages), messages
    runs = list((tmp_path / "r" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    media = {p.name for p in runs[0].rglob("*") if p.is_file()}
    assert any(name.startswith("box_toy-7b_perplexity_wikitext") for name in media)
    assert any(name.endswith(".table.json") for name in media)


def test_wandb_online_runs_but_unreachable_now_is_skipped_fast(tmp_path, monkeypatch):
    sweep = tmp_path / "s"
    write_job(sweep, 0, _config("gptq", "c4", 0), metrics={"perplexity/wikitext": 12.0}, wandb_mode="online")
    monkeypatch.setenv("WANDB_MODE", "offline")
    messages = []
    write_report([sweep], tmp_path / "r", say=messages.append)
    assert any("summary not uploaded" in m for m in messages)


# ---------------------------------------------------------------------------------- headless browser

_PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message || (e.target && e.target.src) || "error")); }, true);
(function () { var original = console.error; console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, " ")); return original.apply(console, arguments); }; })();
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  document.body.setAttribute("data-probe", JSON.stringify({errors: window.__errors, images: images.length, broken: broken,
    tables: document.querySelectorAll("table").length}));
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"chromium is not installed; the HTML report test needs a real headless browser. Install it with: {CHROMIUM_INSTALL}")


def _headless(browser: str, profile: Path) -> list[str]:
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}"]


def test_html_report_opens_in_headless_chromium(tmp_path):
    browser = _chromium()
    sweep = synthetic_sweep(tmp_path)
    files = write_report([sweep], tmp_path / "report", wandb=False)
    page = files.html
    # 1. The page as written: no console message of level error in Chromium's log.
    plain = subprocess.run(_headless(browser, tmp_path / "p1") + ["--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
                           capture_output=True, text=True, timeout=90)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "Calibration-data sweep report" in plain.stdout
    console = [line for line in plain.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    # 2. A copy with a probe: no script error, every figure decoded, every table in the DOM.
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text().replace("<head>", "<head>" + _PROBE, 1))
    dom = subprocess.run(_headless(browser, tmp_path / "p2") + ["--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                         capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    match = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert match, "the load handler never ran: " + dom.stdout[:500]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == [] and probe["broken"] == 0
    assert probe["images"] == len(files.figures) >= 3 and probe["tables"] >= 5
    # 3. A screenshot: it rendered something (not a blank page).
    shot = tmp_path / "report.png"
    subprocess.run(_headless(browser, tmp_path / "p3") + ["--window-size=1280,2400", "--hide-scrollbars",
                                                          f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, text=True, timeout=90, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] == 2400 and pixels.shape[1] == 1280
    assert pixels[..., :3].std() > 0.05  # text, tables and figures, not a blank page
    keep = os.environ.get("CALIB_SWEEP_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_box_labels_shorten_selection_variants():
    from calib_sweep.report.figures import _short_variant

    assert _short_variant([("selection.band", "high"), ("selection.name", "perplexity"), ("selection.pool_factor", "4")]) == \
        "perplexity band=high pool_factor=4"
    assert _short_variant([("selection.name", "random"), ("selection.pool_factor", "1")]) == "random pool_factor=1"
    assert _short_variant([("perturb.row_order_seed", "1")]) == "row_order_seed=1"


def test_box_plots_give_each_method_its_own_axis_and_controls_their_own_panel(tmp_path, monkeypatch):
    """Issue 24 item 7: magnitude's perplexity of 324 must not set the axis of GPTQ's boxes near 12."""
    from calib_sweep.report import figures

    sweep = tmp_path / "sweep"
    num = 0
    for method, ppl in (("gptq", 12.0), ("wanda", 20.0), ("magnitude", 324.0), ("rtn", 15.0)):
        for seed in range(3):
            bump = 0.0 if method in ("magnitude", "rtn") else 0.1 * seed
            write_job(sweep, num, _config(method, "c4", seed), metrics={"perplexity/wikitext": ppl + bump})
            num += 1
    summary = summarize(load_jobs([sweep]))
    panels = figures.method_panels([g for g in summary.groups])
    assert [(name, sorted(g.method for g in groups)) for name, groups in panels] == [
        ("gptq", ["gptq"]), ("wanda", ["wanda"]), ("data-free controls", ["magnitude", "rtn"])]
    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or b"png")
    boxes = figures.box_plots(summary)
    assert [f.name for f in boxes] == ["box_toy-7b_perplexity_wikitext"]
    (fig,) = drawn
    limits = {ax.get_title(): ax.get_ylim() for ax in fig.axes if ax.get_visible()}
    assert set(limits) == {"gptq", "wanda", "data-free controls"}
    assert 11.5 < limits["gptq"][0] and limits["gptq"][1] < 12.5  # its own axis around 12.0-12.2
    assert limits["wanda"][1] < 21
    assert limits["data-free controls"][0] < 15 and limits["data-free controls"][1] > 324
