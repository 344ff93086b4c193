"""Item 4 of issue 29: the set predictors of every calibration set the committed sweeps have results for,
checked against those results.

The committed sweeps (``docs/replication/jobs.csv``: ``experiment=replication_cpu`` and its sample-size
runs; ``docs/selection/jobs.csv``: ``experiment=selection``) keep each job's outcomes but not its job folder.
Every set is drawn again from its config (the draw is deterministic: source, seed, n_samples, seq_len,
selection), its predictors computed (:mod:`calib_sweep.data.predictors`; token-only ones by default, the
model-based ones with ``--model``), and the outcomes of the csv joined to them; then
:func:`calib_sweep.report.predictors.check` does what a report does (Spearman rho, bootstrap CI, Holm, MDE,
within source, across sources, leave one source out).  Sets whose strategy scores windows with the dense model
(``perplexity``, ``activation_diversity``) need ``--model`` to be drawn; without it they are left out
(counted in the output).

Writes ``OUT/sets.csv`` (one row per set: config and predictors), ``OUT/predictors.csv`` (the check) and
``OUT/predictors.md`` (its table).

    python bench/predictors_outcomes.py [--out docs/predictors] [--model]
"""

from __future__ import annotations

import argparse
import csv
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


def set_predictors(jobs: list[dict], use_model: bool, say=print) -> dict[tuple, dict]:
    """Predictors per distinct set ``(experiment, source, seed, n_samples, seq_len, variant)``."""
    import numpy as np

    from calib_sweep import models
    from calib_sweep.data import build_calibration_set, heldout_token_ids
    from calib_sweep.data.cli import compose
    from calib_sweep.data.predictors import SetContext, compute

    done: dict[tuple, dict] = {}
    model = None
    heldout: dict[str, np.ndarray] = {}
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
        tokenizer = models.load_tokenizer(cfg.model)
        bos, separator = models.bos_token_id(cfg.model, tokenizer), models.document_separator(cfg.model, tokenizer)
        if strategy in MODEL_STRATEGIES and model is None:
            device = models.resolve_device("cpu")
            model = models.load_model(cfg.model, device, models.resolve_dtype("auto", device))
        start = time.perf_counter()
        calib = build_calibration_set(cfg.dataset, tokenizer, int(cfg.samples.n_samples), int(cfg.samples.seq_len),
                                      int(cfg.seed), model=model if strategy in MODEL_STRATEGIES else None,
                                      bos_token_id=bos, separator_token_id=separator, selection=cfg.get("selection"))
        if job["source"] not in heldout:
            heldout[job["source"]] = heldout_token_ids(cfg.dataset, tokenizer, separator_token_id=separator).numpy()
        context = SetContext(input_ids=calib.input_ids.numpy(), sequences=calib.sequences, bos_token_id=calib.bos_token_id,
                             separator_token_id=calib.separator_token_id, heldout_tokens=heldout[job["source"]])
        values = compute(context, only_cheap=True)
        done[key] = {"sha256": calib.token_sha256, **values}
        say(f"{key}: {calib.token_sha256[:12]} in {time.perf_counter() - start:.1f} s")
    return done


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs/predictors"))
    parser.add_argument("--model", action="store_true", help="also draw the sets of the model-based strategies")
    args = parser.parse_args(argv)
    from calib_sweep.methods import DATA_FREE
    from calib_sweep.report.predictors import check, markdown, write_csv

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = read_jobs()
    start = time.perf_counter()
    sets = set_predictors(jobs, args.model)
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
