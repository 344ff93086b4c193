"""model.init=random: an architecture from a config shipped in conf/model, seeded random weights, a
borrowed tokenizer cut to the model's vocabulary, and `weights: random` in results.json (issue 13.4).

The Llama-2-7B shape is checked on the meta device (no memory); weights are drawn only for a 2-layer
override of it, so nothing here is slow or downloads anything.
"""

from __future__ import annotations

import json
import random as pyrandom

import pytest
import torch
import yaml

from calib_sweep import models
from calib_sweep.errors import ConfigError
from calib_sweep.job import run_job
from calib_sweep.report import load_jobs
from calib_sweep.report.collect import ReportError
from calib_sweep.tracking import write_results
from conftest import WORDS, make_text
from helpers import compose_cfg

#: A 2-layer, 64-wide version of the Llama-2-7B shape (other fields as shipped: vocab 32,000, ...).
TINY_SHAPE = [
    "model.config.num_hidden_layers=2", "model.config.hidden_size=64", "model.config.intermediate_size=128",
    "model.config.num_attention_heads=4", "model.config.num_key_value_heads=4",
]


@pytest.fixture(scope="module")
def bpe_tokenizer_dir(tmp_path_factory):
    """A byte-level BPE tokenizer (like SmolLM2's: special tokens, then the 256 byte symbols, then
    tokens in merge order) of 400 tokens, trained on the test words."""
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(tok_models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    rng = pyrandom.Random(1)
    backend.train_from_iterator([make_text(rng, 200) for _ in range(50)], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        unk_token="<|endoftext|>", pad_token="<|im_end|>")
    folder = tmp_path_factory.mktemp("bpe_tokenizer")
    tokenizer.save_pretrained(folder)
    assert len(tokenizer) == 400
    return folder


def _model_cfg(*overrides: str):
    return compose_cfg(["model=llama2_7b_random", *overrides]).model


def test_llama2_7b_shape_from_the_shipped_config():
    cfg = _model_cfg()
    assert models.is_random_init(cfg) and cfg.source == "config"
    config = models.load_config(cfg)  # no file read: the yaml's config mapping
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.num_attention_heads,
            config.vocab_size, config.max_position_embeddings, config.rms_norm_eps) == (4096, 11008, 32, 32, 32000, 4096, 1e-5)
    shapes = models.linear_shapes(config)
    assert len(shapes) == 32 * 7 + 1  # q, k, v, o, gate, up, down per layer + lm_head
    assert shapes["model.layers.0.self_attn.q_proj"] == (4096, 4096)
    assert shapes["model.layers.31.mlp.down_proj"] == (4096, 11008)
    assert shapes["model.layers.31.mlp.up_proj"] == (11008, 4096)
    assert shapes["lm_head"] == (32000, 4096)
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in meta.parameters()) == 6_738_415_616  # Llama-2-7B's parameter count


@pytest.mark.parametrize("name, params", [("smollm2_135m_random", 134_515_008), ("gemma3_270m_random", 268_098_176)])
def test_embedded_shapes_shipped(name, params):
    """The embedded models' architectures (their converted config.json) as random-init configs."""
    from transformers import AutoModelForCausalLM

    config = models.load_config(compose_cfg([f"model={name}"]).model)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in meta.parameters()) == params


def test_random_model_loads_with_right_shapes_seeded(bpe_tokenizer_dir, isolated_cache):
    cfg = _model_cfg(*TINY_SHAPE, f"model.tokenizer={bpe_tokenizer_dir}")
    state = torch.random.get_rng_state()
    model = models.load_model(cfg, torch.device("cpu"), torch.float32)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is left alone
    weights = model.state_dict()
    assert weights["model.embed_tokens.weight"].shape == (32000, 64)
    assert weights["model.layers.1.self_attn.q_proj.weight"].shape == (64, 64)
    assert weights["model.layers.1.mlp.down_proj.weight"].shape == (64, 128)
    assert weights["lm_head.weight"].shape == (32000, 64) and len(model.model.layers) == 2
    # 2 x 32000 x 64 (embedding, untied head) + 2 layers x (4 x 64^2 + 3 x 64 x 128 + 2 x 64 norms) + final norm
    assert sum(p.numel() for p in model.parameters()) == 2 * 32000 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64
    assert not model.training and model.dtype == torch.float32
    # Where a checkpoint folder would be (llmcompressor reads its processor there): config + tokenizer, no weights.
    folder = models.random_init_folder(cfg)
    assert model.config._name_or_path == str(folder) and folder.parent.parent == isolated_cache
    assert {"config.json", "tokenizer.json"} <= {f.name for f in folder.iterdir()}
    assert not any(f.suffix in (".safetensors", ".bin") for f in folder.iterdir())
    std = weights["model.layers.0.mlp.up_proj.weight"].std().item()
    assert 0.015 < std < 0.025  # transformers' own init: normal, initializer_range 0.02

    again = models.load_model(cfg, torch.device("cpu"), torch.float32).state_dict()
    assert all(torch.equal(weights[k], again[k]) for k in weights)  # same seed -> same weights
    other = models.load_model(_model_cfg(*TINY_SHAPE, f"model.tokenizer={bpe_tokenizer_dir}", "model.init_seed=1"),
                              torch.device("cpu"), torch.float32).state_dict()
    assert not torch.equal(weights["model.layers.0.self_attn.q_proj.weight"], other["model.layers.0.self_attn.q_proj.weight"])


