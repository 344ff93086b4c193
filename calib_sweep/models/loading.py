"""Load stage: the causal LM's weights, from its checkpoint or drawn at random (``model.init=random``)."""

from __future__ import annotations

from typing import Any

import torch

from calib_sweep.models.architecture import load_config
from calib_sweep.models.random_init import random_model
from calib_sweep.models.sources import model_path, pretrained_kwargs
from calib_sweep.models.validation import check_dtype, declared_model_type, is_random_init


def load_model(model_cfg: Any, device: torch.device, dtype: torch.dtype):
    """Load the causal LM's weights in ``dtype`` onto ``device``, in eval mode.

    Before any weight is read, the dtype is checked against the model family (:func:`check_dtype`;
    a Hub id or local folder by the ``model_type`` of its ``config.json``).

    Raises:
        ConfigError: float16 on a model that overflows in it (Gemma-3).
    """
    from transformers import AutoModelForCausalLM

    known = declared_model_type(model_cfg) is not None or is_random_init(model_cfg)
    check_dtype(model_cfg, dtype, None if known else load_config(model_cfg))
    if is_random_init(model_cfg):
        return random_model(model_cfg, device, dtype)
    model = AutoModelForCausalLM.from_pretrained(model_path(model_cfg), dtype=dtype, **pretrained_kwargs(model_cfg))
    model.to(device)
    model.eval()
    return model
