"""One job: load -> calibrate -> compress -> evaluate -> record.

A job is a pure function of its resolved config: rerunning it from ``results.json["config"]`` on the
same hardware gives the same numbers.  Every cheap check runs before any weights are loaded
(:func:`validate`), so bad input fails in seconds with one clear line.

``results.json`` keys: ``status`` ("ok" or "failed"), ``config`` (resolved), ``metrics``
(``perplexity/<text>``), ``evaluation`` (perplexity protocols), ``compression`` (verification
figures), ``calibration`` (the manifest), ``timings`` (seconds per stage), ``memory`` (peak bytes),
``versions``, ``wandb``, and for failures ``error``, ``error_type``, ``stage``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from calib_sweep import __version__, methods, models
from calib_sweep.data import draw_calibration_set, load_documents, split_documents, validate_samples, validate_source
from calib_sweep.data.sampling import tokenize_documents
from calib_sweep.errors import ConfigError
from calib_sweep.evaluation import perplexity
from calib_sweep.tracking import WandbRun, write_results

log = logging.getLogger(__name__)

_LIBRARIES = [
    "torch", "transformers", "llmcompressor", "compressed-tensors", "datasets", "hydra-core",
    "omegaconf", "wandb", "lm-eval", "accelerate", "numpy",
]


def versions() -> dict[str, str | None]:
    """Versions of Python, calib_sweep and the libraries that shape the numbers."""
    found: dict[str, str | None] = {"python": platform.python_version(), "calib_sweep": __version__}
    for name in _LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


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
    """Checks that need no file, no network and no weights.

    Raises:
        ConfigError: the first invalid value, named with its fix.
    """
    methods.validate_method(cfg.method)
    validate_samples(cfg.samples.n_samples, cfg.samples.seq_len, cfg.seed)
    validate_source(cfg.dataset)
    models.resolve_dtype(cfg.dtype, models.resolve_device(cfg.device))
    ppl = cfg.eval.perplexity
    if isinstance(ppl.seq_len, bool) or not isinstance(ppl.seq_len, int) or ppl.seq_len < 2:
        raise ConfigError(f"eval.perplexity.seq_len={ppl.seq_len!r} must be an integer >= 2. Fix: e.g. 512.")
    if ppl.max_windows is not None and (not isinstance(ppl.max_windows, int) or ppl.max_windows < 1):
        raise ConfigError(f"eval.perplexity.max_windows={ppl.max_windows!r} must be >= 1 or null (all). Fix: e.g. 16.")


def _eval_sources(cfg: DictConfig) -> dict[str, Any]:
    """Dataset configs of the perplexity texts: the job's own source or ``conf/dataset/<name>.yaml``."""
    conf_dir = Path(__file__).parent / "conf" / "dataset"
    sources = {}
    for name in cfg.eval.perplexity.texts:
        if name == cfg.dataset.name:
            sources[name] = cfg.dataset
            continue
        path = conf_dir / f"{name}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in conf_dir.glob("*.yaml"))
            raise ConfigError(f"eval.perplexity.texts names {name!r}, which is not a dataset config. Fix: use one of {known}.")
        sources[name] = OmegaConf.load(path)
        validate_source(sources[name])
    return sources


