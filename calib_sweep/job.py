"""One job: load -> calibrate -> compress -> evaluate -> record.

A job is a pure function of its resolved config: rerunning it from ``results.json["config"]`` on the
same hardware gives the same numbers.  Every cheap check runs before any weights are loaded
(:func:`validate`), so bad input fails in seconds with one clear line.

``results.json`` keys: ``status`` ("ok" or "failed"), ``config_key`` (hash of the config, see
:func:`calib_sweep.tracking.config_key`), ``config`` (resolved), ``inputs`` (fingerprints of the local
files it reads, :mod:`calib_sweep.inputs`), ``metrics`` (``perplexity/<text>``), ``evaluation``
(perplexity protocols), ``compression`` (verification figures), ``calibration`` (the manifest),
``timings`` (seconds per stage), ``memory`` (peak bytes), ``versions``, ``wandb``, and for failures
``error``, ``error_type``, ``stage``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from calib_sweep import cluster, inputs, methods, models, runtime
from calib_sweep.claims import claim_job_folder
from calib_sweep.methods import diagnostics
from calib_sweep.data import (
    build_calibration_set,
    check_selection,
    load_documents,
    dataset_config,
    heldout_token_ids,
    needs_model,
    permute_rows,
    validate_row_order_seed,
    validate_samples,
    validate_source,
)
from calib_sweep.data.selection import validate_selection
from calib_sweep.data.selection.scoring import check_model_fit
from calib_sweep.errors import ConfigError
from calib_sweep.evaluation import evaluate_model, validate_eval
from calib_sweep.evaluation.baseline import deltas, dense_baseline
from calib_sweep.evaluation.perplexity import stream_windows
from calib_sweep.tracking import (
    WandbRun,
    config_key,
    find_finished,
    index_entry,
    make_readable,
    register_finished,
    replay_run,
    versions,
    write_atomic,
    write_json,
    write_results,
)

log = logging.getLogger(__name__)

def peak_memory(device: torch.device | None = None) -> dict[str, int]:
    """Peak resident memory of this process and, on CUDA, peak allocated GPU memory, in bytes."""
    figures = {"peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}
    if device is not None and device.type == "cuda":
        figures["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return figures


class _Stages:
    """Times named stages (seconds) and remembers the current one for failure records."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.current = "validate"

    @contextlib.contextmanager
    def __call__(self, name: str):
        self.current = name
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)


def validate(cfg: DictConfig) -> None:
    """Checks that need no file and no weights (a URL in a path field may cost one short network probe).

    Raises:
        ConfigError: the first invalid value, named with its fix.
    """
    models.validate_model(cfg.model)
    methods.validate_method(cfg.method)
    validate_samples(cfg.samples.n_samples, cfg.samples.seq_len, cfg.seed, prepend_bos=cfg.model.get("prepend_bos", False))
    validate_source(cfg.dataset)
    models.check_dtype(cfg.model, models.resolve_dtype(cfg.dtype, models.resolve_device(cfg.device)))  # fp16 on Gemma-3
    validate_eval(cfg.eval)
    runtime.resolve_threads(cfg.get("threads", "auto"))
    validate_row_order_seed((cfg.get("perturb") or {}).get("row_order_seed"))
    validate_selection(cfg.get("selection"), cfg.dataset)
    kl_windows = cfg.eval.get("kl_windows", 4)
    if isinstance(kl_windows, bool) or not isinstance(kl_windows, int) or kl_windows < 0:
        raise ConfigError(f"eval.kl_windows={kl_windows!r} must be an integer >= 0 (0 = no KL). Fix: e.g. 4.")
    layer_diagnostics = cfg.eval.get("layer_diagnostics", False)
    if not isinstance(layer_diagnostics, bool):
        raise ConfigError(f"eval.layer_diagnostics={layer_diagnostics!r} must be true or false. Fix: eval.layer_diagnostics=true.")
    if layer_diagnostics and kl_windows == 0:
        raise ConfigError("eval.layer_diagnostics=true measures layer outputs on the KL windows, but eval.kl_windows=0. "
                          "Fix: eval.kl_windows=4, or eval.layer_diagnostics=false.")


