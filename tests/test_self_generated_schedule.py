"""Self-calibration's temperature schedule (Williams, Chrysostomou & Aletras 2025, Sec. 3.2):
exact temperatures, its place before top-p inside ``generate``, seeded generation, the constant
option's old tokens, and refused values."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from calib_sweep.data import build
from calib_sweep.data.build import generate_calibration_set
from calib_sweep.data.self_generated import TemperatureSchedule, scheduled_temperature, temperature_schedule
from calib_sweep.data.sources import validate_source
from calib_sweep.errors import ConfigError
from helpers import compose_cfg, tiny_overrides


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def default_cfg(**fields):
    return OmegaConf.merge(OmegaConf.load(build.CONF_DATASET_DIR / "self_generated.yaml"), fields)


def test_schedule_gives_the_exact_temperature_at_each_token():
    # t_initial = 2.0, t_final = 0.5, n = 10: 2.0 at token 0, 1.25 at token 5, 0.5 from token 10 on
    schedule = TemperatureSchedule(2.0, 0.5, 10, prompt_length=1)
    assert [schedule.temperature(i) for i in (0, 5, 10, 11, 500)] == [2.0, 1.25, 0.5, 0.5, 0.5]
    assert schedule.temperature(2) == pytest.approx(1.7)
    assert scheduled_temperature(3, 0.5, 1.5, 4) == 1.25  # rising schedules too
    scores = torch.tensor([[2.0, -1.0, 4.0, float("-inf")]])
    for generated, t in ((0, 2.0), (5, 1.25), (10, 0.5), (40, 0.5)):
        ids = torch.zeros((1, 1 + generated), dtype=torch.long)  # BOS + tokens generated so far
        assert torch.equal(schedule(ids, scores), scores / t)
    halfway = schedule(torch.zeros((1, 6), dtype=torch.long), scores)  # token 5: t = 1.25
    assert torch.equal(halfway, torch.tensor([[1.6, -0.8, 3.2, float("-inf")]]))
    constant = TemperatureSchedule(0.7, 0.7, 1, prompt_length=1)
    assert {constant.temperature(i) for i in range(30)} == {0.7}


def test_schedule_divides_the_logits_before_top_p(tiny):
    """generate merges a caller's logits processors before its top-k / top-p warpers (transformers 5.17):
    the scores it samples from are top-p(raw logits / t_i), not top-p(raw logits) / t_i."""
    from transformers import LogitsProcessorList
    from transformers.generation.logits_process import TopPLogitsWarper

    model, _ = tiny
    schedule = TemperatureSchedule(4.0, 0.25, 2, prompt_length=1)
    prompt = torch.ones((2, 1), dtype=torch.long)
    torch.manual_seed(0)
    out = model.generate(
        input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=1.0, top_p=0.5,
        top_k=None, max_new_tokens=4, pad_token_id=1, logits_processor=LogitsProcessorList([schedule]),
        return_dict_in_generate=True, output_scores=True, output_logits=True,
    )
    top_p = TopPLogitsWarper(top_p=0.5)
    kept = []
    for step in range(4):
        t = schedule.temperature(step)
        ids = out.sequences[:, : 1 + step]
        expected = top_p(ids, out.logits[step] / t)
        assert torch.equal(out.scores[step], expected), step
        kept.append(int(torch.isfinite(out.scores[step]).sum()))
    assert [schedule.temperature(s) for s in range(4)] == [4.0, 2.125, 0.25, 0.25]
    # order matters here: at t=4 the nucleus holds more tokens than top-p of the raw logits would keep
    raw_kept = int(torch.isfinite(top_p(out.sequences[:, :1], out.logits[0].clone())).sum())
    assert kept[0] > raw_kept


def test_linear_schedule_is_seeded_reproducible_and_recorded(tiny):
    model, tokenizer = tiny
    cfg = default_cfg(temperature_initial=3.0, temperature_final=0.5, schedule_tokens=4)
    a = generate_calibration_set(model, tokenizer, cfg, 3, 20, seed=0)
    b = generate_calibration_set(model, tokenizer, cfg, 3, 20, seed=0)
    c = generate_calibration_set(model, tokenizer, cfg, 3, 20, seed=1)
    flat = generate_calibration_set(model, tokenizer, default_cfg(), 3, 20, seed=0)
    assert a.input_ids.shape == (3, 20) and a.input_ids.dtype == torch.int64
    assert torch.equal(a.input_ids, b.input_ids) and not torch.equal(a.input_ids, c.input_ids)
    assert not torch.equal(a.input_ids, flat.input_ids)  # the schedule changes what is drawn
    generation = a.manifest()["generation"]
    assert {k: generation[k] for k in ("temperature_schedule", "temperature_initial", "temperature_final",
                                      "schedule_tokens", "top_p", "top_k", "generation_seed")} == {
        "temperature_schedule": "linear", "temperature_initial": 3.0, "temperature_final": 0.5,
        "schedule_tokens": 4, "top_p": 1.0, "top_k": 0, "generation_seed": 0}
    assert "temperature" not in generation
    assert flat.manifest()["generation"]["temperature_initial"] == 1.0
    assert flat.manifest()["generation"]["schedule_tokens"] == 10
    json.dumps(a.manifest())  # the manifest stays JSON


def test_paper_defaults_in_the_default_config():
    assert temperature_schedule(default_cfg()) == {
        "temperature_schedule": "linear", "temperature_initial": 1.0, "temperature_final": 1.0, "schedule_tokens": 10,
    }
    assert default_cfg().top_p == 1.0 and default_cfg().top_k == 0  # the full softmax, as in Sec. 3.2


def _old_generate(model, tokenizer, n, seq_len, gen_seed, temperature, top_p):
    """The generate call dataset=self_generated made before the schedule existed (constant temperature)."""
    ends = build.end_token_ids(model, tokenizer)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else ends[0]
    prompt = torch.full((n, 1), start, dtype=torch.long)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(gen_seed)
        out = model.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=temperature,
            top_p=top_p, top_k=None, max_new_tokens=seq_len - 1, min_new_tokens=seq_len - 1, eos_token_id=ends,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ends[0],
        )
    return out[:, :seq_len]


def test_constant_schedule_draws_the_old_tokens(tiny):
    model, tokenizer = tiny
    old = _old_generate(model, tokenizer, 4, 24, gen_seed=2, temperature=0.7, top_p=0.9)
    constant = default_cfg(temperature_schedule="constant", temperature=0.7, top_p=0.9, generation_seed=2)
    new = generate_calibration_set(model, tokenizer, constant, 4, 24, seed=0)
    assert torch.equal(new.input_ids, old)
    assert new.manifest()["generation"]["temperature_schedule"] == "constant"
    assert new.manifest()["generation"]["temperature"] == 0.7
    # a config saved before the schedule existed (no temperature_schedule) is constant: rebuild gives its set
    saved = OmegaConf.create({"name": "self_generated", "loader": "self_generated", "temperature": 0.7, "top_p": 0.9,
                              "top_k": 0, "generation_seed": 2, "batch_size": 16, "heldout_fraction": 0.0})
    assert torch.equal(generate_calibration_set(model, tokenizer, saved, 4, 24, seed=0).input_ids, old)
    # null temperature under constant is 1.0
    unit = generate_calibration_set(model, tokenizer, default_cfg(temperature_schedule="constant", top_p=0.9,
                                                                  generation_seed=2), 4, 24, seed=0)
    assert torch.equal(unit.input_ids, _old_generate(model, tokenizer, 4, 24, 2, 1.0, 0.9))


@pytest.mark.parametrize("fields, message", [
    ({"temperature_schedule": "cosine"}, r"^dataset.temperature_schedule='cosine' is not one of linear, constant\. Fix: "),
    ({"temperature_initial": 0}, r"^dataset.temperature_initial=0 must be a number > 0\. Fix: "),
    ({"temperature_final": -0.5}, r"^dataset.temperature_final=-0.5 must be a number > 0\. Fix: "),
    ({"temperature_initial": "hot"}, r"^dataset.temperature_initial='hot' must be a number > 0\. Fix: "),
    ({"temperature_final": True}, r"^dataset.temperature_final=True must be a number > 0\. Fix: "),
    ({"schedule_tokens": 0}, r"^dataset.schedule_tokens=0 must be an integer >= 1\. Fix: "),
    ({"schedule_tokens": 2.5}, r"^dataset.schedule_tokens=2.5 must be an integer >= 1\. Fix: "),
    ({"schedule_tokens": True}, r"^dataset.schedule_tokens=True must be an integer >= 1\. Fix: "),
    ({"temperature": 0.7}, r"^dataset.temperature=0.7 is used only with temperature_schedule=constant.*Fix: "),
    ({"temperature_schedule": "constant", "temperature": 0}, r"^dataset.temperature=0 must be a number > 0\. Fix: "),
])
def test_bad_schedule_values_are_refused_in_one_line(fields, message):
    with pytest.raises(ConfigError, match=message) as error:
        validate_source(default_cfg(**fields))
    assert "\n" not in str(error.value)


def test_bad_schedule_fails_at_validate_before_weights_load(tiny_model_dir, tiny_corpus, tmp_path):
    from calib_sweep.job import run_job

    overrides = [o for o in tiny_overrides(tiny_model_dir, tiny_corpus) if not o.startswith("dataset")]
    cfg = compose_cfg([*overrides, "dataset=self_generated", "dataset.schedule_tokens=0"])
    with pytest.raises(ConfigError, match="dataset.schedule_tokens=0 must be an integer >= 1"):
        run_job(cfg, tmp_path / "job")
    saved = json.loads((tmp_path / "job" / "results.json").read_text())
    assert saved["status"] == "failed" and saved["stage"] == "validate" and "load" not in saved["timings"]
