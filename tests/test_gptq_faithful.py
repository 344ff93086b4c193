"""GPTQ with group grids fitted as each group is reached (issue 26 item 1, ``method.static_groups``).

:func:`calib_sweep.methods.gptq_faithful.gptq_quantize_layer` is checked against an independent
implementation written here the way the paper states the algorithm before its reformulations
(Frantar et al. 2023, Eq. 2-3: the explicit inverse Hessian, reduced by Gaussian elimination after
every column, no Cholesky factor, no lazy batches), in float64; its static variant against
llmcompressor's own ``quantize_weight``; then the job path, its records and its bad input.
"""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from calib_sweep import methods
from calib_sweep.errors import ConfigError
from calib_sweep.job import run_job
from calib_sweep.methods.gptq_faithful import IMPLEMENTATION, fit_grid, gptq_quantize_layer
from helpers import compose_cfg, run_cli, tiny_overrides


def _layer(m=48, n=128, tokens=1024, seed=0):
    """A random weight ``[m, n]`` and the Hessian ``2 X X^T / tokens`` of correlated inputs with one outlier channel."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, n, generator=g) @ (0.3 * torch.randn(n, n, generator=g)) + torch.randn(n, generator=g)
    x[:, 3] *= 15
    w = 0.1 * torch.randn(m, n, generator=g)
    return w, 2 * x.T @ x / tokens


def _grid64(x, bits, symmetric):
    """The reference ``quant.py`` min-max grid of each row, written out separately, float64."""
    maxq = 2**bits - 1
    lo = torch.clamp(x.min(1).values, max=0)
    hi = torch.clamp(x.max(1).values, min=0)
    if symmetric:
        hi = torch.maximum(-lo, hi)
        lo = torch.where(lo < 0, -hi, lo)
    both = (lo == 0) & (hi == 0)
    lo, hi = torch.where(both, -1.0, lo), torch.where(both, 1.0, hi)
    scale = (hi - lo) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if symmetric else torch.round(-lo / scale)
    return scale[:, None], zero[:, None]


def _agreement(a, b):
    """Share of entries equal within 1e-5.  The independent implementation runs in float64, this module in
    float32 (as the reference code): a weight exactly at a rounding boundary (the largest of a symmetric
    group sits at +-(2^b - 1)/2 grid steps) can round the other way, and its row then drifts slightly."""
    return float(((a - b).abs() <= 1e-5).float().mean())


def _obq_reference(w, h, bits, group, symmetric, damp=0.01, act_order=False, fit_block=None):
    """GPTQ by Eq. 2-3 of the paper: column by column with the explicit inverse Hessian (float64).

    ``fit_block``: fit a group's grid on the weights as they stood at the start of the enclosing run of
    ``fit_block`` columns (what lazy batches of that size see); None: on the fully updated weights.
    Returns ``(Q in the original column order, loss)``.
    """
    W = w.double().clone()
    H = h.double().clone()
    n = W.shape[1]
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diagonal(h.float()), descending=True) if act_order else torch.arange(n)
    W, H = W[:, perm], H[perm][:, perm]
    Hinv = torch.linalg.inv(H + damp * torch.diagonal(H).mean() * torch.eye(n, dtype=H.dtype))
    Q = torch.zeros_like(W)
    loss = 0.0
    snapshot = W.clone()
    for j in range(n):
        if fit_block and j % fit_block == 0:
            snapshot = W.clone()
        if j % group == 0:
            scale, zero = _grid64((snapshot if fit_block else W)[:, j : j + group], bits, symmetric)
        q = scale * (torch.clamp(torch.round(W[:, j : j + 1] / scale) + zero, 0, 2**bits - 1) - zero)
        d = Hinv[j, j]
        delta = (W[:, j : j + 1] - q) / d
        loss += float(((W[:, j : j + 1] - q) ** 2 / d).sum()) / 2  # Eq. 2: (w - quant(w))^2 / [H^-1]_jj
        W[:, j:] -= delta * Hinv[j : j + 1, j:]  # Eq. 2: the optimal update of the remaining weights
        Q[:, j : j + 1] = q
        Hinv = Hinv - Hinv[:, j : j + 1] @ Hinv[j : j + 1, :] / d  # Eq. 3: remove column j from H^-1
    return Q[:, torch.argsort(perm)].float(), loss


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
def test_layer_equals_the_paper_algorithm_without_reformulations(symmetric, act_order):
    w, h = _layer()
    q, result = gptq_quantize_layer(w, h, w_bits=4, group_size=32, symmetric=symmetric, damp_percent=0.01,
                                    act_order=act_order, block_size=32)  # lazy block = group: grids see every update
    expected, loss = _obq_reference(w, h, 4, 32, symmetric, act_order=act_order)
    assert _agreement(q, expected) > 0.98
    assert result.loss == pytest.approx(loss, rel=1e-3)
    assert result.scale.shape == (48, 4) and result.damp_used == 0.01


def test_group_grids_see_the_weights_as_lazy_batches_leave_them():
    """Block 64, group 32: the second group of a block is fitted before this block's updates reach it, as the
    reference (and AutoGPTQ, GPTQModel) do; the fully updated weights give another result."""
    w, h = _layer()
    q, _ = gptq_quantize_layer(w, h, w_bits=3, group_size=32, symmetric=True, damp_percent=0.01, block_size=64)
    lazy, _ = _obq_reference(w, h, 3, 32, True, fit_block=64)
    current, _ = _obq_reference(w, h, 3, 32, True)
    assert _agreement(q, lazy) > 0.97
    assert _agreement(q, current) < 0.6


def test_first_block_grids_are_the_static_ones_later_ones_follow_the_updates():
    """Groups of 32 in lazy blocks of 128: the four groups of block 0 are fitted before any update reaches
    the matrix (the un-updated weights: the static grids); the groups of block 1 after block 0's updates."""
    w, h = _layer(n=256, seed=1)
    kwargs = dict(w_bits=4, group_size=32, symmetric=True, damp_percent=0.01, block_size=128)
    q_dyn, dyn = gptq_quantize_layer(w, h, **kwargs)
    q_static, static = gptq_quantize_layer(w, h, static_groups=True, **kwargs)
    assert dyn.scale.shape == static.scale.shape == (48, 8)
    assert torch.equal(dyn.scale[:, :4], static.scale[:, :4])
    assert torch.equal(static.scale[:, 5:6], fit_grid(w[:, 160:192], 4, True)[0])  # static: the weights as given
    for k in range(4, 8):
        assert float((dyn.scale[:, k] != static.scale[:, k]).float().mean()) > 0.9, k  # nearly every row moved
    assert dyn.loss < static.loss  # grids that follow the updated weights fit them better
    assert not torch.equal(q_dyn, q_static)


