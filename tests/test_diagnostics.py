"""Layer-wise diagnostics (calib_sweep.methods.diagnostics) on the tiny model: the recorded GPTQ and
SparseGPT errors are the library's own return values, Wanda's activation norms are its row scalars, output
error is 0 for dense and > 0 for every compressed layer, one entry per target layer, bad config refused."""

from __future__ import annotations

import json
import math

import pytest
import torch

from calib_sweep import methods
from calib_sweep.errors import ConfigError
from calib_sweep.job import run_job
from calib_sweep.methods import diagnostics
from helpers import compose_cfg, tiny_overrides


def _run(tiny_model_dir, tiny_corpus, tmp_path, method, *extra):
    cfg = compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + [f"method={method}", "eval.layer_diagnostics=true", *extra])
    return run_job(cfg, tmp_path / method)


def test_gptq_errors_are_the_librarys_return_values(tiny_model_dir, tiny_corpus, tmp_path, monkeypatch):
    """Read the library's per-layer losses through the same hook point, independently, and compare."""
    from llmcompressor.modifiers.gptq import base as gptq_base

    seen: list[float] = []
    original = gptq_base.quantize_weight

    def spy(*args, **kwargs):
        quantized, losses, fallback = original(*args, **kwargs)
        seen.extend(float(x) for x in losses)
        return quantized, losses, fallback

    monkeypatch.setattr(gptq_base, "quantize_weight", spy)
    record = _run(tiny_model_dir, tiny_corpus, tmp_path, "gptq", "method.static_groups=true")  # the llmcompressor path
    layers = record["layers"]
    assert len(layers["names"]) == len(layers["output_error"]) == len(layers["library_error"]) == 14  # 2 blocks x 7
    assert sorted(layers["library_error"]) == pytest.approx(sorted(seen))
    assert all(e > 0 for e in layers["output_error"]) and all(t > 0 for t in layers["hessian_trace"])
    assert all(0 < f <= 1 for f in layers["fraction_changed"]) and all(d >= 0.01 for d in layers["damping"])
    assert layers["positions"] >= 1 and "act_norm_mean" not in layers
    assert "diagnostics" in record["timings"]
    saved = json.loads((tmp_path / "gptq" / "results.json").read_text())
    assert saved["layers"]["names"] == layers["names"] and len(json.dumps(saved["layers"])) < 10_000


def test_sparsegpt_wanda_and_dense(tiny_model_dir, tiny_corpus, tmp_path):
    sgpt = _run(tiny_model_dir, tiny_corpus, tmp_path, "sparsegpt")["layers"]
    # SparseGPT zeroes half the weights and updates the others (OBS): between 50% and 100% change
    assert all(e > 0 for e in sgpt["library_error"]) and all(0.49 <= f <= 1 for f in sgpt["fraction_changed"])
    wanda = _run(tiny_model_dir, tiny_corpus, tmp_path, "wanda")["layers"]
    assert "library_error" not in wanda and all(m > 0 for m in wanda["act_norm_mean"])
    assert all(f == pytest.approx(0.5, abs=0.01) for f in wanda["fraction_changed"])  # Wanda only zeroes
    assert all(r >= 1 for r in wanda["act_norm_max_ratio"]) and all(e > 0 for e in wanda["output_error"])
    rtn = _run(tiny_model_dir, tiny_corpus, tmp_path, "rtn")["layers"]  # no library figures: the dense snapshot
    assert "library_error" not in rtn and all(0 < f <= 1 for f in rtn["fraction_changed"])
    magnitude = _run(tiny_model_dir, tiny_corpus, tmp_path, "magnitude")["layers"]
    assert all(f == pytest.approx(0.5, abs=0.01) for f in magnitude["fraction_changed"])
    dense = _run(tiny_model_dir, tiny_corpus, tmp_path, "dense")["layers"]
    assert dense["output_error"] == [0.0] * 14 and set(dense) == {"names", "output_error", "positions", "units"}


def test_output_error_by_hand_on_one_layer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3))
    ids = torch.randint(0, 10, (2, 5))
    dense = diagnostics.capture_outputs(model, ids, ["1"], count=4)
    where = diagnostics.positions(2, 5, 4)  # flat positions 0, 3, 6, 9
    assert where.tolist() == [0, 3, 6, 9]
    with torch.no_grad():
        expected = model(ids).reshape(10, 3)[where]
        assert torch.allclose(dense["1"], expected)
        model[1].weight.mul_(1.1)
    errors = diagnostics.output_errors(model, ids, dense, count=4)
    bias_free = model(ids).reshape(10, 3)[where].detach()
    assert errors["1"] == pytest.approx(float(torch.linalg.norm(bias_free - expected) / torch.linalg.norm(expected)), rel=1e-5)


def test_layer_record_layout_and_bad_config(tiny_model_dir, tiny_corpus, tmp_path):
    record = diagnostics.layer_record(["a", "b"], {"a": {"library_error": 1.5}}, {"b": 0.01}, {"a": 0.1, "b": math.inf}, 128)
    assert record["library_error"] == [1.5, None] and record["damping"] == [None, 0.01] and record["output_error"] == [0.1, math.inf]
    assert set(record["units"]) == {"library_error", "damping", "output_error"}
    with pytest.raises(ConfigError, match="eval.layer_diagnostics='yes' must be true or false"):
        run_job(compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["eval.layer_diagnostics=yes"]), tmp_path / "x")
    with pytest.raises(ConfigError, match="eval.kl_windows=0"):
        run_job(compose_cfg(tiny_overrides(tiny_model_dir, tiny_corpus) + ["eval.layer_diagnostics=true", "eval.kl_windows=0"]),
                tmp_path / "y")
    assert methods.captured_layers(torch.nn.Linear(2, 2)) == {}


def test_activation_stats_by_hand_and_inspect_activations(tiny_model_dir, tiny_corpus):
    import io

    from calib_sweep.data import cli

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3))
    ids = torch.randint(0, 10, (3, 5))
    stats = diagnostics.activation_stats(model, ids, ["1"], batch_size=2)["1"]
    x = model[0](ids).reshape(-1, 4).detach()
    assert stats["mean_norm"] == pytest.approx(float(torch.linalg.norm(x, dim=1).mean()), rel=1e-5)
    channel = x.square().mean(dim=0).sqrt()
    assert stats["max_channel_ratio"] == pytest.approx(float(channel.max() / channel.mean()), rel=1e-5)
    rms = float(x.square().mean().sqrt())
    assert stats["outlier_fraction"] == pytest.approx(float((x.abs() > 6 * rms).float().mean()))
    out = io.StringIO()
    cli.cmd_inspect(None, tiny_overrides(tiny_model_dir, tiny_corpus), show=0, out=out, activations=True)
    text = out.getvalue()
    assert "input activations per layer" in text and text.count("model.layers.") == 14
    with pytest.raises(ConfigError, match="--activations needs the dense model"):
        cli.cmd_inspect(None, tiny_overrides(tiny_model_dir, tiny_corpus), show=0, out=out, use_model=False, activations=True)