def _eval_sources(cfg: DictConfig) -> dict[str, Any]:
    """Dataset configs of the perplexity texts: the job's own source or ``conf/dataset/<name>.yaml``."""
    sources = {}
    for name in cfg.eval.perplexity.texts:
        sources[name] = cfg.dataset if name == cfg.dataset.name else dataset_config(str(name))
        validate_source(sources[name])
        if needs_model(sources[name]):
            raise ConfigError(
                f"eval.perplexity.texts names {name!r}, which is generated by the model and has no held-out text. "
                "Fix: use a document source, e.g. offline_wikipedia."
            )
    return sources


def _kl_windows(tokens: torch.Tensor, windows: int, seq_len: int, bos_token_id: int | None = None) -> torch.Tensor | None:
    """The first ``windows`` windows of ``seq_len`` tokens (at most 512) of a held-out stream, ``[w, L]`` int64
    (with ``bos_token_id``: that token, then ``L - 1`` stream tokens); ``None`` if the stream is too short."""
    data, _ = stream_windows(tokens, min(seq_len, 512), windows, bos_token_id)
    return data if data.shape[0] else None


def _resolved_dtype(cfg: DictConfig) -> str | None:
    """The torch dtype ``cfg.dtype`` resolves to on this machine (``None`` when invalid: validate says why)."""
    try:
        return str(models.resolve_dtype(cfg.dtype, models.resolve_device(cfg.device)))
    except ConfigError:
        return None


def _recorded_inputs(results: Path) -> dict[str, Any] | None:
    """``inputs`` of a finished job's ``results.json`` (``None``: recorded before inputs were, or unreadable)."""
    try:
        return json.loads(results.read_text()).get("inputs")
    except (OSError, ValueError, AttributeError):
        return None


def _tags(cfg: DictConfig) -> list[str]:
    """W&B tags of a job: method, model, calibration source, seed."""
    return [f"method:{cfg.method.name}", f"model:{cfg.model.name}", f"source:{cfg.dataset.name}", f"seed:{cfg.seed}"]


