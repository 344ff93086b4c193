"""Chat-format calibration data (issue 24, item 2): ``dataset.format=chat`` renders a record's
messages with the tokenizer's chat template (or ``dataset.chat_template``); a non-string field without
it is refused in one line; null and blank texts are skipped and counted in the manifest."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from calib_sweep import models
from calib_sweep.data import build_calibration_set, chat, heldout_token_ids
from calib_sweep.data.sampling import tokenize_documents, token_stream
from calib_sweep.data.sources import load_documents
from calib_sweep.errors import ConfigError
from calib_sweep.tracking import config_key
from conftest import WORDS
from helpers import compose_cfg

CONF = Path(__file__).resolve().parent.parent / "calib_sweep" / "conf"

#: A ChatML-style template (the shape of SmolLM2-Instruct's, without its default system turn).
CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 1, 2, 3 of the tiny tokenizer


def tiny_chat_tokenizer(template: str | None = CHATML):
    """A fast word-level tokenizer with ChatML special tokens (ids 1-3) and ``template`` as its chat
    template; ``<|``, ``|>`` and the tokens' names are ordinary words, so a special-token string
    tokenized as text has ids of its own."""
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<|", "|>", "endoftext", "im_start", "im_end", "user", "assistant", "system", *WORDS]
    vocab = {"[UNK]": 0, **{s: i + 1 for i, s in enumerate(SPECIALS)}, **{w: i + 4 for i, w in enumerate(words)}}
    backend = Tokenizer(tok_models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+|[^\w\s]+: "<|im_start|>" -> "<|", "im_start", "|>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="<|endoftext|>",
                                        additional_special_tokens=SPECIALS[1:])
    tokenizer.chat_template = template
    return tokenizer


def ids(tokenizer, words: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(w) for w in words.split()]


CONVERSATIONS = [
    [{"role": "user", "content": "the river"}, {"role": "assistant", "content": "a city"}],
    [{"role": "user", "content": "was there a war"}, {"role": "assistant", "content": "  one war  "}],
]


def chat_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def chat_source(path: Path, **fields) -> OmegaConf:
    return OmegaConf.create({"name": "chat", "loader": "jsonl", "path": str(path), "text_field": "messages",
                             "format": "chat", "chat_template": None, "heldout_fraction": 0.0, **fields})


def test_jsonl_messages_are_rendered_with_the_chat_template(tmp_path):
    tokenizer = tiny_chat_tokenizer()
    path = chat_jsonl(tmp_path / "chat.jsonl", [{"id": f"c{i}", "messages": m} for i, m in enumerate(CONVERSATIONS)])
    docs = load_documents(chat_source(path))
    assert [d.doc_id for d in docs] == ["c0", "c1"] and docs[0].messages == tuple(CONVERSATIONS[0])
    assert chat.render(docs[0].messages, tokenizer, CHATML) == (
        "<|im_start|>user\nthe river<|im_end|>\n<|im_start|>assistant\na city<|im_end|>\n")
    tokens = tokenize_documents(docs, tokenizer)
    # The template's markup is special (2 = <|im_start|>, 3 = <|im_end|>), then the separator (1).
    assert tokens[0] == [2, *ids(tokenizer, "user the river"), 3, 2, *ids(tokenizer, "assistant a city"), 3, 1]
    assert tokens[1] == [2, *ids(tokenizer, "user was there a war"), 3, 2, *ids(tokenizer, "assistant one war"), 3, 1]


def test_chat_contents_holding_special_token_strings_stay_text(tmp_path):
    tokenizer = tiny_chat_tokenizer()
    messages = [{"role": "user", "content": "the <|endoftext|> river <|im_start|>"}]
    (tokens,) = chat.encode_conversations([messages], tokenizer, CHATML)
    assert tokens == [2, *ids(tokenizer, "user the <| endoftext |> river <| im_start |>"), 3]
    # Tokenizing the whole rendering (the usual way) would make them control tokens: the fault fixed.
    whole = tokenizer(chat.render(messages, tokenizer, CHATML), add_special_tokens=False)["input_ids"]
    assert whole.count(1) == 1 and whole.count(2) == 2


def test_a_trimming_template_and_a_leading_bos(tmp_path):
    """Gemma's template trims contents and starts with bos_token: contents are still found and tokenized
    as text, and the template's BOS is dropped (calib_sweep puts its own in front of a row)."""
    tokenizer = tiny_chat_tokenizer()
    tokenizer.bos_token = "<|im_start|>"
    template = "{{ bos_token }}{% for m in messages %}{{ m['role'] }} {{ m['content'] | trim }}<|im_end|>{% endfor %}"
    segments, found = chat.conversation_segments(CONVERSATIONS[1], tokenizer, template)
    assert found and segments == [("user ", False), ("was there a war", True), ("<|im_end|>assistant ", False),
                                  ("one war", True), ("<|im_end|>", False)]
    (tokens,) = chat.encode_conversations([CONVERSATIONS[1]], tokenizer, template)
    assert tokens == [*ids(tokenizer, "user was there a war"), 3, *ids(tokenizer, "assistant one war"), 3]
    assert chat.template_record(load_documents(chat_source(chat_jsonl(
        tmp_path / "c.jsonl", [{"messages": CONVERSATIONS[1]}]), chat_template=template)), tokenizer)["leading_bos_dropped"] is True


