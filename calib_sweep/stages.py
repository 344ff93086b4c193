"""The stages of one job, each a function of its config group(s) and the previous stage's output.

:func:`calib_sweep.job.run_job` checks the config (:func:`calib_sweep.job.validate`) and then calls,
in this order:

1. :func:`prepare` (the whole config): the config resolved on this machine (device, dtype, threads,
   held-out sources), the model's config and tokenizer -> :class:`Prepared`;
2. :func:`calibrate` (``dataset``, ``samples``, ``seed``, ``selection``, ``perturb``): the held-out
   token streams and the calibration set, unless drawing it needs the model -> :class:`Calibrated`;
   the W&B run opens here, after calibrate and before load;
3. :func:`load` (``model``, ``method``, ``eval``): the dense model, the calibration set drawn with it
   (self-generated text, model-based selection), the dense references for KL and layer diagnostics
   -> :class:`Loaded`; then :func:`compress` (``method``, ``eval``): compression, verification, KL
   from the dense model, the per-layer record -> :class:`Compressed`;
4. :func:`evaluate` (the whole config, for the dense baseline's key): perplexity and zero-shot
   tasks, saving, the dense baseline -> :class:`Evaluated`;
5. :func:`record`: the metrics into the record, and to the W&B run with the calibration set.

Every stage times itself under the names of ``results.json["timings"]`` (``validate``, ``prepare``,
``calibrate``, ``selection_scoring``, ``load``, ``verify``, ``diagnostics``, ``compress``,
``evaluate``, ``save``, ``dense_baseline``; a name met twice adds up) and writes its part of the
record as it goes (:class:`JobState`), so a failure record holds what the stages before the failure
found and names the stage that failed (:attr:`Timer.current`).  Lines are logged under
``calib_sweep.job``, the logger they had when these stages were part of :mod:`calib_sweep.job`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from calib_sweep import methods, models, runtime
from calib_sweep.data import (
    CalibrationSet,
    build_calibration_set,
    check_selection,
    dataset_config,
    heldout_token_ids,
    load_documents,
    needs_model,
    permute_rows,
    validate_samples,
    validate_source,
)
from calib_sweep.data.selection.scoring import check_model_fit
from calib_sweep.errors import ConfigError
from calib_sweep.evaluation import evaluate_model
from calib_sweep.evaluation.items import save_item_records
from calib_sweep.evaluation.baseline import deltas, dense_baseline
from calib_sweep.evaluation.perplexity import stream_windows
from calib_sweep.methods import diagnostics
from calib_sweep.tracking import WandbRun, make_readable, write_json

log = logging.getLogger("calib_sweep.job")


class Timer:
    """Times named stages (seconds, rounded to ms, a name met again adds up) and remembers the current
    one (``"validate"`` before any) for failure records."""

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


@dataclass
class JobState:
    """What all stages of one job share.

    Attributes:
        record: the ``results.json`` record, filled stage by stage (on failure it is written as it is).
        folder: the job's folder (``calibration.json``, ``model/``).
        timer: stage timings and the current stage.
        device: the job's torch device once :func:`prepare` resolved it (``None`` before).
        run: the W&B run once opened (after :func:`calibrate`); :func:`calib_sweep.job.run_job` finishes it.
    """

    record: dict[str, Any]
    folder: Path
    timer: Timer = field(default_factory=Timer)
    device: torch.device | None = None
    run: WandbRun | None = None


@dataclass
class Prepared:
    """The config resolved on this machine, and the model's config and tokenizer (no weights).

    Attributes:
        device, dtype: where and in which torch dtype the model runs.
        eval_sources: perplexity text name -> its dataset config (``eval.perplexity.texts`` order).
        model_config: the model's ``transformers`` config.
        tokenizer: the model's tokenizer.
        bos: the token id put before every window, or ``None`` (``model.prepend_bos`` false).
        separator: the token id joining documents in a stream (``None``: plain concatenation).
    """

    device: torch.device
    dtype: torch.dtype
    eval_sources: dict[str, Any]
    model_config: Any
    tokenizer: Any
    bos: int | None
    separator: int | None


@dataclass
class Calibrated:
    """The calibration set (or how to draw it once the model is loaded) and the held-out streams.

    Attributes:
        calib: the drawn set; ``None`` when drawing it needs the model (self-generated text, model-based
            selection): :func:`load` then calls ``draw(model)`` right after the model loads.
        draw: draws the set (``draw(model=None)``), writing its manifest into the record and
            ``calibration.json``.
        eval_tokens: perplexity text name -> held-out token stream, ``[n_tokens]`` int64.
        seq_len: calibration window length in tokens (the KL windows use it too, at most 512).
        heldout: the set's own source's held-out stream, ``[n_tokens]`` int64 (``None``: a mixture, self-generated
            text or no held-out document), for :func:`record_predictors`.
    """

    calib: CalibrationSet | None
    draw: Callable[..., CalibrationSet]
    eval_tokens: dict[str, torch.Tensor]
    seq_len: int
    heldout: torch.Tensor | None = None


@dataclass
class Loaded:
    """The dense model on its device, the calibration set, and the dense references taken before compression.

    Attributes:
        model: the dense model (on the job's device, in its dtype); ``None`` once :func:`compress` took it.
        before: :func:`calib_sweep.methods.fingerprint` of its target layers.
        calib: the calibration set (``input_ids``: ``[n_samples, seq_len]`` int64).
        layer_names: the target linear layers, in model order.
        kl_ids: ``[w, L]`` int64 held-out windows for KL and layer diagnostics (``None``: none taken).
        kl_text: the perplexity text the windows come from (the first one).
        kl_reference: the dense model's top-64 log-probabilities on ``kl_ids`` (``None`` for dense).
        dense_outputs: each target layer's dense output at :func:`diagnostics.positions` (``None``: off).
        snapshot: CPU copies of the dense weights (``None``: off, dense, or too large).
    """

    model: torch.nn.Module | None
    before: dict[str, tuple[float, float]]
    calib: CalibrationSet
    layer_names: list[str]
    kl_ids: torch.Tensor | None = None
    kl_text: str | None = None
    kl_reference: Any = None
    dense_outputs: dict[str, torch.Tensor] | None = None
    snapshot: dict[str, torch.Tensor] | None = None


@dataclass
class Compressed:
    """The compressed model and the calibration set it was compressed on.

    Attributes:
        model: the compressed model; ``None`` once :func:`evaluate` freed it for the dense baseline.
        calib: the calibration set.
    """

    model: torch.nn.Module | None
    calib: CalibrationSet


@dataclass
class Evaluated:
    """The job's figures: ``metrics`` (``perplexity/<text>``, zero-shot, ``compression/<name>``) and
    ``evaluation`` (the protocols of :func:`calib_sweep.evaluation.evaluate_model`)."""

    metrics: dict[str, float]
    evaluation: dict[str, Any]


def _eval_sources(eval_cfg: Any, dataset_cfg: Any) -> dict[str, Any]:
    """Dataset configs of the perplexity texts: the job's own source or ``conf/dataset/<name>.yaml``.

    Raises:
        ConfigError: an invalid source, or one generated by the model (it has no held-out text).
    """
    sources = {}
    for name in eval_cfg.perplexity.texts:
        sources[name] = dataset_cfg if name == dataset_cfg.name else dataset_config(str(name))
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


def prepare(cfg: Any, launcher: Any, job: JobState) -> Prepared:
    """Resolve the (validated) config on this machine, then read the model's config and tokenizer.

    Stages ``validate`` (continuing :func:`calib_sweep.job.validate`'s time: device, dtype, held-out
    sources, threads, ``record["runtime"]``) and ``prepare`` (the embedded model is fetched once here;
    ``record["weights_storage"]``, :func:`calib_sweep.models.weights_storage`, with a logged warning
    when the method quantizes onto a grid at or near the stored one).

    Raises:
        ConfigError: a perplexity text with no held-out text, a method or selection that does not fit
            the model's layers, windows longer than its context.
    """
    with job.timer("validate"):
        job.device = device = models.resolve_device(cfg.device)
        dtype = models.resolve_dtype(cfg.dtype, device)
        eval_sources = _eval_sources(cfg.eval, cfg.dataset)
        threads, reason = runtime.resolve_threads(cfg.get("threads", "auto"), launcher)
        job.record["runtime"] = {"device": str(device), "dtype": str(dtype), **runtime.apply_threads(threads),
                                 "threads_reason": reason, "cores_available": runtime.available_cores(),
                                 "hardware": runtime.hardware_record(device)}
        log.info("torch threads: %d (%s)", threads, reason)
    with job.timer("prepare"):  # config and tokenizer only: the embedded model is fetched once here
        model_config = models.load_config(cfg.model)
        methods.validate_method(cfg.method, models.linear_shapes(model_config))
        check_model_fit(cfg.get("selection"), model_config)
        validate_samples(
            cfg.samples.n_samples, cfg.samples.seq_len, cfg.seed, getattr(model_config, "max_position_embeddings", None)
        )
        tokenizer = models.load_tokenizer(cfg.model)
        # How the base weights were stored (GGUF tensor types): a grid near the job's favours rounding.
        job.record["weights_storage"] = storage = models.weights_storage(cfg.model)
        warning = models.grid_warning(storage, cfg.method)
        if warning:
            log.warning("base weights: %s; %s", models.describe_storage(storage), warning)
        prepared = Prepared(device, dtype, eval_sources, model_config, tokenizer,
                            models.bos_token_id(cfg.model, tokenizer), models.document_separator(cfg.model, tokenizer))
    # What came from the caches of work that does not depend on the calibration set.
    job.record["caches"] = {}
    return prepared


def _draw(dataset: Any, samples: Any, seed: int, selection: Any, perturb: Any, prepared: Prepared,
          docs: list | None, job: JobState, model: torch.nn.Module | None = None) -> CalibrationSet:
    """Draw the calibration set (with ``model`` when it needs one) and record it: ``record["calibration"]``
    (the manifest, with ``row_order`` under ``perturb.row_order_seed``), the caches it used,
    ``calibration.json`` and one log line; model-based selection's scoring time is ``selection_scoring``."""
    calib = build_calibration_set(
        dataset, prepared.tokenizer, int(samples.n_samples), int(samples.seq_len), int(seed),
        allow_fewer=bool(samples.get("allow_fewer", False)), model=model, docs=docs,
        bos_token_id=prepared.bos, separator_token_id=prepared.separator, selection=selection,
    )
    record = job.record
    record["calibration"] = calib.manifest()
    if calib.selection_scoring:  # model-based selection scored the source's windows (inside calibrate)
        job.timer.timings["selection_scoring"] = calib.selection_scoring["seconds"]
        record["caches"]["selection_features"] = calib.selection_scoring
    row_seed = (perturb or {}).get("row_order_seed")
    if row_seed is not None:  # experiment=noise_floor: same rows, another order
        calib.input_ids, order = permute_rows(calib.input_ids, int(row_seed))
        record["calibration"]["row_order"] = {"seed": int(row_seed), "order": order}
    record["caches"]["token_stream"] = calib.stream_cache
    write_json(job.folder / "calibration.json", record["calibration"], indent=1)
    log.info(
        "calibration set: %s seed=%d, %d x %d tokens from %d documents (sha256 %s)",
        calib.source, calib.seed, calib.n_samples, calib.seq_len, calib.documents_used, calib.token_sha256[:12],
    )
    return calib


def calibrate(dataset: Any, samples: Any, seed: int, selection: Any, perturb: Any, prepared: Prepared,
              job: JobState) -> Calibrated:
    """Stage ``calibrate``: read the source once, check the selection, draw the calibration set unless it
    needs the model, and tokenize the held-out text of every perplexity source.

    Args:
        dataset, samples, seed, selection, perturb: those config groups (``selection`` / ``perturb``:
            ``None`` when absent).
        prepared: :func:`prepare`'s output.
        job: the job's shared state (``record["calibration"]`` and ``record["caches"]`` are filled).

    Raises:
        ConfigError / DataError: the source's pool cannot give ``samples.n_samples`` windows, and the like.
    """
    n_samples, seq_len, seed = int(samples.n_samples), int(samples.seq_len), int(seed)
    with job.timer("calibrate"):
        # Self-generated sets need the model: they are drawn right after it loads.  A document source is
        # read once: for the calibration set and, if listed, its held-out text.
        docs = None if dataset.loader in ("mixture", "self_generated") else load_documents(dataset)
        check_selection(dataset, selection, prepared.tokenizer, n_samples, seq_len, seed,
                        bool(samples.get("allow_fewer", False)), docs, prepared.bos, prepared.separator)
        draw = functools.partial(_draw, dataset, samples, seed, selection, perturb, prepared, docs, job)
        calib = None if needs_model(dataset, selection) else draw()
        eval_tokens = {}
        for name, source_cfg in prepared.eval_sources.items():
            info = job.record["caches"].setdefault(f"heldout_stream/{name}", {})
            eval_tokens[name] = heldout_token_ids(source_cfg, prepared.tokenizer,
                                                  docs=docs if name == dataset.name else None,
                                                  separator_token_id=prepared.separator, info=info)
        own = eval_tokens.get(str(dataset.name))
        if own is None and docs is not None:  # the source's held-out text, for the predictors' JS distance (cached)
            try:
                own = heldout_token_ids(dataset, prepared.tokenizer, docs=docs, separator_token_id=prepared.separator)
            except ConfigError:  # no held-out document: the JS distance says so
                own = None
        if calib is not None:
            record_predictors(calib, own, job)
    return Calibrated(calib, draw, eval_tokens, seq_len, own)


def record_predictors(calib: CalibrationSet, heldout: torch.Tensor | None, job: JobState) -> None:
    """``record["predictors"]``: the set's token-only predictors (:mod:`calib_sweep.data.predictors`), and
    the model-based ones whose features the job already computed (``selection=perplexity``'s per-row
    perplexities give ``mean_dense_perplexity``); the others are left out, so no predictor costs a forward
    pass.  ``heldout``: the source's held-out stream (``None``: the JS distance is ``None`` with its reason)."""
    import numpy as np

    from calib_sweep.data.predictors import SetContext, compute

    features = {}
    selection = calib.extra.get("selection") or {}
    if selection.get("strategy") in ("perplexity",) and all("score" in s for s in calib.sequences):
        features["nll"] = np.log([float(s["score"]) for s in calib.sequences])  # score = exp(mean NLL) per row
    context = SetContext(input_ids=calib.input_ids.numpy(), sequences=calib.sequences, bos_token_id=calib.bos_token_id,
                         separator_token_id=calib.separator_token_id,
                         heldout_tokens=None if heldout is None else heldout.numpy(), features=features)
    job.record["predictors"] = compute(context, only_cheap=True)


def load(model_cfg: Any, method_cfg: Any, eval_cfg: Any, prepared: Prepared, calibrated: Calibrated,
         job: JobState) -> Loaded:
    """Stage ``load`` (the dense model), then ``calibrate`` for a set drawn with it, ``verify`` (the dense
    model's top-64 log-probabilities on ``eval.kl_windows`` held-out windows, cached, unless the method is
    dense) and ``diagnostics`` (dense layer outputs and weights, with ``eval.layer_diagnostics``)."""
    with job.timer("load"):
        model = models.load_model(model_cfg, prepared.device, prepared.dtype)
        loaded = Loaded(model, methods.fingerprint(model), calibrated.calib, [])
    if loaded.calib is None:
        with job.timer("calibrate"):
            loaded.calib = calibrated.draw(model)
            record_predictors(loaded.calib, calibrated.heldout, job)
    loaded.layer_names = list(methods.target_linears(model))
    diagnostics_on = bool(eval_cfg.get("layer_diagnostics", False))
    windows = int(eval_cfg.get("kl_windows", 4))
    if windows > 0 and calibrated.eval_tokens and (method_cfg.name != "dense" or diagnostics_on):
        with job.timer("verify"):  # the dense model's predictions on a few held-out windows
            loaded.kl_text, tokens = next(iter(calibrated.eval_tokens.items()))
            loaded.kl_ids = _kl_windows(tokens, windows, calibrated.seq_len, prepared.bos)
            if loaded.kl_ids is not None and method_cfg.name != "dense":
                loaded.kl_reference, job.record["caches"]["kl_reference"] = methods.reference_logprobs_cached(
                    model, loaded.kl_ids, models.model_identity(model_cfg))
        if diagnostics_on and loaded.kl_ids is not None:
            with job.timer("diagnostics"):  # each target layer's dense output at a few held-out positions
                loaded.dense_outputs = diagnostics.capture_outputs(model, loaded.kl_ids, loaded.layer_names)
    if diagnostics_on and method_cfg.name != "dense":
        with job.timer("diagnostics"):  # dense weights (small models only), for the share each method changed
            loaded.snapshot = diagnostics.weight_snapshot(model, loaded.layer_names)
    return loaded


def compress(method_cfg: Any, eval_cfg: Any, loaded: Loaded, job: JobState) -> Compressed:
    """Stages ``compress``, ``verify`` (``record["compression"]``: what changed, against ``loaded.before``),
    ``evaluate`` (the KL from the dense model, into ``record["compression"]``) and, with
    ``eval.layer_diagnostics``, ``diagnostics`` (``record["layers"]``).

    Raises:
        ConfigError / CompressionError: from :func:`calib_sweep.methods.compress`;
        VerificationError: from :func:`calib_sweep.methods.verify` (the weights did not change as the
        method says they must).
    """
    record = job.record
    with job.timer("compress"):
        model = methods.compress(loaded.model, loaded.calib.input_ids.to(job.device), method_cfg)
        loaded.model = None  # compressed in place, or replaced: the compressed model is the one kept
    with job.timer("verify"):
        record["compression"] = methods.verify(model, method_cfg, loaded.before)
    with job.timer("evaluate"):  # the KL from the dense model is evaluation of the compressed model too
        if loaded.kl_reference is not None:
            kl = methods.kl_from_reference(model, loaded.kl_ids, loaded.kl_reference)
            record["compression"]["summary"]["kl_from_dense"] = kl
            record["compression"]["kl_protocol"] = {
                "text": loaded.kl_text, "windows": int(loaded.kl_ids.shape[0]), "seq_len": int(loaded.kl_ids.shape[1]),
                "unit": "nats per token, KL(dense || compressed), dense top-64 + rest bucket",
            }
        log.info("compression check: %s", record["compression"]["summary"])
    if eval_cfg.get("layer_diagnostics", False):
        with job.timer("diagnostics"):  # per-layer figures: the library's own, and output error vs dense
            kl_ids = loaded.kl_ids
            errors = diagnostics.output_errors(model, kl_ids, loaded.dense_outputs) if loaded.dense_outputs is not None else None
            record["layers"] = diagnostics.layer_record(
                loaded.layer_names, methods.captured_layers(model), record["compression"].get("damping"), errors,
                int(diagnostics.positions(*kl_ids.shape).numel()) if kl_ids is not None else None,
                diagnostics.fraction_changed(model, loaded.snapshot) if loaded.snapshot is not None else None)
            loaded.snapshot = None
    return Compressed(model, loaded.calib)


def evaluate(cfg: Any, prepared: Prepared, calibrated: Calibrated, compressed: Compressed, job: JobState) -> Evaluated:
    """Stages ``evaluate`` (perplexity on ``eval.perplexity.texts``, zero-shot tasks), ``save`` (with
    ``method.save``: ``record["saved_model"]``) and ``dense_baseline`` (with ``eval.dense_baseline``:
    ``record["dense"]``, ``record["deltas"]``; the compressed model is freed first).

    Args:
        cfg: the whole config: the dense baseline's cache key is made of its resolved config.
    """
    with job.timer("evaluate"):
        item_records: dict = {}
        metrics, evaluation = evaluate_model(compressed.model, prepared.tokenizer, cfg.eval, calibrated.eval_tokens,
                                             prepared.bos, item_records)
        if item_records:  # issue 27 item 4: per-item zero-shot records beside results.json
            save_item_records(job.folder, item_records)
    if cfg.method.get("save", False):
        with job.timer("save"):  # last use of the compressed model: saving may pack it in memory
            path = methods.save(compressed.model, cfg.method, job.folder / "model", prepared.tokenizer)
            job.record["saved_model"] = str(path)
            make_readable(job.folder / "model")
    summary = job.record["compression"]["summary"]
    for name in ("mean_sparsity", "kl_from_dense", "avg_bits"):
        if isinstance(summary.get(name), (int, float)):
            metrics[f"compression/{name}"] = float(summary[name])
    evaluated = Evaluated(metrics, evaluation)
    if cfg.eval.get("dense_baseline", True):
        with job.timer("dense_baseline"):
            _dense_baseline(cfg, prepared, calibrated, compressed, evaluated, job)
    return evaluated


def _evaluate_dense(model_cfg: Any, eval_cfg: Any, prepared: Prepared, eval_tokens: dict[str, torch.Tensor]):
    """Load the uncompressed model and evaluate it: ``evaluate_model``'s ``(metrics, details)``."""
    log.info("dense baseline: evaluating the uncompressed model (cached for later jobs)")
    dense = models.load_model(model_cfg, prepared.device, prepared.dtype)
    return evaluate_model(dense, prepared.tokenizer, eval_cfg, eval_tokens, prepared.bos)


def _dense_baseline(cfg: Any, prepared: Prepared, calibrated: Calibrated, compressed: Compressed,
                    own: Evaluated, job: JobState) -> None:
    """The dense model's figures (cached across jobs; the job's own when it is dense) and the deltas to them."""
    dense_own = (own.metrics, own.evaluation) if cfg.method.name == "dense" else None
    if dense_own is None:
        compressed.model = None  # free the compressed model before a dense one is loaded
        if prepared.device.type == "cuda":
            torch.cuda.empty_cache()
    compute = functools.partial(_evaluate_dense, cfg.model, cfg.eval, prepared, calibrated.eval_tokens)
    dense = dense_baseline(cfg, compute, dense_own, texts=calibrated.eval_tokens)
    job.record["dense"] = {"metrics": dense["metrics"], "key": dense["key"], "reused": dense["reused"]}
    job.record["caches"]["dense_baseline"] = {"reused": dense["reused"], "key": dense["key"]}
    job.record["deltas"] = deltas(own.metrics, dense["metrics"])


def record(evaluated: Evaluated, calib: CalibrationSet, job: JobState) -> None:
    """Mark the record ``ok`` with the job's figures and log them, with every stage's time, to the W&B run
    (``job.run``, opened before :func:`load`), and the calibration manifest as an artifact."""
    job.record.update(status="ok", metrics=evaluated.metrics, evaluation=evaluated.evaluation)
    job.run.log({**evaluated.metrics, **{f"time/{k}": v for k, v in job.timer.timings.items()}})
    if job.run.run is not None:
        job.run.log_artifact(job.folder / "calibration.json",
                             f"calibration-{calib.source}-s{calib.seed}-{calib.token_sha256[:12]}", "calibration-set")
        if (job.folder / "items.npz").exists():  # issue 27 item 4: per-item zero-shot records
            job.run.log_artifact(job.folder / "items.npz", f"items-{job.folder.name}", "zeroshot-items")
