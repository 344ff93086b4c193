"""Our perplexity protocol against lm-eval's rolling loglikelihood, and the opt-in Hub texts on local fixtures.

Our protocol (GPTQ reference scripts): non-overlapping windows of ``L`` tokens, each scoring its
last ``L - 1`` tokens given the tokens before them in the window.  lm-eval's
``loglikelihood_rolling`` with ``max_length = L`` scores *every* token of a string: the first one
given a prefix token, and window ``k >= 1`` takes the previous window's last token as its first
input (context overlap of one token).  Hence:

- exact equality window by window: our window ``T[kL:(k+1)L]`` equals lm-eval's rolling
  loglikelihood of the string ``T[kL+1:(k+1)L]`` with prefix token ``T[kL]`` (one lm-eval window);
- on a whole stream of ``W`` windows lm-eval scores ``W*L`` tokens where we score ``W*(L-1)``, and
  its windows ``k >= 1`` see one more token of context: its figure is a different (slightly lower)
  perplexity, asserted below from its own per-window decomposition.
"""

from __future__ import annotations

import gzip
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from calib_sweep.errors import ConfigError
from calib_sweep.evaluation import evaluate_model, hub_text_tokens, perplexity
from calib_sweep.evaluation.zero_shot import make_lm

from conftest import WORDS


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _stream(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(2, 2 + len(WORDS), (n,), generator=gen, dtype=torch.int64)  # word ids only: no [UNK]/[EOS]


def _rolling(lm, tokenizer, ids: torch.Tensor, prefix: int) -> float:
    from lm_eval.api.instance import Instance

    lm.custom_prefix_token_id = int(prefix)
    text = tokenizer.decode(ids.tolist())
    assert tokenizer(text, add_special_tokens=False).input_ids == ids.tolist()  # the word tokenizer round-trips
    request = Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    (ll,) = lm.loglikelihood_rolling([request], disable_tqdm=True)
    return float(ll)


def test_perplexity_equals_lm_eval_rolling_loglikelihood_window_by_window(tiny):
    model, tokenizer = tiny
    seq_len, windows = 32, 3
    tokens = _stream(seq_len * windows + 5)  # 5 leftover tokens are not used by either
    ours = perplexity(model, tokens, seq_len, batch_size=2)
    lm = make_lm(model, tokenizer, batch_size=1, max_length=seq_len)
    total = 0.0
    for k in range(windows):
        window = tokens[k * seq_len : (k + 1) * seq_len]
        total += _rolling(lm, tokenizer, window[1:], prefix=window[0])
    scored = ours["protocol"]["tokens_scored"]
    assert scored == windows * (seq_len - 1)
    assert math.exp(-total / scored) == pytest.approx(ours["perplexity"], rel=1e-5)


def test_whole_stream_lm_eval_rolling_differs_as_explained(tiny):
    """lm-eval on the whole stream (prefix token p) = our protocol on [p] + stream with every window's
    last position also scored and one token of overlap: check that decomposition and the token counts."""
    model, tokenizer = tiny
    seq_len, windows = 16, 3
    tokens = _stream(seq_len * windows, seed=1)
    prefix = 1  # [EOS], lm-eval's default prefix for a tokenizer without BOS
    lm = make_lm(model, tokenizer, batch_size=1, max_length=seq_len)
    whole = _rolling(lm, tokenizer, tokens, prefix=prefix)
    # lm-eval's windows: input [p, T0..T(L-2)] -> targets T0..T(L-1); then input T(kL-1)..T((k+1)L-2) -> T(kL)..T((k+1)L-1).
    shifted = torch.cat([torch.tensor([prefix]), tokens])
    expected = 0.0
    with torch.no_grad():
        for k in range(windows):
            inp = shifted[k * seq_len : (k + 1) * seq_len]
            target = tokens[k * seq_len : (k + 1) * seq_len]
            logp = torch.log_softmax(model(input_ids=inp[None]).logits[0].double(), -1)
            expected += float(logp.gather(1, target[:, None]).sum())
    assert whole == pytest.approx(expected, rel=1e-6)
    ours = perplexity(model, tokens, seq_len)
    assert ours["protocol"]["tokens_scored"] == windows * (seq_len - 1)  # lm-eval scores windows * seq_len
    assert math.exp(-whole / tokens.numel()) != pytest.approx(ours["perplexity"], rel=1e-6)


def _wikitext_fixture(path, rng_seed=0):
    import datasets

    gen = torch.Generator().manual_seed(rng_seed)
    lines = []
    for i in range(40):
        if i % 5 == 0:
            lines.append("")  # WikiText has empty lines
        else:
            ids = torch.randint(0, len(WORDS), (int(torch.randint(5, 30, (1,), generator=gen)),), generator=gen)
            lines.append(" " + " ".join(WORDS[j] for j in ids.tolist()) + " \n")
    datasets.Dataset.from_dict({"text": lines}).to_parquet(str(path))
    return lines


def test_wikitext2_loader_joins_documents_like_the_gptq_scripts(tiny, tmp_path):
    _, tokenizer = tiny
    lines = _wikitext_fixture(tmp_path / "wiki.parquet")
    source = {"path": "parquet", "data_files": {"test": str(tmp_path / "wiki.parquet")}}
    ids, info = hub_text_tokens("wikitext2", tokenizer, 16, source)
    assert ids.dtype == torch.int64
    assert ids.tolist() == tokenizer("\n\n".join(lines), return_tensors="pt").input_ids[0].tolist()
    assert info["documents"] == 40 and info["join"] == "\n\n" and info["tokens_kept"] == ids.numel()


def test_c4_loader_takes_first_1100_documents_and_256_windows(tiny, tmp_path):
    _, tokenizer = tiny
    gen = torch.Generator().manual_seed(2)
    path = tmp_path / "c4-validation.json.gz"
    with gzip.open(path, "wt") as handle:
        for i in range(1200):
            words = " ".join(WORDS[j] for j in torch.randint(0, len(WORDS), (3,), generator=gen).tolist())
            handle.write(json.dumps({"text": words, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://x/{i}"}) + "\n")
    source = {"path": "json", "data_files": {"validation": str(path)}}
    ids, info = hub_text_tokens("c4", tokenizer, 4, source)
    assert info["documents"] == 1100 and info["tokens_in_text"] == 3300
    assert ids.numel() == 256 * 4  # the reference keeps the first 256 windows


def test_hub_texts_are_opt_in_and_fail_in_one_line_offline(tiny, monkeypatch, tmp_path):
    model, tokenizer = tiny
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        hub_text_tokens("wikitext2", tokenizer, 16)
    assert "offline" in str(err.value) and "Fix:" in str(err.value) and "\n" not in str(err.value)
    _wikitext_fixture(tmp_path / "wiki.parquet")
    cfg = OmegaConf.create({"perplexity": {
        "texts": [], "seq_len": 16, "max_windows": 4, "batch_size": 2, "hub_texts": ["wikitext2"],
        "hub_sources": {"wikitext2": {"path": "parquet", "data_files": {"test": str(tmp_path / "wiki.parquet")}}},
    }})
    metrics, details = evaluate_model(model, tokenizer, cfg, {})
    assert set(metrics) == {"perplexity/wikitext2"} and details["perplexity/wikitext2"]["windows"] == 4