def test_manifest_records_format_and_template_hash(tmp_path):
    tokenizer = tiny_chat_tokenizer()
    rows = [{"id": f"c{i}", "messages": CONVERSATIONS[i % 2]} for i in range(40)]
    path = chat_jsonl(tmp_path / "chat.jsonl", rows)
    calib = build_calibration_set(chat_source(path), tokenizer, 4, 16, 0)
    manifest = calib.manifest()
    assert manifest["format"] == "chat" and manifest["documents_skipped_empty"] == 0
    assert manifest["chat_template"] == {"sha256": hashlib.sha256(CHATML.encode()).hexdigest(), "source": "tokenizer",
                                         "leading_bos_dropped": False}
    assert (calib.input_ids == 2).sum() > 0  # the template's markup is in the rows
    plain = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    other = build_calibration_set(chat_source(path, chat_template=plain), tokenizer, 4, 16, 0)
    assert other.manifest()["chat_template"] == {"sha256": hashlib.sha256(plain.encode()).hexdigest(),
                                                 "source": "dataset.chat_template", "leading_bos_dropped": False}
    assert not ((other.input_ids == 2) | (other.input_ids == 3)).any()  # no markup: contents only
    # The token stream cache keeps the two renderings apart.
    docs = load_documents(chat_source(path))
    plain_docs = load_documents(chat_source(path, chat_template=plain))
    assert token_stream(docs, tokenizer)[2]["key"] != token_stream(plain_docs, tokenizer)[2]["key"]


def test_messages_without_format_chat_are_one_error_line(tmp_path):
    path = chat_jsonl(tmp_path / "chat.jsonl", [{"id": "c0", "messages": CONVERSATIONS[0]}])
    with pytest.raises(ConfigError) as err:
        load_documents(chat_source(path, format="text"))
    message = str(err.value)
    assert "\n" not in message and f"{path}:1" in message
    assert "dataset.text_field='messages' holds a list, not a string" in message and "Fix: dataset.format=chat" in message
    numbers = chat_jsonl(tmp_path / "n.jsonl", [{"text": 12}])
    with pytest.raises(ConfigError, match=r"dataset.text_field='text' holds a int, not a string .*dataset.format=chat"):
        load_documents(OmegaConf.create({"name": "n", "loader": "jsonl", "path": str(numbers), "heldout_fraction": 0.0}))
    with pytest.raises(ConfigError, match=r"holds a string, but dataset.format=chat reads a list"):
        load_documents(chat_source(chat_jsonl(tmp_path / "s.jsonl", [{"messages": "the river"}])))
    with pytest.raises(ConfigError, match=r"message 1 of dataset.text_field='messages' is not a .*content null"):
        load_documents(chat_source(chat_jsonl(tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                                                     {"role": "assistant", "content": None}]}])))