def test_tokenizer_cut_to_the_model_vocabulary(bpe_tokenizer_dir):
    from transformers import AutoTokenizer

    full = AutoTokenizer.from_pretrained(bpe_tokenizer_dir)
    cfg = _model_cfg(*TINY_SHAPE, f"model.tokenizer={bpe_tokenizer_dir}", "model.config.vocab_size=300")
    cut = models.load_tokenizer(cfg)
    assert len(cut) == 300 and cut.init_vocabulary["cut"] is True and cut.init_vocabulary["tokenizer_tokens"] == 400
    text = make_text(pyrandom.Random(7), 300) + " Ünïcödé 日本語 🙂 tabs\tand\nnewlines"
    ids = cut(text)["input_ids"]
    assert max(ids) < 300 and len(ids) > len(full(text)["input_ids"])  # shorter tokens, all in range
    assert cut.decode(ids) == text == full.decode(full(text)["input_ids"])  # nothing lost
    assert (cut.bos_token_id, cut.eos_token_id, cut.convert_tokens_to_ids("<|endoftext|>")) == (1, 2, 0)
    assert models.load_tokenizer(cfg)(text)["input_ids"] == ids  # deterministic
    # A tokenizer that fits is used as is.
    fits = models.load_tokenizer(_model_cfg(*TINY_SHAPE, f"model.tokenizer={bpe_tokenizer_dir}"))
    assert len(fits) == 400 and fits.init_vocabulary["cut"] is False


def test_word_level_tokenizer_too_big_is_refused(tiny_model_dir):
    cfg = _model_cfg(*TINY_SHAPE, f"model.tokenizer={tiny_model_dir}", "model.config.vocab_size=10")
    with pytest.raises(ConfigError, match=f"not a BPE tokenizer that can be cut. Fix: set model.config.vocab_size={len(WORDS) + 2}"):
        models.load_tokenizer(cfg)


def test_bad_init_values_refused():
    with pytest.raises(ConfigError, match="model.init='maybe' is unknown"):
        models.validate_model(_model_cfg("model.init=maybe"))
    with pytest.raises(ConfigError, match="architecture without weights .* Fix: model.init=random"):
        models.validate_model(_model_cfg("model.init=pretrained"))
    with pytest.raises(ConfigError, match="model.init_seed=-1"):
        models.validate_model(_model_cfg("model.init_seed=-1"))
    with pytest.raises(ConfigError, match="has no tokenizer of its own"):
        models.validate_model(_model_cfg("model.tokenizer=null"))
    with pytest.raises(ConfigError, match="applies only to model.init=random"):
        models.validate_model(compose_cfg(["model=smollm2_135m", "+model.config={hidden_size: 8}"]).model)
    assert models.weights_record(compose_cfg(["model=smollm2_135m"]).model) == {"weights": "pretrained"}


def test_job_results_say_weights_random(bpe_tokenizer_dir, tiny_corpus, tmp_path, isolated_cache):
    cfg = compose_cfg([
        "model=llama2_7b_random", *TINY_SHAPE, f"model.tokenizer={bpe_tokenizer_dir}", "model.config.vocab_size=300",
        "dataset=local_jsonl", f"dataset.path={tiny_corpus}", "samples=tiny", "method=rtn", "logger=none",
        "eval.perplexity.texts=[local_jsonl]", "eval.perplexity.seq_len=64", "eval.perplexity.max_windows=4",
        "eval.zeroshot.tasks=[]", "device=cpu",
    ])
    record = run_job(cfg, tmp_path / "job")
    saved = json.loads((tmp_path / "job" / "results.json").read_text())
    assert saved["status"] == "ok" and record["weights"] == saved["weights"] == "random"
    init = saved["random_init"]
    assert init["seed"] == 0 and init["tokenizer"] == str(bpe_tokenizer_dir) and init["config_fields"]["vocab_size"] == 300
    assert "timing and memory only" in init["purpose"]
    assert saved["config"]["model"]["init"] == "random"
    # Every token id fitted the 300-row embedding (an id >= 300 would have failed the forward pass).

    # The report takes random-weight jobs alone, and refuses them beside real ones.
    real = tmp_path / "sweep" / "0_rtn_local_jsonl_s0"
    real.mkdir(parents=True)
    config = {**saved["config"], "model": {"name": "tiny-llama", "source": "pretrained"}}
    write_results(real, {"status": "ok", "config": config, "metrics": saved["metrics"], "wandb": {"mode": "disabled"}})
    assert [job.weights for job in load_jobs([tmp_path / "job"])] == ["random"]
    assert [job.weights for job in load_jobs([tmp_path / "sweep"])] == ["pretrained"]
    with pytest.raises(ReportError, match="1 job.s. have random weights .* and 1 have real weights"):
        load_jobs([tmp_path / "job", tmp_path / "sweep"])


def test_report_refuses_mixed_sweep_cli(tmp_path, capsys):
    from calib_sweep.report.__main__ import main as report_main

    base = {"seed": 0, "dataset": {"name": "wiki"}, "samples": {"n_samples": 4, "seq_len": 64}, "method": {"name": "gptq"}}
    for num, (model, extra) in enumerate([({"name": "m", "source": "pretrained"}, {}),
                                          ({"name": "m-random", "source": "config", "init": "random"}, {"weights": "random"})]):
        folder = tmp_path / "sweep" / f"{num}_gptq_wiki_s0"
        folder.mkdir(parents=True)
        write_results(folder, {"status": "ok", "config": {**base, "model": model}, "metrics": {"perplexity/wiki": 20.0},
                               **extra})
    (tmp_path / "sweep" / "2_gptq_wiki_s1" / ".hydra").mkdir(parents=True)  # unfinished random job: from its config
    (tmp_path / "sweep" / "2_gptq_wiki_s1" / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({**base, "seed": 1, "model": {"name": "m-random", "source": "config", "init": "random"}}))
    assert report_main([str(tmp_path / "sweep"), "--no-wandb"]) == 2
    assert "2 job(s) have random weights" in capsys.readouterr().err
