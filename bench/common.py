"""Shared set-up for the bench scripts: the embedded model, a calibration set, timing helpers."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calib_sweep import models  # noqa: E402
from calib_sweep.data import build_calibration_set, dataset_config, heldout_token_ids  # noqa: E402
from calib_sweep.data.cli import compose  # noqa: E402


def setup(overrides: list[str]):
    """(cfg, tokenizer, device, dtype) for the job config ``overrides`` compose to."""
    cfg = compose(overrides)
    device = models.resolve_device(cfg.device)
    return cfg, models.load_tokenizer(cfg.model), device, models.resolve_dtype(cfg.dtype, device)


def calibration(cfg, tokenizer, n_samples=None, seq_len=None):
    """The job's calibration set (optionally resized): ``int64`` ``[n_samples, seq_len]``."""
    return build_calibration_set(
        cfg.dataset, tokenizer, int(n_samples or cfg.samples.n_samples), int(seq_len or cfg.samples.seq_len), int(cfg.seed),
        bos_token_id=models.bos_token_id(cfg.model, tokenizer),
        separator_token_id=models.document_separator(cfg.model, tokenizer),
    )


def heldout(cfg, tokenizer, name="offline_wikipedia"):
    """Held-out token stream of a source, ``int64`` ``[n_tokens]``."""
    return heldout_token_ids(dataset_config(name), tokenizer, separator_token_id=models.document_separator(cfg.model, tokenizer))


@contextlib.contextmanager
def timer(into: dict, key: str):
    """Store the wall-clock seconds of the block in ``into[key]``."""
    start = time.perf_counter()
    yield
    into[key] = time.perf_counter() - start


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far, in bytes (Linux ru_maxrss is in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def threads() -> str:
    return f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
