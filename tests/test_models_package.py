"""The ``calib_sweep.models`` package (its face, its import order) and float16 on Gemma-3 (issue 24 item 5).

Gemma-3's activations overflow float16 (huggingface/transformers#36822): ``model=gemma3_270m
dtype=float16`` is refused at validate, before weights load, and a job stops at its first NaN/Inf
figure (dense log-probabilities, ``kl_from_dense``) naming the dtype as the likely cause.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from calib_sweep import job, models
from calib_sweep.errors import CompressionError, ConfigError
from calib_sweep.methods.kl import TopKLogprobs, kl_from_reference, non_finite_error, reference_logprobs
from helpers import compose_cfg

PACKAGE = Path(models.__file__).resolve().parent

#: The public names of the single-module ``calib_sweep/models.py`` (main at 9ddafe3): callers keep using them.
OLD_PUBLIC = [
    "CONVERSION_VERSION", "INITS", "align_special_tokens", "bos_token_id", "document_separator", "fit_tokenizer",
    "gguf_special_tokens", "is_random_init", "linear_shapes", "load_config", "load_model", "load_tokenizer",
    "model_identity", "model_path", "random_init_config", "random_init_folder", "random_model", "resolve_device",
    "resolve_dtype", "special_token_ids", "tokenizer_location", "validate_model", "weights_record",
]


def test_face_reexports_every_public_name_of_the_old_module():
    assert [name for name in OLD_PUBLIC if not callable(getattr(models, name, None))
            and name not in ("CONVERSION_VERSION", "INITS")] == []
    assert models.CONVERSION_VERSION == 2 and models.INITS == ("pretrained", "random")
    assert sorted(models.__all__) == sorted(set(models.__all__))
    assert set(OLD_PUBLIC) <= set(models.__all__)


def _internal_imports(path: Path) -> set[str]:
    """The ``calib_sweep.models.<module>`` names one module imports, anywhere in it (function bodies too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("calib_sweep.models."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("calib_sweep.models.")}
    return found


def test_modules_import_in_one_direction_and_stay_small():
    """Each module imports only modules listed before it in the face's docstring order; none is long."""
    order = ["gguf", "validation", "sources", "architecture", "tokenization", "random_init", "loading", "storage",
             "logits"]
    files = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert files == sorted(order)
    for position, name in enumerate(order):
        path = PACKAGE / f"{name}.py"
        assert _internal_imports(path) <= set(order[:position]), name
        assert len(path.read_text().splitlines()) < 350, name
        assert ast.get_docstring(ast.parse(path.read_text())), name


def _one_line_config_error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        job.validate(compose_cfg(overrides))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_float16_on_gemma3_is_refused_at_validate():
    message = _one_line_config_error(["model=gemma3_270m", "dtype=float16"])
    assert message.startswith("model 'gemma-3-270m' (gemma3_text) overflows in float16")
    assert message.endswith("Fix: dtype=bfloat16 or dtype=float32.")
    # The random-weight Gemma-3 shape says its model_type in model.config: refused the same way.
    assert "(gemma3_text) overflows in float16" in _one_line_config_error(["model=gemma3_270m_random", "dtype=float16"])


@pytest.mark.parametrize("overrides", [
    ["model=gemma3_270m", "dtype=bfloat16"],
    ["model=gemma3_270m", "dtype=float32"],
    ["model=smollm2_135m", "dtype=float16"],  # llama: float16 stays allowed
])
def test_other_dtypes_and_models_pass_validate(overrides):
    job.validate(compose_cfg(overrides))  # no error


def test_check_dtype_reads_model_type_of_a_local_folder(tmp_path):
    """A local/Hub Gemma-3 declares nothing in its model config: its config.json's model_type decides,
    at load, before any weight is read (the folder has none: reaching from_pretrained would be an OSError)."""
    from transformers import Gemma3TextConfig

    Gemma3TextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=8).save_pretrained(tmp_path)
    cfg = OmegaConf.create({"name": "my-gemma", "source": "pretrained", "path": str(tmp_path)})
    assert models.declared_model_type(cfg) is None
    models.check_dtype(cfg, torch.float16)  # unknown without the file: validate lets it pass
    with pytest.raises(ConfigError, match=r"^model 'my-gemma' \(gemma3_text\) overflows in float16"):
        models.load_model(cfg, torch.device("cpu"), torch.float16)
    with pytest.raises(OSError):  # bfloat16 goes on to read weights, and there are none
        models.load_model(cfg, torch.device("cpu"), torch.bfloat16)


