"""Shared fixtures: a tiny Llama built from a config, a word-level tokenizer, synthetic documents.

Nothing here downloads anything; the end-to-end tests (marked ``e2e``) use the embedded real model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

WORDS = (
    "the of and to in a is was for on as by with he it at from his an were are which this be that "
    "or had first one their its new after who they two her she been other when there all during into "
    "school time may years more most only over city some world would where later up such used many "
    "can state about national out known university united then made river war film game team season"
).split()


def make_text(rng: random.Random, n_words: int) -> str:
    """Deterministic pseudo-prose of ``n_words`` words from :data:`WORDS`."""
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


class WordTokenizer:
    """Whitespace tokenizer: one token per word, so token counts are exact in tests."""

    eos_token_id = 1

    def __init__(self):
        self.vocab = {w: i + 2 for i, w in enumerate(WORDS)}

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[self.vocab.get(w, 0) for w in t.split()] for t in texts]}


@pytest.fixture
def word_tokenizer():
    return WordTokenizer()


def build_tiny_model_dir(folder: Path, hidden: int = 64, seed: int = 0, bos: bool = False) -> Path:
    """Save a randomly initialised 2-layer Llama and a matching fast word-level tokenizer
    (``bos``: the tokenizer's BOS token is ``[EOS]``, id 1; otherwise it has none)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[EOS]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", eos_token="[EOS]", **({"bos_token": "[EOS]"} if bos else {})
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny_llama"))


def write_jsonl(path: Path, docs: list[str]) -> Path:
    with open(path, "w") as handle:
        for i, text in enumerate(docs):
            handle.write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")
    return path


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """60 documents of 150-400 words as a JSON-lines file."""
    rng = random.Random(0)
    return write_jsonl(tmp_path / "corpus.jsonl", [make_text(rng, rng.randint(150, 400)) for _ in range(60)])


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """An empty calib_sweep cache, so no test touches the user's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CALIB_SWEEP_CACHE", str(cache))
    return cache


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own folder, so relative outputs (outputs/, multirun/.index) stay there."""
    monkeypatch.chdir(tmp_path)
