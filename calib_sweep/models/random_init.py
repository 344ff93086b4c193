"""``model.init=random``: an architecture with seeded random weights, for timing and memory only.

``init: random`` (``model.init=random``; ``+model.init=random`` on configs without the key) builds the
architecture (:func:`calib_sweep.models.architecture.random_init_config`) with seeded random weights
instead of loading any: where real weights cannot travel (an air-gapped GPU machine).  Such a model
predicts nothing; ``results.json`` says so (:func:`weights_record`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from calib_sweep import assets
from calib_sweep.models.architecture import random_init_config
from calib_sweep.models.tokenization import load_tokenizer, tokenizer_location
from calib_sweep.models.validation import is_random_init, plain


def random_model(model_cfg: Any, device: torch.device, dtype: torch.dtype):
    """The architecture of :func:`random_init_config` with random weights, in eval mode on ``device``.

    The weights are the architecture's own initialisation in ``transformers`` (Llama: normal with
    ``initializer_range`` 0.02, norms 1), drawn on ``device`` directly (a 7B shape never passes
    through host memory) from a generator seeded with ``model.init_seed``; the global random state
    is left as it was.  The same seed, device type and dtype give the same weights (CPU and CUDA
    draw different numbers).  Timing and memory only: such a model predicts nothing.
    """
    from transformers import AutoModelForCausalLM

    config = random_init_config(model_cfg)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(model_cfg.get("init_seed", 0)))
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    # llmcompressor's oneshot loads a processor from the model's _name_or_path (empty for a model made
    # from a config) even for tokenized data: point it at a folder like a checkpoint's, minus weights.
    model.config._name_or_path = str(random_init_folder(model_cfg))
    model.eval()
    return model


def random_init_folder(model_cfg: Any) -> Path:
    """A folder with the random-init model's ``config.json`` and its (cut) tokenizer, and no weights.

    It stands where a checkpoint folder would for code that reads one by the model's ``_name_or_path``
    (llmcompressor's ``oneshot`` loads its processor from there).  Written once per (architecture,
    tokenizer) under ``cache_dir()/models/random-init-*``, atomically (a temporary name, then a rename).
    """
    import hashlib
    import json

    config = random_init_config(model_cfg)
    ident = {"config": config.to_dict(), "tokenizer": tokenizer_location(model_cfg)}
    if Path(ident["tokenizer"]).is_dir():
        ident["files"] = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime))
                                for f in Path(ident["tokenizer"]).iterdir() if f.is_file())
    key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = assets.cache_dir() / "models" / f"random-init-{key}"
    if (folder / "config.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    config.save_pretrained(tmp)
    load_tokenizer(model_cfg).save_pretrained(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "config.json").is_file():
            raise
    return folder


def weights_record(model_cfg: Any) -> dict[str, Any]:
    """What ``results.json`` says about the weights: ``{"weights": "pretrained"}``, or for
    ``model.init=random`` ``{"weights": "random", "random_init": {seed, architecture, tokenizer,
    vocabulary rule, ...}}``.  Reads no file and never raises (it is written before validation)."""
    if not is_random_init(model_cfg):
        return {"weights": "pretrained"}
    try:
        fields = dict(plain(model_cfg.get("config")) or {})
    except Exception:  # a malformed config is reported by validation
        fields = {}
    return {
        "weights": "random",
        "random_init": {
            "purpose": "timing and memory only: the weights are random, so its metrics measure nothing",
            "seed": model_cfg.get("init_seed", 0),
            "architecture": ("model.config (shipped in conf/model)" if model_cfg.get("source") == "config"
                             else f"config.json of the {model_cfg.get('source')} model, model.config fields over it"),
            "config_fields": fields,
            "tokenizer": model_cfg.get("tokenizer") or "the model's own",
            "vocabulary": "a tokenizer with more tokens than the model's vocab_size is cut to its first vocab_size "
                          "tokens (BPE: and the merges among them); token ids are never clamped",
            "same_weights_for": "the same seed, architecture, device type and dtype",
        },
    }
