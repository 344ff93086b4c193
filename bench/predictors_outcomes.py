"""Set predictors of every calibration set the committed sweeps have results for (issue 29, item 4),
checked against those results.

The committed sweeps (``docs/replication/jobs.csv``: ``experiment=replication_cpu`` and its sample-size
runs; ``docs/selection/jobs.csv``: ``experiment=selection``) keep each job's outcomes but not its job folder.
Every set is drawn again from its config (the draw is deterministic: source, seed, n_samples, seq_len,
selection), its predictors computed (:mod:`calib_sweep.data.predictors`; token-only ones by default, the
model-based ones with ``--model-predictors``), and the outcomes of the csv joined to them; then
:func:`calib_sweep.report.predictors.check` does what a report does (Spearman rho, bootstrap CI, Holm, MDE,
within source, across sources, leave one source out).  Sets whose strategy scores windows with the dense model
(``perplexity``, ``activation_diversity``) need ``--model`` to be drawn; without it they are left out
(counted in the output).

Writes ``OUT/sets.csv`` (one row per set: config and predictors), ``OUT/predictors.csv`` (the check) and
``OUT/predictors.md`` (its table).

``--fresh RECORDS`` instead repeats the check on the job folders under ``RECORDS`` (e.g.
``docs/replication_v2/records``, whose jobs recorded their own predictors), keeping only the calibration sets
whose token hash is *not* in ``OUT/sets.csv``: sets that played no part in the first check.  Writes
``OUT/fresh/{sets.csv,predictors.csv,predictors.md}``.

    python bench/predictors_outcomes.py [--out docs/predictors] [--model] [--model-predictors]
    python bench/predictors_outcomes.py --fresh docs/replication_v2/records [--model-predictors]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = {"replication_cpu": ROOT / "docs/replication/jobs.csv", "selection": ROOT / "docs/selection/jobs.csv"}
OUTCOMES = ("perplexity/offline_wikipedia", "zeroshot/mean_acc", "compression/kl_from_dense")
MODEL_STRATEGIES = ("perplexity", "activation_diversity")


def _selection_overrides(variant: str) -> tuple[list[str], str]:
    """``selection.band=low, selection.name=perplexity, ...`` -> (Hydra overrides, strategy name)."""
    items = dict(part.split("=", 1) for part in variant.split(", ") if part.startswith("selection."))
    name = items.pop("selection.name", "random")
    return [f"selection={name}"] + [f"{k}={v}" for k, v in items.items()], name


def read_jobs() -> list[dict]:
    """The finished, canonical jobs of the committed sweeps (superseded reruns and noise repeats left out)."""
    jobs = []
    for sweep, path in SWEEPS.items():
        for row in csv.DictReader(open(path, encoding="utf-8")):
            if row["status"] != "ok" or row.get("noise_repeat") == "True" or row.get("perturbation"):
                continue
            jobs.append({**row, "sweep": sweep})
    return jobs


def set_predictors(jobs: list[dict], use_model: bool, say=print, model_predictors: bool = False) -> dict[tuple, dict]:
    """Predictors per distinct set ``(experiment, source, seed, n_samples, seq_len, variant)``; ``use_model``:
    draw the sets of the model-scored strategies too; ``model_predictors``: also the model-based predictors."""
    use_model = use_model or model_predictors
    from calib_sweep.data.cli import compose

    done: dict[tuple, dict] = {}
    model = None
    heldout: dict = {}
    for job in jobs:
        key = (job["sweep"], job["source"], int(job["seed"]), int(job["n_samples"]), int(job["seq_len"]), job["variant"])
        if key in done:
            continue
        selection, strategy = _selection_overrides(job["variant"])
        if strategy in MODEL_STRATEGIES and not use_model:
            done[key] = {"skipped": f"selection={strategy} needs the model (--model)"}
            continue
        experiment = "selection" if job["sweep"] == "selection" else "replication_cpu"
        cfg = compose([f"experiment={experiment}", f"dataset={job['source']}", f"seed={job['seed']}",
                       f"samples.n_samples={job['n_samples']}", f"samples.seq_len={job['seq_len']}", *selection])
        if use_model and model is None:
            model = _dense_model(cfg)
        start = time.perf_counter()
        done[key] = set_values(cfg, model, heldout, with_model_predictors=model_predictors)
        say(f"{key}: {done[key]['sha256'][:12]} in {time.perf_counter() - start:.1f} s")
    return done


def _dense_model(cfg):
    from calib_sweep import models

    device = models.resolve_device("cpu")
    return models.load_model(cfg.model, device, models.resolve_dtype("auto", device))


def set_values(cfg, model, heldout: dict, with_model_predictors: bool) -> dict:
    """Draw the set of ``cfg`` (``model`` is used only where its selection scores windows with it) and compute its predictors: ``{"sha256": token hash, name: value, ...}``.

    Args:
        cfg: a composed job config (``dataset``, ``samples``, ``seed``, ``selection``, ``model``).
        model: the dense model (needed to draw model-scored selections and for the model-based predictors).
        heldout: a cache, source name -> ``int64 [n_tokens]`` held-out stream (filled here).
        with_model_predictors: also the model-based predictors (dense perplexity, activation coverage,
            outlier-channel coverage); else only the token-only ones.
    """
    from calib_sweep import models
    from calib_sweep.data import build_calibration_set, heldout_token_ids
    from calib_sweep.data.predictors import SetContext, compute

    tokenizer = models.load_tokenizer(cfg.model)
    bos, separator = models.bos_token_id(cfg.model, tokenizer), models.document_separator(cfg.model, tokenizer)
    calib = build_calibration_set(cfg.dataset, tokenizer, int(cfg.samples.n_samples), int(cfg.samples.seq_len),
                                  int(cfg.seed), model=model, bos_token_id=bos, separator_token_id=separator,
                                  selection=cfg.get("selection"))
    source = str(cfg.dataset.name)
    if source not in heldout:
        heldout[source] = heldout_token_ids(cfg.dataset, tokenizer, separator_token_id=separator).numpy()
    context = SetContext(input_ids=calib.input_ids.numpy(), sequences=calib.sequences, bos_token_id=calib.bos_token_id,
                         separator_token_id=calib.separator_token_id, heldout_tokens=heldout[source],
                         model=model if with_model_predictors else None, calib=calib, dataset_cfg=cfg.dataset,
                         tokenizer=tokenizer, selection=cfg.get("selection"))
    return {"sha256": calib.token_sha256, **compute(context, only_cheap=not with_model_predictors)}


def to_report_jobs(jobs: list[dict], sets: dict[tuple, dict]):
    """:class:`calib_sweep.report.collect.Job` objects with the csv's outcomes and the sets' predictors; a
    (model, method, set hash) met twice is one job (listed by both sweeps)."""
    import math

    from calib_sweep.report.collect import Job

    out = []
    seen = set()
    for job in jobs:
        key = (job["sweep"], job["source"], int(job["seed"]), int(job["n_samples"]), int(job["seq_len"]), job["variant"])
        values = sets.get(key, {})
        if "skipped" in values:
            continue
        # experiment=selection's random jobs are replication_cpu's own (same config key): one job, counted once
        ident = (job["model"], job["method"], values.get("sha256"))
        if ident in seen:
            continue
        seen.add(ident)
        metrics = {m: float(job[m]) for m in OUTCOMES if job.get(m) not in (None, "")}
        config = {"model": {"name": job["model"]}, "method": {"name": job["method"]}, "dataset": {"name": job["source"]},
                  "samples": {"n_samples": int(job["n_samples"]), "seq_len": int(job["seq_len"])}, "seed": int(job["seed"])}
        predictors = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        out.append(Job(folder=Path(job["folder"]), status="ok", config=config, metrics=metrics, predictors=predictors))
    return out


def fresh_check(records: Path, out: Path, use_model: bool = False) -> int:
    """The check on the jobs under ``records`` whose calibration sets are not in ``out/sets.csv``; with
    ``use_model``, each fresh set is drawn again from its record's config (its token hash checked against the
    record) and the model-based predictors added to the ones the job recorded.

    Returns:
        0, or 2 when ``records`` is not a folder of job records (one line on stderr).

    Raises:
        SystemExit: ``out/sets.csv`` is missing (run the first check first), no job is left, or a redrawn set's
            hash differs from its record's.
    """
    from calib_sweep.methods import DATA_FREE
    from calib_sweep.report.collect import ReportError, load_jobs
    from calib_sweep.report.predictors import check, markdown, write_csv

    seen_path = out / "sets.csv"
    if not seen_path.is_file():
        raise SystemExit(f"{seen_path} is missing. Fix: run `python bench/predictors_outcomes.py --out {out}` first.")
    seen = {row["sha256"] for row in csv.DictReader(open(seen_path, encoding="utf-8")) if row["sha256"]}
    try:
        jobs = [j for j in load_jobs([records]) if j.status == "ok" and not j.repeat]
    except ReportError as error:
        print(f"predictors_outcomes: error: {error}", file=sys.stderr)
        return 2
    fresh = [j for j in jobs if j.calibration_sha256 and j.calibration_sha256 not in seen]
    reused = {j.calibration_sha256 for j in jobs if j.calibration_sha256 in seen}
    if not fresh:
        raise SystemExit(f"every calibration set under {records} is in {seen_path}: nothing fresh to check.")
    target = out / "fresh"
    target.mkdir(parents=True, exist_ok=True)
    by_set = {}
    for job in fresh:
        by_set.setdefault(job.calibration_sha256, job)
    if use_model:
        import math

        from omegaconf import OmegaConf

        model, heldout = None, {}
        for sha, job in by_set.items():
            cfg = OmegaConf.create(job.config)
            model = model if model is not None else _dense_model(cfg)
            start = time.perf_counter()
            values = set_values(cfg, model, heldout, with_model_predictors=True)
            if values["sha256"] != sha:
                raise SystemExit(f"{job.folder}: the redrawn set's hash {values['sha256'][:12]} is not the recorded "
                                 f"{sha[:12]}. Fix: run from the commit that made the records.")
            extra = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
            for other in fresh:
                if other.calibration_sha256 == sha:
                    other.predictors = {**extra, **other.predictors}
            print(f"{job.source} seed {job.config.get('seed')}: {sha[:12]} in {time.perf_counter() - start:.1f} s")
    names = sorted({k for j in fresh for k in j.predictors})
    with open(target / "sets.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "seed", "sha256", *names])
        for sha, job in sorted(by_set.items(), key=lambda kv: (kv[1].source, kv[1].config.get("seed", 0))):
            writer.writerow([job.source, job.config.get("seed"), sha, *[job.predictors.get(n, "") for n in names]])
    metrics = sorted({m for j in fresh for m in j.metrics})
    checks = check(fresh, metrics, DATA_FREE)
    write_csv(checks, target)
    (target / "predictors.md").write_text(markdown(checks), encoding="utf-8")
    print(f"{len(by_set)} fresh sets ({len(reused)} of the records' sets were in {seen_path} and left out), "
          f"{len(fresh)} jobs, {len(checks.rows)} rows -> {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", default=str(ROOT / "docs/predictors"),
                        help="folder for sets.csv, predictors.csv and predictors.md (default: docs/predictors)")
    parser.add_argument("--model", action="store_true", help="load the dense model: draw the sets of the model-scored strategies")
    parser.add_argument("--model-predictors", action="store_true",
                        help="also compute the model-based predictors (a forward pass per set, and activation coverage "
                             "scores every window of each source); with --fresh: redraw each fresh set from its record, "
                             "checking its hash, for them")
    parser.add_argument("--fresh", metavar="RECORDS", help="check the job folders under RECORDS on the sets not in OUT/sets.csv")
    args = parser.parse_args(argv)
    if args.fresh:
        return fresh_check(Path(args.fresh), Path(args.out), args.model_predictors)
    from calib_sweep.methods import DATA_FREE
    from calib_sweep.report.predictors import check, markdown, write_csv

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = read_jobs()
    start = time.perf_counter()
    sets = set_predictors(jobs, args.model, model_predictors=args.model_predictors)
    names = sorted({k for v in sets.values() for k in v if k not in ("skipped", "sha256") and not k.endswith("_na")})
    with open(out / "sets.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["experiment", "source", "seed", "n_samples", "seq_len", "variant", "sha256", "skipped", *names])
        for key, values in sorted(sets.items(), key=str):
            writer.writerow([*key, values.get("sha256", ""), values.get("skipped", ""), *[values.get(n, "") for n in names]])
    checks = check(to_report_jobs(jobs, sets), list(OUTCOMES), DATA_FREE)
    write_csv(checks, out)
    (out / "predictors.md").write_text(markdown(checks), encoding="utf-8")
    skipped = sum("skipped" in v for v in sets.values())
    print(f"{len(sets)} sets ({skipped} left out: model-based strategies), {len(jobs)} jobs, "
          f"{len(checks.rows)} rows in {time.perf_counter() - start:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