@pytest.mark.e2e
def test_embedded_model_types_match_the_converted_folders():
    conf = PACKAGE.parent / "conf" / "model"
    for name in ("smollm2_135m", "gemma3_270m"):
        model_cfg = OmegaConf.load(conf / f"{name}.yaml")
        config = json.loads((Path(models.model_path(model_cfg)) / "config.json").read_text())
        assert models.EMBEDDED_MODEL_TYPES[model_cfg.asset] == config["model_type"] == models.declared_model_type(model_cfg)


class _FixedLogits(torch.nn.Module):
    """A stand-in causal LM whose logits are ``logits[:L]`` for every window, with parameters in ``dtype``."""

    def __init__(self, logits: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, dtype=dtype))
        self.logits = logits

    def forward(self, input_ids, use_cache=False):
        return SimpleNamespace(logits=self.logits[: input_ids.shape[1]].unsqueeze(0))


IDS = torch.zeros(2, 3, dtype=torch.long)


def test_finite_kl_is_unchanged():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]] * 3)
    dense = reference_logprobs(_FixedLogits(logits, torch.float32), IDS, top_k=None)
    compressed = _FixedLogits(torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 3), torch.float16)
    p, q = torch.softmax(logits[0], -1), torch.softmax(logits[0].flip(0), -1)
    assert kl_from_reference(compressed, IDS, dense) == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-5)


@pytest.mark.parametrize("top_k", [None, 2])
def test_nan_kl_stops_the_job_naming_float16(top_k):
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]] * 3)
    dense = reference_logprobs(_FixedLogits(logits, torch.float32), IDS, top_k=top_k)
    overflowed = logits.clone()
    overflowed[1, 2] = float("inf")  # one position's logits overflowed: log_softmax gives NaN there
    with pytest.raises(CompressionError) as err:
        kl_from_reference(_FixedLogits(overflowed, torch.float16), IDS, dense)
    assert str(err.value) == "kl_from_dense is nan: float16 overflows on this model; use dtype=bfloat16 or float32"


def test_nan_dense_logprobs_stop_before_compression():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]] * 3)
    logits[0, 0] = float("nan")
    with pytest.raises(CompressionError, match=r"^the dense model's log-probabilities on the KL windows is nan: "
                                               r"float16 overflows on this model; use dtype=bfloat16 or float32$"):
        reference_logprobs(_FixedLogits(logits, torch.float16), IDS)


def test_non_finite_error_names_the_dtype():
    assert str(non_finite_error("kl_from_dense", float("inf"), torch.bfloat16)) == (
        "kl_from_dense is inf: the model overflowed in bfloat16; use dtype=float32")
    assert "in float32, so not a 16-bit overflow" in str(non_finite_error("kl_from_dense", float("nan"), torch.float32))
    # A top-k reference passed in directly: a NaN in it makes the KL NaN too.
    bad = TopKLogprobs(torch.full((2, 3, 2), float("nan")), torch.zeros(2, 3, 2, dtype=torch.long))
    with pytest.raises(CompressionError, match="^kl_from_dense is nan: the model overflowed in bfloat16"):
        kl_from_reference(_FixedLogits(torch.zeros(3, 4), torch.bfloat16), IDS, bad)
