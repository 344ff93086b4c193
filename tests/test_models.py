"""Model loading helpers: the SentencePiece-BPE tokenizer rebuilt from a GGUF file, and BOS handling."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from calib_sweep import models
from calib_sweep.models import gguf as models_gguf
from calib_sweep.errors import ConfigError


def write_gguf(path, tokenizer_model: str = "llama"):
    """A weightless GGUF file with a 12-piece SentencePiece-BPE vocabulary.

    Pieces ``ab`` (score -5) and ``bc`` (score -1) compete on ``abc``: SentencePiece merges the pair
    whose merged piece scores higher, so ``abc`` is ``a`` + ``bc`` (an id-ordered merge list would
    give ``ab`` + ``c``).
    """
    import gguf

    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "a", "b", "c", "\u2581", "ab", "bc", "\u2581a", "\n"]
    scores = [0.0, 0.0, 0.0, 0.0, -10.0, -10.0, -10.0, -10.0, -5.0, -1.0, -3.0, 0.0]
    types = [3, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 4]  # control, unknown, normal, user-defined
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_sentencepiece_merges_follow_piece_scores(tmp_path):
    tokenizer = models_gguf._sentencepiece_bpe_tokenizer(write_gguf(tmp_path / "toy.gguf"))
    ids = tokenizer("abc abc\nabc").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["<bos>", "a", "bc", "\u2581a", "bc", "\n", "a", "bc"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "abc abc\nabc"
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id) == (2, 1, 0, 3)


def test_gguf_without_sentencepiece_vocabulary_is_left_to_transformers(tmp_path):
    assert models_gguf._sentencepiece_bpe_tokenizer(write_gguf(tmp_path / "bpe.gguf", tokenizer_model="gpt2")) is None


def test_bos_token_id_follows_prepend_bos(tmp_path):
    tokenizer = models_gguf._sentencepiece_bpe_tokenizer(write_gguf(tmp_path / "toy.gguf"))
    assert models.bos_token_id(OmegaConf.create({"name": "toy", "prepend_bos": True}), tokenizer) == 2
    assert models.bos_token_id(OmegaConf.create({"name": "toy", "prepend_bos": False}), tokenizer) is None
    assert models.bos_token_id(OmegaConf.create({"name": "toy"}), tokenizer) is None
    tokenizer.bos_token = None
    with pytest.raises(ConfigError, match="model.prepend_bos=true but the tokenizer of 'toy' has no BOS token"):
        models.bos_token_id(OmegaConf.create({"name": "toy", "prepend_bos": True}), tokenizer)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"prepend_bos": "maybe"}, "model.prepend_bos='maybe' must be true or false"),
        ({"trust_remote_code": 1}, "model.trust_remote_code=1 must be true or false"),
        ({"source": "hub"}, "model.source='hub' is unknown"),
    ],
)
def test_bad_model_flags_are_refused_without_io(override, message):
    good = {"name": "toy", "source": "embedded", "prepend_bos": False, "trust_remote_code": False}
    models.validate_model(OmegaConf.create(good))  # no error
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        models.validate_model(OmegaConf.create({**good, **override}))