def test_null_and_blank_texts_are_skipped_and_counted(tmp_path, word_tokenizer):
    rows = [{"id": "a", "text": "the river " * 40}, {"id": "b", "text": None}, {"id": "c", "text": ""},
            {"id": "d", "text": "  \n "}, {"id": "e", "text": "a city " * 40}]
    path = chat_jsonl(tmp_path / "t.jsonl", rows)
    source = OmegaConf.create({"name": "t", "loader": "jsonl", "path": str(path), "heldout_fraction": 0.0})
    docs = load_documents(source)
    assert [d.doc_id for d in docs] == ["a", "e"] and docs.skipped_empty == 3
    assert all("None" not in d.text for d in docs)
    manifest = build_calibration_set(source, word_tokenizer, 2, 16, 0).manifest()
    assert manifest["documents_skipped_empty"] == 3 and manifest["format"] == "text" and "chat_template" not in manifest
    # Conversations with blank contents (or null messages) are empty too.
    chats = chat_jsonl(tmp_path / "c.jsonl", [{"messages": CONVERSATIONS[0]}, {"messages": None},
                                              {"messages": [{"role": "user", "content": " "}]}])
    assert load_documents(chat_source(chats)).skipped_empty == 2
    with pytest.raises(ConfigError, match=r"holds no document \(2 empty ones skipped\)"):
        load_documents(OmegaConf.create({"name": "e", "loader": "jsonl", "path": str(chat_jsonl(
            tmp_path / "e.jsonl", [{"text": None}, {"text": " "}])), "heldout_fraction": 0.0}))


def test_a_tokenizer_without_chat_template_names_the_fix(tmp_path):
    path = chat_jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in CONVERSATIONS * 10])
    with pytest.raises(ConfigError, match=r"needs a chat template, but the tokenizer .* has none.*Fix: dataset.chat_template="):
        build_calibration_set(chat_source(path), tiny_chat_tokenizer(template=None), 2, 8, 0)
    assert build_calibration_set(chat_source(path, chat_template=CHATML), tiny_chat_tokenizer(template=None), 2, 8, 0) \
        .manifest()["chat_template"]["source"] == "dataset.chat_template"


@pytest.mark.parametrize("fields, match", [
    ({"loader": "gensim_enwiki", "format": "chat"}, r"dataset.format=chat reads chat messages .* is plain text"),
    ({"format": "markdown"}, r"dataset.format='markdown' is unknown"),
    ({"format": "text", "chat_template": CHATML}, r"dataset.chat_template is set but dataset.format=text ignores it"),
    ({"chat_template": 3}, r"dataset.chat_template=3 must be a Jinja chat template string"),
])
def test_bad_format_fields_are_refused_before_reading(tmp_path, fields, match):
    from calib_sweep.data import validate_source

    with pytest.raises(ConfigError, match=match):
        validate_source(chat_source(tmp_path / "absent.jsonl", **fields))


def test_hf_disk_and_hub_sources_read_chat_messages(tmp_path, isolated_cache, monkeypatch):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = tiny_chat_tokenizer()
    rows = [{"prompt": c[0]["content"], "prompt_id": f"p{i}", "messages": c} for i, c in enumerate(CONVERSATIONS * 3)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "disk"))
    disk = OmegaConf.create({"name": "disk", "loader": "hf_disk", "path": str(tmp_path / "disk"), "text_field": "messages",
                             "format": "chat", "heldout_fraction": 0.0})
    from_disk = load_documents(disk)
    assert [d.messages for d in from_disk] == [tuple(c) for c in CONVERSATIONS * 3]
    # A local mirror of UltraChat: dataset=ultrachat and its plain twin share document ids.
    root = tmp_path / "ultrachat"
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "train_sft-00000-of-00001.parquet")
    templated = load_documents(compose_cfg(["dataset=ultrachat", f"dataset.path={root}"]).dataset)
    plain_cfg = compose_cfg(["dataset=ultrachat_plain", f"dataset.path={root}"]).dataset
    plain = load_documents(plain_cfg)
    assert [d.doc_id for d in templated] == [d.doc_id for d in plain] == [f"ultrachat:p{i}" for i in range(6)]
    assert chat.render(plain[0].messages, tokenizer, plain_cfg.chat_template) == "the river\n\na city"
    assert tokenize_documents(templated[:1], tokenizer) == tokenize_documents(from_disk[:1], tokenizer)
    assert tokenize_documents(plain[:1], tokenizer) == [[*ids(tokenizer, "the river a city"), 1]]
    # A Hub row that is not a list of messages without format=chat: one line naming the option.
    with pytest.raises(ConfigError, match=r"dataset 'ultrachat_text' row 0: dataset.text_field='messages' holds a list.*dataset.format=chat"):
        load_documents(compose_cfg(["dataset=ultrachat", f"dataset.path={root}", "dataset.format=text",
                                    "dataset.name=ultrachat_text"]).dataset)