def run_job(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Run one job and write ``output_dir/results.json``.

    On failure a failure record (``status: "failed"``, error, stage) is written instead, then the
    exception is re-raised; other jobs' folders are never touched.

    Returns:
        The record written to ``results.json``.
    """
    output_dir = Path(output_dir)
    stages = _Stages()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    record: dict[str, Any] = {"status": "running", "config": resolved, "versions": versions()}
    run: WandbRun | None = None
    device = None
    try:
        with stages("validate"):
            validate(cfg)
            device = models.resolve_device(cfg.device)
            dtype = models.resolve_dtype(cfg.dtype, device)
            eval_sources = _eval_sources(cfg)

        with stages("prepare"):  # config and tokenizer only: the embedded model is fetched once here
            model_config = models.load_config(cfg.model)
            methods.validate_method(cfg.method, models.linear_shapes(model_config))
            validate_samples(
                cfg.samples.n_samples, cfg.samples.seq_len, cfg.seed, getattr(model_config, "max_position_embeddings", None)
            )
            tokenizer = models.load_tokenizer(cfg.model)

        with stages("calibrate"):
            docs = load_documents(cfg.dataset)
            calib_docs, _ = split_documents(docs, float(cfg.dataset.heldout_fraction))
            calib = draw_calibration_set(
                calib_docs, tokenizer, int(cfg.samples.n_samples), int(cfg.samples.seq_len), int(cfg.seed),
                source=cfg.dataset.name, permutation_seed=int(cfg.dataset.get("permutation_seed", 0)),
                allow_fewer=bool(cfg.samples.get("allow_fewer", False)),
            )
            record["calibration"] = calib.manifest()
            eval_tokens = {}
            for name, source_cfg in eval_sources.items():
                held = split_documents(load_documents(source_cfg), float(source_cfg.heldout_fraction))[1]
                if not held:
                    raise ConfigError(f"dataset {name!r} has no held-out document. Fix: set its heldout_fraction > 0.")
                eval_tokens[name] = torch.tensor(
                    [t for ids in tokenize_documents(held, tokenizer) for t in ids], dtype=torch.long
                )
            log.info(
                "calibration set: %s seed=%d, %d x %d tokens from %d documents (sha256 %s)",
                calib.source, calib.seed, calib.n_samples, calib.seq_len, calib.documents_used, calib.token_sha256[:12],
            )

        run = WandbRun(cfg.get("logger"), resolved, output_dir, name=output_dir.name)
        record["wandb"] = run.info

        with stages("load"):
            model = models.load_model(cfg.model, device, dtype)
            before = methods.fingerprint(model)

        with stages("compress"):
            model = methods.compress(model, calib.input_ids.to(device), cfg.method)

        with stages("verify"):
            record["compression"] = methods.verify(model, cfg.method, before)
            log.info("compression check: %s", record["compression"]["summary"])

        metrics: dict[str, float] = {}
        evaluation: dict[str, Any] = {}
        with stages("evaluate"):
            ppl_cfg = cfg.eval.perplexity
            for name, tokens in eval_tokens.items():
                result = perplexity(
                    model, tokens, int(ppl_cfg.seq_len), ppl_cfg.max_windows, int(ppl_cfg.batch_size), text=f"{name}/heldout"
                )
                metrics[f"perplexity/{name}"] = result["perplexity"]
                evaluation[f"perplexity/{name}"] = result["protocol"]
                log.info("perplexity/%s = %.3f", name, result["perplexity"])
        summary = record["compression"]["summary"]
        if "mean_sparsity" in summary:
            metrics["compression/mean_sparsity"] = summary["mean_sparsity"]
        record.update(status="ok", metrics=metrics, evaluation=evaluation)
        run.log({**metrics, **{f"time/{k}": v for k, v in stages.timings.items()}})
    except BaseException as exc:
        record.update(
            status="failed",
            stage=stages.current,
            error_type=type(exc).__name__,
            error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        record["timings"] = stages.timings
        record["memory"] = peak_memory(device)
        (output_dir / "traceback.txt").parent.mkdir(parents=True, exist_ok=True)
        (output_dir / "traceback.txt").write_text("".join(traceback.format_exception(exc)))
        write_results(output_dir, record)
        if run is not None:
            run.finish(exit_code=1)
        raise
    record["timings"] = stages.timings
    record["memory"] = peak_memory(device)
    write_results(output_dir, record)
    run.finish()
    return record


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, prefixed by its type when it is not ours."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {text}"


def report_failure(exc: BaseException, output_dir: Path) -> None:
    """Print the one-line reason for a failed job to stderr (the traceback is in ``traceback.txt``)."""
    print(f"calib_sweep: error: {one_line(exc)}  [job folder: {output_dir}]", file=sys.stderr)
