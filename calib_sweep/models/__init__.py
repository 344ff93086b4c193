"""Load stage: a causal LM and its tokenizer from a Hub id, a local folder or the embedded default.

Model configs (``conf/model/*.yaml``) have ``source: embedded`` (a registry asset converted once
from GGUF to a plain Hugging Face folder in the cache), ``source: pretrained`` (``path`` is a Hub id
or a local folder, passed to ``from_pretrained`` as is), or ``source: config`` (no checkpoint: the
architecture is the ``config`` mapping of the YAML file, for ``init: random``).  Every function takes
the ``model`` config group (``model_cfg``), never the whole job config.

This face only re-exports; the modules, in import order (each imports only those before it):

- :mod:`~calib_sweep.models.gguf`: GGUF -> Hugging Face conversion, SentencePiece-BPE rebuilding,
  the GGUF special tokens.
- :mod:`~calib_sweep.models.validation`: checks of ``model``, ``device`` and ``dtype`` without files
  (float16 refused on Gemma-3).
- :mod:`~calib_sweep.models.sources`: embedded / Hub / local paths, ``from_pretrained`` arguments,
  the identity of the weights for cache keys.
- :mod:`~calib_sweep.models.architecture`: ``config.json`` or ``model.config`` without weights,
  linear-layer shapes.
- :mod:`~calib_sweep.models.tokenization`: tokenizer loading and fitting, document separator, BOS.
- :mod:`~calib_sweep.models.random_init`: ``model.init=random`` weights, folder and record.
- :mod:`~calib_sweep.models.loading`: the weights, in the job's dtype, on its device.
- :mod:`~calib_sweep.models.storage`: how the base weights were stored (GGUF tensor types), and the
  warning when a quantization job's grid is at or near that one.
- :mod:`~calib_sweep.models.logits`: the decoder's hidden states and the LM head as a function, so
  perplexity, KL and zero-shot scoring take logits a chunk of positions at a time.
"""

from calib_sweep.models.architecture import linear_shapes, load_config, random_init_config
from calib_sweep.models.gguf import (
    CONVERSION_VERSION,
    EMBEDDED_MODEL_TYPES,
    align_special_tokens,
    embedded_folder,
    gguf_special_tokens,
)
from calib_sweep.models.loading import load_model
from calib_sweep.models.logits import split_head
from calib_sweep.models.random_init import random_init_folder, random_model, weights_record
from calib_sweep.models.storage import describe as describe_storage, grid_warning, weights_storage
from calib_sweep.models.sources import model_identity, model_path, pretrained_kwargs
from calib_sweep.models.tokenization import (
    bos_token_id,
    document_separator,
    fit_tokenizer,
    load_tokenizer,
    special_token_ids,
    tokenizer_location,
)
from calib_sweep.models.validation import (
    FLOAT16_OVERFLOWS,
    INITS,
    check_dtype,
    declared_model_type,
    is_random_init,
    resolve_device,
    resolve_dtype,
    validate_model,
)

__all__ = [
    "CONVERSION_VERSION", "EMBEDDED_MODEL_TYPES", "FLOAT16_OVERFLOWS", "INITS", "align_special_tokens",
    "bos_token_id", "check_dtype", "declared_model_type", "describe_storage", "document_separator", "embedded_folder",
    "fit_tokenizer", "gguf_special_tokens", "grid_warning", "is_random_init", "linear_shapes", "load_config", "load_model",
    "load_tokenizer", "model_identity", "model_path", "pretrained_kwargs", "random_init_config",
    "random_init_folder", "random_model", "resolve_device", "resolve_dtype", "special_token_ids", "split_head",
    "tokenizer_location", "validate_model", "weights_record", "weights_storage",
]