def test_heldout_text_of_a_chat_source_is_templated(tmp_path):
    tokenizer = tiny_chat_tokenizer()
    path = chat_jsonl(tmp_path / "chat.jsonl", [{"id": f"c{i}", "messages": CONVERSATIONS[0]} for i in range(40)])
    stream = heldout_token_ids(chat_source(path, heldout_fraction=0.3), tokenizer)
    assert stream[:5].tolist() == [2, *ids(tokenizer, "user the river"), 3]


def test_default_format_fields_keep_config_keys():
    resolved = OmegaConf.to_container(compose_cfg(["dataset=local_jsonl", "dataset.path=/data/x.jsonl"]), resolve=True)
    assert resolved["dataset"]["format"] == "text" and resolved["dataset"]["chat_template"] is None
    without = {**resolved, "dataset": {k: v for k, v in resolved["dataset"].items() if k not in ("format", "chat_template")}}
    assert config_key(resolved, "torch.float32") == config_key(without, "torch.float32")
    chat_cfg = OmegaConf.to_container(compose_cfg(["dataset=local_jsonl", "dataset.path=/data/x.jsonl",
                                                   "dataset.format=chat"]), resolve=True)
    assert config_key(chat_cfg, "torch.float32") != config_key(resolved, "torch.float32")


def test_chat_format_preset_composes_plain_and_templated_twins():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=chat_format"], return_hydra_config=True)
    params = {k: str(v) for k, v in cfg.hydra.sweeper.params.items()}
    assert params == {"method": "gptq,sparsegpt,wanda", "dataset": "ultrachat,ultrachat_plain", "seed": "range(0,3)"}
    twins = []
    for method, dataset in itertools.product(params["method"].split(","), params["dataset"].split(",")):
        job = compose_cfg(["experiment=chat_format", f"method={method}", f"dataset={dataset}"])
        assert job.samples.n_samples == 16 and job.model.name == "smollm2-135m-instruct"
        twins.append(job.dataset)
    templated, plain = twins[0], twins[1]
    assert templated.format == plain.format == "chat" and templated.chat_template is None and plain.chat_template
    assert {k: v for k, v in templated.items() if k not in ("name", "chat_template")} == \
        {k: v for k, v in plain.items() if k not in ("name", "chat_template")}


@pytest.mark.e2e
def test_smollm2_chat_template_renders_and_tokenizes(tmp_path):
    """SmolLM2-135M-Instruct's own template: its default system turn, <|im_start|> (1) and <|im_end|> (2) as
    markup, a literal <|endoftext|> in a content as text, 0 only as the separator."""
    model_cfg = OmegaConf.load(CONF / "model" / "smollm2_135m.yaml")
    tokenizer = models.load_tokenizer(model_cfg)
    messages = [{"role": "user", "content": "What is <|endoftext|>?"}, {"role": "assistant", "content": "A token."}]
    template, source = chat.resolve_template(tokenizer, None)
    assert source == "tokenizer"
    assert chat.render(messages, tokenizer, template) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is <|endoftext|>?<|im_end|>\n<|im_start|>assistant\nA token.<|im_end|>\n")
    path = chat_jsonl(tmp_path / "chat.jsonl", [{"id": "c0", "messages": messages}])
    (tokens,) = tokenize_documents(load_documents(chat_source(path)), tokenizer,
                                   models.document_separator(model_cfg, tokenizer))
    assert tokens.count(1) == 3 and tokens.count(2) == 3 and tokens.count(0) == 1 and tokens[-1] == 0
    assert tokenizer.decode(tokens[:-1]) == chat.render(messages, tokenizer, template)
