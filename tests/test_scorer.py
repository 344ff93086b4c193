"""FastHFLM (calib_sweep.evaluation.scorer) gives lm-eval HFLM's loglikelihoods and is_greedy.

Token-level requests of the shapes lm-eval's tasks make (a context shared by 2-4 continuations, one-token
continuations, a one-token context, a context longer than the token budget, requests longer than
max_length) on the tiny Llama and on a tiny Gemma-3 (sliding-window layers, logit softcapping), and
one lm-eval run on ARC-Easy-schema items through zero_shot with both scorers.
"""

from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf

from calib_sweep.errors import ConfigError
from calib_sweep.evaluation.scorer import FastHFLM
from calib_sweep.evaluation.zero_shot import make_lm, run_lm_eval, validate_zero_shot, zero_shot
from calib_sweep.models.logits import softcap_of

from helpers import tiny_arc_file


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _requests(vocab: int, seed: int = 0) -> list:
    """Token requests ``(key, context, continuation)``: ids in [2, vocab)."""
    rng = random.Random(seed)

    def toks(n):
        return [rng.randrange(2, vocab) for _ in range(n)]

    out = []
    for i in range(6):  # shared contexts with 2-4 continuations of 1-6 tokens
        context = toks(rng.randint(3, 20))
        for _ in range(rng.randint(2, 4)):
            out.append(((f"c{i}", "x"), context, toks(rng.randint(1, 6))))
    shared = toks(12)
    out += [(("yes", "x"), shared, toks(1)), (("no", "x"), shared, toks(1))]  # BoolQ-like one-token choices
    out += [(("one", "x"), toks(1), toks(4)), (("one", "y"), toks(1), toks(1))]  # a one-token context
    long = toks(50)  # longer than the token budget (32) below
    out += [(("long", str(j)), long, toks(j + 1)) for j in range(3)]
    over = toks(80)  # context + continuation longer than max_length (64): left-truncated as HFLM does
    out += [(("over", str(j)), over, toks(3 + j)) for j in range(2)]
    out.append((None, toks(7), toks(2)))  # no cache key (as in loglikelihood_rolling windows)
    rng.shuffle(out)
    return out


def _compare(fast: FastHFLM, reference, requests) -> None:
    ours = fast._loglikelihood_tokens(requests)
    theirs = reference._loglikelihood_tokens(requests)
    assert len(ours) == len(theirs) == len(requests)
    diff = max(abs(a[0] - b[0]) for a, b in zip(ours, theirs))
    assert diff < 1e-4, diff
    assert [a[1] for a in ours] == [b[1] for b in theirs]
    assert all(a[0] < 0 for a in ours)


def test_fast_scorer_equals_hflm_on_tiny_llama(tiny, tiny_model_dir):
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = tiny
    fast = FastHFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=64, token_budget=32, head_rows=3)
    reference = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=64)
    requests = _requests(model.config.vocab_size)
    _compare(fast, reference, requests)
    assert fast.fallback_reason is None
    # the default budget: every short context in one padded batch, continuations of several contexts together
    _compare(FastHFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=64), reference, requests)
    assert fast.truncated_requests == 2  # the two 80-token contexts
    # the padded path (attention implementations without custom 4D masks): right-padded batches
    padded = FastHFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=64, token_budget=48)
    padded._packed_ok = lambda: False
    _compare(padded, reference, requests)
    # eager attention: the packed rows' mask is additive there
    from transformers import AutoModelForCausalLM

    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    _compare(FastHFLM(pretrained=eager, tokenizer=tokenizer, batch_size=4, max_length=64), reference, requests)
    # a greedy continuation is recognised: the model's own argmax tokens after a context
    context = requests[0][1]
    ids = torch.tensor([context])
    greedy = [int(model(ids).logits[0, -1].argmax())]
    out = fast._loglikelihood_tokens([(None, context, greedy), (None, context, [(greedy[0] + 1) % 100 + 2])])
    assert out[0][1] is True and out[1][1] is False


def test_fast_scorer_equals_hflm_on_tiny_gemma3_sliding_window_and_softcap(tiny):
    from lm_eval.models.huggingface import HFLM
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    _, tokenizer = tiny
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=8, layer_types=["sliding_attention", "sliding_attention",
                                                                             "full_attention"],
        final_logit_softcapping=5.0, max_position_embeddings=256,
    )
    model = Gemma3ForCausalLM(config).eval()
    fast = FastHFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=64, token_budget=32, head_rows=5)
    reference = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=64)
    _compare(fast, reference, _requests(config.vocab_size, seed=1))
    assert fast.fallback_reason is None and softcap_of(fast.model.config) == 5.0


def test_zero_shot_fast_and_hflm_scorers_agree_through_lm_eval(tiny, tmp_path):
    model, tokenizer = tiny
    local = {"arc_easy": str(tiny_arc_file(tmp_path, n=8))}
    out = {s: run_lm_eval(make_lm(model, tokenizer, 4, scorer=s), ["arc_easy"], None, local, 0, log_samples=True)
           for s in ("fast", "hflm")}
    ll = {s: [[r[0] for r in x["filtered_resps"]] for x in o["samples"]["arc_easy"]] for s, o in out.items()}
    assert torch.allclose(torch.tensor(ll["fast"], dtype=torch.float64), torch.tensor(ll["hflm"], dtype=torch.float64),
                          atol=1e-4)
    assert out["fast"]["results"]["arc_easy"]["acc,none"] == out["hflm"]["results"]["arc_easy"]["acc,none"]
    cfg = OmegaConf.create({"tasks": ["arc_easy"], "limit": None, "batch_size": 4, "num_fewshot": 0,
                            "bootstrap_iters": 0, "local_files": local})
    _, details = zero_shot(model, tokenizer, cfg)  # scorer defaults to fast
    assert details["zeroshot"]["scorer"] == "fast" and "FastHFLM" in details["zeroshot"]["harness"]
    assert details["zeroshot/arc_easy"]["scorer"] == "fast" and details["zeroshot"]["truncated_requests"] == 0
    cfg.scorer = "hflm"
    _, details = zero_shot(model, tokenizer, cfg)
    assert details["zeroshot"]["scorer"] == "hflm" and "with HFLM(" in details["zeroshot"]["harness"]


def test_rolling_loglikelihood_is_hflm_own(tiny):
    from lm_eval.api.instance import Instance

    model, tokenizer = tiny
    text = " ".join(["the city of the river was"] * 12)
    request = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)]
    fast = make_lm(model, tokenizer, 2, max_length=16)
    hflm = make_lm(model, tokenizer, 2, max_length=16, scorer="hflm")
    assert fast.loglikelihood_rolling(request, disable_tqdm=True)[0] == pytest.approx(
        hflm.loglikelihood_rolling(request, disable_tqdm=True)[0], abs=1e-4)


@pytest.mark.parametrize("value", ["fastt", "HFLM", 1, None])
def test_unknown_scorer_is_one_line_naming_value_and_options(value):
    with pytest.raises(ConfigError) as info:
        validate_zero_shot(OmegaConf.create({"tasks": [], "scorer": value}))
    message = str(info.value)
    assert "\n" not in message and f"scorer={value!r}" in message and "fast, hflm" in message


def test_bad_token_budget():
    with pytest.raises(ConfigError, match="token_budget=1"):
        FastHFLM(pretrained=None, token_budget=1)
