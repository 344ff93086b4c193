"""A model's architecture without its weights: its ``config.json``, or ``model.config`` for ``init: random``.

:func:`load_config` is what validation reads before any weight loads (layer shapes for group sizes
and N:M patterns, ``max_position_embeddings`` for ``seq_len``, the layer count for selection).
"""

from __future__ import annotations

from typing import Any

import torch

from calib_sweep.errors import ConfigError
from calib_sweep.models.sources import model_path, pretrained_kwargs
from calib_sweep.models.validation import is_random_init, plain, validate_model

#: Config fields of the source's ``config.json`` that describe a checkpoint file rather than the architecture.
_CHECKPOINT_FIELDS = ("_name_or_path", "_model_name_or_path", "transformers_version", "dtype", "torch_dtype",
                      "quantization_config", "_commit_hash")


def load_config(model_cfg: Any):
    """Load only the model's ``config.json`` (no weights): used for validation before loading.

    With ``init: random`` the architecture is :func:`random_init_config` (``model.config`` fields,
    over the source's ``config.json`` unless ``source: config``).
    """
    from transformers import AutoConfig

    if is_random_init(model_cfg):
        return random_init_config(model_cfg)
    return AutoConfig.from_pretrained(model_path(model_cfg), **pretrained_kwargs(model_cfg))


def random_init_config(model_cfg: Any):
    """The architecture of a ``model.init=random`` model: a ``transformers`` config, no weights read.

    ``source: config``: built from the ``model.config`` mapping alone (it names ``model_type``).
    Otherwise the source's ``config.json`` (embedded or pretrained), with ``model.config`` fields
    over it.  A ``num_hidden_layers`` smaller than ``layer_types`` cuts that list to match (the first
    decoder layers of the architecture, e.g. for timing a few layers of a 7B shape).

    Raises:
        ConfigError: unknown ``model_type`` or a field the config class refuses.
    """
    from transformers import AutoConfig

    validate_model(model_cfg)
    fields = dict(plain(model_cfg.get("config")) or {})
    base: dict[str, Any] = {}
    if model_cfg.source != "config":
        base = AutoConfig.from_pretrained(model_path(model_cfg), **pretrained_kwargs(model_cfg)).to_dict()
    merged = {k: v for k, v in {**base, **fields}.items() if k not in _CHECKPOINT_FIELDS}
    layers, types = merged.get("num_hidden_layers"), merged.get("layer_types")
    if isinstance(layers, int) and isinstance(types, list) and len(types) > layers:
        merged["layer_types"] = types[:layers]
    model_type = merged.pop("model_type", None)
    try:
        return AutoConfig.for_model(model_type, **merged)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"model.config of {model_cfg.get('name')!r} is not a valid {model_type!r} config: {str(exc).splitlines()[0]}"
        ) from None


def linear_shapes(config) -> dict[str, tuple[int, int]]:
    """Shapes ``(out_features, in_features)`` of every ``nn.Linear`` of a model, without weights.

    The model is built on the ``meta`` device from its config, so this costs no memory and works
    for 70B configs on a laptop.  Used to validate group sizes and N:M patterns before loading.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {
        name: (module.out_features, module.in_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