def test_act_order_groups_are_runs_of_the_permuted_columns():
    w, h = _layer(seed=2)
    q, result = gptq_quantize_layer(w, h, w_bits=3, group_size=16, symmetric=False, damp_percent=0.01, act_order=True)
    perm = torch.argsort(torch.diagonal(h), descending=True)
    assert torch.equal(result.perm, perm)
    distinct_perm = methods._distinct_per_group(q, 16, perm)  # groups in act order: at most 2^3 values
    assert int(distinct_perm.max()) <= 8
    assert int(methods._distinct_per_group(q, 16).max()) > 8  # contiguous columns mix grids
    # every row of group k is on the grid fitted for it, in the permuted order
    grid = result.scale[:, 1:2] * (torch.arange(8.0) - result.zero[:, 1:2])
    column = q[:, perm[16:32]]
    assert bool(((column[:, :, None] - grid[:, None, :]).abs().min(-1).values < 1e-6).all())


def test_per_channel_fits_one_grid_per_row_from_the_unupdated_weights():
    w, h = _layer(seed=3)
    q, result = gptq_quantize_layer(w, h, w_bits=4, group_size=None, symmetric=True, damp_percent=0.01)
    q_static, _ = gptq_quantize_layer(w, h, w_bits=4, group_size=None, symmetric=True, damp_percent=0.01,
                                      static_groups=True)
    assert torch.equal(q, q_static) and result.scale.shape == (48, 1)
    assert torch.equal(result.scale, fit_grid(w, 4, True)[0])


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
def test_static_groups_equal_llmcompressors_quantize_weight(symmetric, act_order):
    """The static variant against the library the job runs for static_groups=true (llmcompressor 0.14)."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.utils import calculate_qparams
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight

    w, h = _layer(seed=4)
    args = QuantizationArgs(num_bits=4, symmetric=symmetric, strategy="group", group_size=32,
                            actorder="weight" if act_order else None)
    groups = w.reshape(48, 4, 32)
    scale, zero = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
    theirs, losses, _ = quantize_weight(w[None].clone(), h[None].clone(), scale[None], zero[None], None, args,
                                        blocksize=128, percdamp=0.01)
    ours, result = gptq_quantize_layer(w, h, w_bits=4, group_size=32, symmetric=symmetric, damp_percent=0.01,
                                       act_order=act_order, static_groups=True)
    assert torch.allclose(ours, theirs[0], atol=1e-5), float((ours - theirs[0]).abs().max())
    assert result.loss == pytest.approx(float(losses[0]), rel=1e-3)


def _shapes(cfg):
    return {"model.layers.0.self_attn.q_proj": (64, 64), "model.layers.0.mlp.down_proj": (64, 128)}


def test_bad_static_groups_is_one_line_with_the_fix():
    base = {"name": "gptq", "backend": "llmcompressor", "w_bits": 4, "group_size": 64, "symmetric": True,
            "damp_percent": 0.01, "act_order": False, "static_groups": False, "block_size": 128}
    methods.validate_method(OmegaConf.create(base), _shapes(None))
    methods.validate_method(OmegaConf.create({**base, "static_groups": True}), _shapes(None))
    methods.validate_method(OmegaConf.create({**base, "group_size": None}), _shapes(None))
    cases = [
        ({**base, "static_groups": "yes"}, "method.static_groups='yes' must be true or false. Fix: method.static_groups=false"),
        ({**base, "static_groups": 1}, "method.static_groups=1 must be true or false"),
        ({**base, "group_size": None, "static_groups": True}, "method.static_groups=true has no groups to fix with method.group_size=null"),
        ({**base, "backend": "optimum", "static_groups": True}, "method.static_groups=true is not offered with method.backend=optimum"),
        ({"name": "rtn", "w_bits": 4, "group_size": None, "symmetric": True, "static_groups": True},
         "method.static_groups=True is an option of method=gptq with a group_size only; method.name=rtn"),
        ({"name": "rtn", "w_bits": 4, "group_size": 64, "symmetric": True, "static_groups": False},
         "method.static_groups=False is an option of method=gptq"),
        ({"name": "sparsegpt", "sparsity": 0.5, "structure": "unstructured", "damp_percent": 0.01, "static_groups": False},
         "method.name=sparsegpt has no GPTQ quantization groups"),
        ({"name": "wanda", "sparsity": 0.5, "static_groups": True}, "method.name=wanda"),
        ({"name": "magnitude", "sparsity": 0.5, "static_groups": True}, "method.name=magnitude"),
        ({"name": "spqr", "w_bits": 3, "group_size": 16, "damp_percent": 0.01, "static_groups": True}, "method.name=spqr"),
    ]
    for cfg, message in cases:
        with pytest.raises(ConfigError) as err:
            methods.validate_method(OmegaConf.create(cfg))  # before any model is known
        assert message in str(err.value) and "\n" not in str(err.value) and "Fix:" in str(err.value)


def test_cli_refuses_before_weights_load_exit_2(tmp_path):
    proc = run_cli(["method=rtn", "+method.static_groups=true", f"hydra.run.dir={tmp_path}/a", "logger=none"], tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = next(line for line in proc.stderr.splitlines() if "method.static_groups=True is an option of method=gptq" in line)
    assert line.startswith("calib_sweep: error:") and "Fix: drop method.static_groups" in line
    assert "Loading weights" not in proc.stderr + proc.stdout  # refused at validate, before the model loads
    proc = run_cli(["method.static_groups=maybe", f"hydra.run.dir={tmp_path}/b", "logger=none"], tmp_path, timeout=300)
    assert proc.returncode == 2 and "method.static_groups='maybe' must be true or false. Fix:" in proc.stderr


def test_config_keys_change_for_gptq_only():
    """Only GPTQ's config has the key; static_groups=true (llmcompressor) keeps the key GPTQ jobs had before
    (tests/test_replication_keys.py checks the 100 committed ones), false is a new key."""
    from calib_sweep.tracking import config_key

    resolved = OmegaConf.to_container(compose_cfg(["method=gptq"]), resolve=True)
    assert resolved["method"]["static_groups"] is False
    static = {**resolved, "method": {**resolved["method"], "static_groups": True}}
    before = {**resolved, "method": {k: v for k, v in resolved["method"].items() if k != "static_groups"}}
    assert config_key(static, "torch.float32") == config_key(before, "torch.float32") != config_key(resolved, "torch.float32")
    optimum = {**static, "method": {**static["method"], "backend": "optimum"}}
    assert config_key(optimum, "torch.float32") != config_key({**before, "method": {**before["method"], "backend": "optimum"}}, "torch.float32")
    for name in ("rtn", "awq", "spqr", "sparsegpt", "wanda", "magnitude", "dense"):
        assert "static_groups" not in compose_cfg([f"method={name}"]).method, name


def test_report_counts_an_older_gptq_result_as_static_groups():
    from calib_sweep.report.collect import with_defaults

    old = {"method": {"name": "gptq", "backend": "llmcompressor", "w_bits": 4}}
    assert with_defaults(old)["method"]["static_groups"] is True
    assert with_defaults({"method": {"name": "gptq", "backend": "optimum"}})["method"]["static_groups"] is False
    assert with_defaults({"method": {"name": "gptq", "static_groups": False}})["method"]["static_groups"] is False
    assert "static_groups" not in with_defaults({"method": {"name": "rtn"}})["method"]
    assert with_defaults({"method": {"name": "rtn"}})["selection"] == {"name": "random", "pool_factor": 1}


def test_jobs_on_the_tiny_model(tiny_model_dir, tiny_corpus, tmp_path, isolated_cache):
    """The default (static_groups=false) job runs this module, records it, and beats the static one's layer loss."""
    # groups of 16 in lazy blocks of 32: on layers 64 and 128 wide, g64 in blocks of 128 would fit every grid
    # before any update reaches the matrix (then both variants are one algorithm)
    base = tiny_overrides(tiny_model_dir, tiny_corpus) + ["method=gptq", "method.group_size=16", "method.block_size=32",
                                                           "eval.kl_windows=2"]
    dyn = run_job(compose_cfg(base + ["method.act_order=true", "method.save=true"]), tmp_path / "dyn")
    static = run_job(compose_cfg(base + ["method.act_order=true", "method.static_groups=true"]), tmp_path / "static")
    saved = json.loads((tmp_path / "dyn" / "results.json").read_text())
    assert saved["status"] == "ok" and saved["config"]["method"]["static_groups"] is False
    summary = saved["compression"]["summary"]
    assert summary["static_groups"] is False and summary["implementation"] == IMPLEMENTATION
    assert summary["layers_changed"] == 14 and summary["max_distinct_per_group"] <= 16  # act-order groups verified
    assert summary["layer_loss"] == pytest.approx(sum(saved["layers"]["library_error"]))
    assert all(e > 0 for e in saved["layers"]["library_error"]) and all(t > 0 for t in saved["layers"]["hessian_trace"])
    assert set(saved["compression"]["damping"].values()) == {0.01}
    s_summary = static["compression"]["summary"]
    assert s_summary["static_groups"] is True and s_summary["implementation"] == "llmcompressor"
    assert summary["layer_loss"] < s_summary["layer_loss"]
    for record in (dyn, static):
        assert 1 < record["metrics"]["perplexity/local_jsonl"] < 1000
    note = json.loads((tmp_path / "dyn" / "model" / methods.SAVE_RECORD).read_text())
    assert note["format"] == "dense" and "static_groups=false" in note["note"]
