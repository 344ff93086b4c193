"""Compress stage: a method config compresses a model in place, then the result is verified.

A method is one module of this package that registers itself with :func:`register_method` (name, kind,
validate, compress, optional llmcompressor recipe, verify and save note), plus its
``conf/method/<name>.yaml``: ``dense``, ``rtn``, ``gptq``, ``awq``, ``spqr``, ``sparsegpt``, ``wanda``,
``magnitude`` (each module's docstring gives the paper and the config fields).  Shared parts:

* :mod:`~calib_sweep.methods.registry`: :class:`Method`, :func:`validate_method`, :func:`compress`
  (drops padding before any statistic is accumulated), :data:`KINDS`, :data:`DATA_FREE`;
* :mod:`~calib_sweep.methods.targets`: the layers compressed, N:M structures, weight fingerprints;
* :mod:`~calib_sweep.methods.validation`: checks of values several methods share;
* :mod:`~calib_sweep.methods.llmc`: the llmcompressor runner; :mod:`~calib_sweep.methods.optimum_backend`;
* :mod:`~calib_sweep.methods.hessian`: calibration sequences, Hessians, escalating damping;
* :mod:`~calib_sweep.methods.verification`: :func:`verify` (sparsity and N:M per pruned layer, distinct
  values per quantization group; a method that changed nothing is an error);
* :mod:`~calib_sweep.methods.saving`: :func:`save` (compressed-tensors formats, ``compression.json``);
* :mod:`~calib_sweep.methods.kl`: :func:`reference_logprobs`, :func:`kl_from_reference` (KL divergence of
  the compressed model from the dense one on held-out text);
* :mod:`~calib_sweep.methods.diagnostics`: per-layer figures.
"""

from __future__ import annotations

from calib_sweep.errors import CompressionError, ConfigError
from calib_sweep.methods.hessian import calibration_sequences
from calib_sweep.methods.kl import TopKLogprobs, kl_from_reference, reference_logprobs, reference_logprobs_cached
from calib_sweep.methods.llmc import IGNORE
from calib_sweep.methods.registry import (
    DATA_FREE, KINDS, METHODS, Method, build_recipe, captured_layers, compress, get_method, register_method,
    validate_method,
)
from calib_sweep.methods.registry import RECORD as _RECORD
from calib_sweep.methods.saving import SAVE_RECORD, save, sparsity_config
from calib_sweep.methods.targets import fingerprint, parse_structure, target_linears
from calib_sweep.methods.verification import _distinct_per_group, verify

# the built-in methods, each registering itself when imported (KINDS lists them in this order)
from calib_sweep.methods import dense, rtn, gptq, awq, spqr, sparsegpt, wanda, magnitude
from calib_sweep.methods.gptq import optimum_available

__all__ = [
    "KINDS", "DATA_FREE", "IGNORE", "METHODS", "Method", "register_method", "get_method", "parse_structure",
    "validate_method", "build_recipe", "compress", "fingerprint", "verify", "target_linears", "save",
    "sparsity_config", "SAVE_RECORD", "reference_logprobs", "reference_logprobs_cached", "kl_from_reference",
    "TopKLogprobs", "calibration_sequences", "captured_layers", "optimum_available", "CompressionError", "ConfigError",
]