def run_job(
    cfg: DictConfig, output_dir: str | Path, resume: bool = False, group: str | None = None, launcher: Any = None
) -> dict[str, Any]:
    """Run one job and write ``output_dir/results.json``.

    The job folder is claimed first (:func:`calib_sweep.claims.claim_job_folder`): a folder that
    holds another config's job is left untouched.  On failure, including SIGTERM / SIGINT
    (``error_type: Terminated``), a failure record (``status: "failed"``, error, stage) is written
    instead, the job's log gets one last line (``job failed in stage <stage>: <error> (traceback in
    <folder>/traceback.txt)``), then the exception is re-raised; other jobs' folders are never touched.

    Args:
        cfg: the composed job config.
        output_dir: the job's folder.
        resume: skip the job when ``cfg.resume.index_dir`` records a finished job with the same
            config key (unless ``cfg.resume.force``) and the same local inputs
            (:func:`calib_sweep.inputs.changed`: a changed file reruns the job, with one log line
            saying which); a ``skipped.json`` then points at it.  If that
            earlier job has no W&B run and a logger is on now, one is made from its results
            (:func:`calib_sweep.tracking.replay_run`).
        group: W&B group (the sweep), used unless ``logger.group`` is set.
        launcher: ``hydra.launcher`` of the sweep, for the thread count of parallel jobs
            (:func:`calib_sweep.runtime.resolve_threads`).

    Returns:
        The record written to ``results.json`` (or, when skipped, ``{"status": "skipped", ...}``).

    Raises:
        calib_sweep.claims.FolderInUse: the folder belongs to another job (nothing is written).
        calib_sweep.runtime.Terminated: SIGTERM or SIGINT arrived (after the failure record).
    """
    output_dir = Path(output_dir)
    stages = _Stages()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    key = config_key(resolved, _resolved_dtype(cfg))
    claim_job_folder(output_dir, key)
    (output_dir / "traceback.txt").unlink(missing_ok=True)  # from an earlier failed run of this job
    resume_cfg = cfg.get("resume") or {}
    index_dir = Path(str(resume_cfg.get("index_dir", "multirun/.index")))
    read = inputs.job_inputs(resolved)  # what the key cannot see: the content of local files
    if resume and resume_cfg.get("enabled", True) and not resume_cfg.get("force", False):
        previous = find_finished(key, index_dir)
        reason = inputs.changed(_recorded_inputs(previous), read) if previous is not None else None
        if reason is not None:
            log.info("rerunning: %s [finished job: %s]", reason, previous)
            previous = None
        if previous is not None:
            log.info("skipping: a finished job with this config exists at %s (resume.force=true reruns it)", previous)
            skipped: dict[str, Any] = {"status": "skipped", "config_key": key, "results": str(previous)}
            replayed = replay_run(cfg.get("logger"), previous, output_dir, name=output_dir.name, group=group,
                                  tags=_tags(cfg), run_id=key[:32], done_before=index_entry(key, index_dir).get("replayed"))
            if replayed is not None:
                skipped["wandb"] = replayed
                if replayed.get("id"):  # made once; a failed init is tried again on the next resume
                    register_finished(key, previous, index_dir, replayed={"mode": replayed["mode"], "id": replayed["id"]})
            write_json(output_dir / "skipped.json", skipped)
            return skipped
    record: dict[str, Any] = {"status": "running", "config_key": key, "config": resolved, "inputs": read,
                              "versions": versions()}
    record.update(models.weights_record(cfg.model))  # "weights": pretrained | random (model.init=random: timing only)
    record.update(cluster.scheduler_record())  # "slurm": job id (= its .submitit/ log folder), partition, node...
    run: WandbRun | None = None
    device = None
    with runtime.TerminationSignals() as signals:
        try:
            with stages("validate"):
                validate(cfg)
                device = models.resolve_device(cfg.device)
                dtype = models.resolve_dtype(cfg.dtype, device)
                eval_sources = _eval_sources(cfg)
                threads, reason = runtime.resolve_threads(cfg.get("threads", "auto"), launcher)
                record["runtime"] = {"device": str(device), "dtype": str(dtype), **runtime.apply_threads(threads),
                                     "threads_reason": reason, "cores_available": runtime.available_cores(),
                                     "hardware": runtime.hardware_record(device)}
                log.info("torch threads: %d (%s)", threads, reason)
            _run_stages(cfg, record, stages, output_dir, device, dtype, eval_sources, group, key)
            run = record.pop("_run", None)
        except BaseException as exc:
            run = record.pop("_run", None)
            with signals.deferred():
                record.update(
                    status="failed",
                    stage=stages.current,
                    error_type=type(exc).__name__,
                    error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
                record["timings"] = stages.timings
                record["memory"] = peak_memory(device)
                write_atomic(output_dir / "traceback.txt", "".join(traceback.format_exception(exc)))
                write_results(output_dir, record)
                if run is not None:
                    run.finish(exit_code=1)
                # The last line of the job's log (calib_sweep.log): the error and where it happened.
                log.error("job failed in stage %s: %s (traceback in %s)", record["stage"], one_line(exc),
                          output_dir / "traceback.txt")
            raise
        with signals.deferred():  # a signal now waits until the record is complete
            record["timings"] = stages.timings
            record["memory"] = peak_memory(device)
            results = write_results(output_dir, record)
            run.finish()
            try:
                register_finished(key, results, index_dir)
            except OSError as exc:  # the index only speeds up resume; results.json is already safe
                log.warning("could not index %s for resume: %s", results, exc)
    return record


def _run_stages(cfg, record, stages, output_dir: Path, device, dtype, eval_sources, group, key) -> None:
    """prepare -> calibrate -> load -> compress -> verify -> evaluate -> save -> dense_baseline, filling
    ``record`` (the W&B run is left in ``record["_run"]`` for :func:`run_job` to finish)."""
    with stages("prepare"):  # config and tokenizer only: the embedded model is fetched once here
        model_config = models.load_config(cfg.model)
        methods.validate_method(cfg.method, models.linear_shapes(model_config))
        check_model_fit(cfg.get("selection"), model_config)
        validate_samples(
            cfg.samples.n_samples, cfg.samples.seq_len, cfg.seed, getattr(model_config, "max_position_embeddings", None)
        )
        tokenizer = models.load_tokenizer(cfg.model)
        bos = models.bos_token_id(cfg.model, tokenizer)
        separator = models.document_separator(cfg.model, tokenizer)

    # A document source is read once: for the calibration set and, if listed, its held-out text.
    own_docs = None
    # What came from the caches of work that does not depend on the calibration set.
    record["caches"] = {}

    def calibrate(model=None):
        calib = build_calibration_set(
            cfg.dataset, tokenizer, int(cfg.samples.n_samples), int(cfg.samples.seq_len), int(cfg.seed),
            allow_fewer=bool(cfg.samples.get("allow_fewer", False)), model=model, docs=own_docs,
            bos_token_id=bos, separator_token_id=separator, selection=cfg.get("selection"),
        )
        record["calibration"] = calib.manifest()
        if calib.selection_scoring:  # model-based selection scored the source's windows (inside calibrate)
            stages.timings["selection_scoring"] = calib.selection_scoring["seconds"]
            record["caches"]["selection_features"] = calib.selection_scoring
        row_seed = (cfg.get("perturb") or {}).get("row_order_seed")
        if row_seed is not None:  # experiment=noise_floor: same rows, another order
            calib.input_ids, order = permute_rows(calib.input_ids, int(row_seed))
            record["calibration"]["row_order"] = {"seed": int(row_seed), "order": order}
        record["caches"]["token_stream"] = calib.stream_cache
        write_json(output_dir / "calibration.json", record["calibration"], indent=1)
        log.info(
            "calibration set: %s seed=%d, %d x %d tokens from %d documents (sha256 %s)",
            calib.source, calib.seed, calib.n_samples, calib.seq_len, calib.documents_used, calib.token_sha256[:12],
        )
        return calib

    with stages("calibrate"):
        # Self-generated sets need the model: they are drawn right after it loads.
        if cfg.dataset.loader not in ("mixture", "self_generated"):
            own_docs = load_documents(cfg.dataset)
        check_selection(cfg.dataset, cfg.get("selection"), tokenizer, int(cfg.samples.n_samples), int(cfg.samples.seq_len),
                        int(cfg.seed), bool(cfg.samples.get("allow_fewer", False)), own_docs, bos, separator)
        calib = None if needs_model(cfg.dataset, cfg.get("selection")) else calibrate()
        eval_tokens = {}
        for name, source_cfg in eval_sources.items():
            info = record["caches"].setdefault(f"heldout_stream/{name}", {})
            eval_tokens[name] = heldout_token_ids(source_cfg, tokenizer, docs=own_docs if name == cfg.dataset.name else None,
                                                  separator_token_id=separator, info=info)

    run = WandbRun(cfg.get("logger"), record["config"], output_dir, name=output_dir.name, group=group,
                   tags=_tags(cfg), run_id=key[:32])
    record["_run"] = run
    record["wandb"] = run.info

    with stages("load"):
        model = models.load_model(cfg.model, device, dtype)
        before = methods.fingerprint(model)

    if calib is None:
        with stages("calibrate"):
            calib = calibrate(model)

    kl_ids, kl_reference, dense_outputs = None, None, None
    layer_names = list(methods.target_linears(model))
    diagnostics_on = bool(cfg.eval.get("layer_diagnostics", False))
    if int(cfg.eval.get("kl_windows", 4)) > 0 and eval_tokens and (cfg.method.name != "dense" or diagnostics_on):
        with stages("verify"):  # the dense model's predictions on a few held-out windows
            kl_ids = _kl_windows(next(iter(eval_tokens.values())), int(cfg.eval.get("kl_windows", 4)), int(cfg.samples.seq_len), bos)
            if kl_ids is not None and cfg.method.name != "dense":
                kl_reference, record["caches"]["kl_reference"] = methods.reference_logprobs_cached(
                    model, kl_ids, models.model_identity(cfg.model))
        if diagnostics_on and kl_ids is not None:
            with stages("diagnostics"):  # each target layer's dense output at a few held-out positions
                dense_outputs = diagnostics.capture_outputs(model, kl_ids, layer_names)
    snapshot = None
    if diagnostics_on and cfg.method.name != "dense":
        with stages("diagnostics"):  # dense weights (small models only), for the share each method changed
            snapshot = diagnostics.weight_snapshot(model, layer_names)

    with stages("compress"):
        model = methods.compress(model, calib.input_ids.to(device), cfg.method)

    with stages("verify"):
        record["compression"] = methods.verify(model, cfg.method, before)

    with stages("evaluate"):  # the KL from the dense model is evaluation of the compressed model too
        if kl_reference is not None:
            kl = methods.kl_from_reference(model, kl_ids, kl_reference)
            record["compression"]["summary"]["kl_from_dense"] = kl
            record["compression"]["kl_protocol"] = {
                "text": next(iter(eval_tokens)), "windows": int(kl_ids.shape[0]), "seq_len": int(kl_ids.shape[1]),
                "unit": "nats per token, KL(dense || compressed), dense top-64 + rest bucket",
            }
        log.info("compression check: %s", record["compression"]["summary"])
    if diagnostics_on:
        with stages("diagnostics"):  # per-layer figures: the library's own, and output error vs dense
            errors = diagnostics.output_errors(model, kl_ids, dense_outputs) if dense_outputs is not None else None
            record["layers"] = diagnostics.layer_record(
                layer_names, methods.captured_layers(model), record["compression"].get("damping"), errors,
                int(diagnostics.positions(*kl_ids.shape).numel()) if kl_ids is not None else None,
                diagnostics.fraction_changed(model, snapshot) if snapshot is not None else None)
            del snapshot
    with stages("evaluate"):
        metrics, evaluation = evaluate_model(model, tokenizer, cfg.eval, eval_tokens, bos)
    if cfg.method.get("save", False):
        with stages("save"):  # last use of the compressed model: saving may pack it in memory
            record["saved_model"] = str(methods.save(model, cfg.method, output_dir / "model", tokenizer))
            make_readable(output_dir / "model")
    summary = record["compression"]["summary"]
    for name in ("mean_sparsity", "kl_from_dense", "avg_bits"):
        if isinstance(summary.get(name), (int, float)):
            metrics[f"compression/{name}"] = float(summary[name])

    if cfg.eval.get("dense_baseline", True):
        with stages("dense_baseline"):
            own = (metrics, evaluation) if cfg.method.name == "dense" else None
            if own is None:
                del model  # free the compressed model before a dense one is loaded
                if device.type == "cuda":
                    torch.cuda.empty_cache()

            def evaluate_dense():
                log.info("dense baseline: evaluating the uncompressed model (cached for later jobs)")
                dense = models.load_model(cfg.model, device, dtype)
                return evaluate_model(dense, tokenizer, cfg.eval, eval_tokens, bos)

            dense = dense_baseline(cfg, evaluate_dense, own, texts=eval_tokens)
            record["dense"] = {"metrics": dense["metrics"], "key": dense["key"], "reused": dense["reused"]}
            record["caches"]["dense_baseline"] = {"reused": dense["reused"], "key": dense["key"]}
            record["deltas"] = deltas(metrics, dense["metrics"])
    record.update(status="ok", metrics=metrics, evaluation=evaluation)
    run.log({**metrics, **{f"time/{k}": v for k, v in stages.timings.items()}})
    if run.run is not None:
        run.log_artifact(output_dir / "calibration.json",
                         f"calibration-{calib.source}-s{calib.seed}-{calib.token_sha256[:12]}", "calibration-set")


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, prefixed by its type when it is not ours."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {text}"


def report_failure(exc: BaseException, output_dir: Path) -> None:
    """Print the one-line reason for a failed job to stderr (the traceback is in ``traceback.txt``)."""
    print(f"calib_sweep: error: {one_line(exc)}  [job folder: {output_dir}]", file=sys.stderr)
