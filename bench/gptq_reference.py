"""GPTQ of a finished job, redone with the authors' reference code, figures side by side.

The oracle for :mod:`calib_sweep.methods.gptq_faithful`: the reference implementation of Frantar et al.
2023 (github.com/IST-DASLab/gptq, its ``gptq.py`` and ``quant.py`` imported UNMODIFIED from
``--reference``) is run on the job's exact calibration rows (rebuilt from its manifest with
:func:`calib_sweep.data.cli.rebuild_input_ids`, SHA-256 checked against the recorded one, row order
perturbation applied as the job did) over the job's model in float32, layers quantized in sequence as the
reference ``llama.py`` does (inputs of decoder layer 0 captured once, each layer's ``nn.Linear`` Hessians
from the layer's inputs, then the layer's outputs recomputed with its quantized weights as the next
layer's inputs; no ``--true-sequential``).  The held-out perplexity is then measured on the job's own
held-out windows (:func:`calib_sweep.data.heldout_token_ids`, :func:`calib_sweep.evaluation.perplexity`
with the job's ``eval.perplexity``), and printed beside the job's ``results.json`` figures:

    perplexity/<text>   summed layer loss (sum over layers of the reference's "error",
                        sum (w - q)^2 / U_jj^2 / 2; the job's results.json layers.library_error summed)

The reference settings come from the job's config: ``w_bits``, ``group_size`` (null = -1),
``symmetric`` (``--sym``), ``damp_percent`` (``--percdamp``), ``act_order``, ``static_groups`` (a config
without the key: true, see :func:`calib_sweep.methods.gptq.static_groups`), ``block_size``; ``--act-order``
and ``--static-groups`` override the last two (then the job's figures are not of the same variant).

The only adaptations are outside the reference files: ``torch.cuda.synchronize`` is a no-op when no
GPU is present (``fasterquant`` calls it unconditionally), and ``fasterquant``'s printed ``error`` is read
from its stdout.  Get the reference with ``git clone https://github.com/IST-DASLab/gptq /tmp/gptq_ref``
(or ``git show HEAD:gptq.py`` / ``HEAD:quant.py`` from a mirror into that folder).

    python bench/gptq_reference.py <job folder> [--reference /tmp/gptq_ref] [--act-order true|false]
                                   [--static-groups true|false] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import math
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calib_sweep import models  # noqa: E402
from calib_sweep.data import dataset_config, heldout_token_ids  # noqa: E402
from calib_sweep.data.cli import rebuild_input_ids  # noqa: E402
from calib_sweep.data.sampling import token_hash  # noqa: E402
from calib_sweep.evaluation.perplexity import perplexity  # noqa: E402
from calib_sweep.methods.gptq import static_groups as job_static_groups  # noqa: E402


def _flag(value: str | None, default: bool) -> bool:
    return default if value is None else value.lower() in ("1", "true", "yes")


def load_reference(folder: str):
    """``(gptq module, quant module)`` imported from ``folder`` (as the reference scripts do: ``from quant import *``)."""
    folder = str(Path(folder).resolve())
    if not (Path(folder) / "gptq.py").is_file() or not (Path(folder) / "quant.py").is_file():
        raise SystemExit(f"{folder} lacks gptq.py / quant.py. Fix: git clone https://github.com/IST-DASLab/gptq {folder}")
    sys.path.insert(0, folder)
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *args, **kwargs: None  # fasterquant calls it unconditionally
    with contextlib.redirect_stdout(io.StringIO()):  # "CUDA extension not installed."
        quant = importlib.import_module("quant")
        gptq = importlib.import_module("gptq")
    return gptq, quant


def calibration_rows(record: dict, tokenizer) -> torch.Tensor:
    """The job's calibration rows ``int64 [n, L]`` as compress saw them (hash checked, row order applied)."""
    ids = rebuild_input_ids(record, tokenizer)
    expected = record["calibration"]["token_sha256"]
    if token_hash(ids) != expected:
        raise SystemExit(f"rebuilt calibration set has sha256 {token_hash(ids)} != recorded {expected}")
    order = (record["calibration"].get("row_order") or {}).get("order")
    return ids[torch.tensor(order)] if order else ids


@torch.no_grad()
def reference_quantize(model, rows: torch.Tensor, gptq_mod, quant_mod, settings: dict) -> tuple[float, dict[str, float]]:
    """Quantize ``model``'s decoder layers in place with the reference ``GPTQ`` (llama.py's sequential loop).

    Returns:
        ``(summed layer loss, {layer name: loss})``, losses as ``fasterquant`` prints them.
    """
    layers = model.model.layers
    captured: list[tuple[torch.Tensor, dict]] = []

    class Catcher(torch.nn.Module):  # llama.py's trick: record layer 0's inputs, then stop the forward
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, hidden, *args, **kwargs):
            captured.append((hidden, kwargs))
            raise ValueError

    first = layers[0]
    layers[0] = Catcher(first)
    for row in rows:
        try:
            model(input_ids=row.unsqueeze(0), use_cache=False)
        except ValueError:
            pass
    layers[0] = first
    inps = [hidden for hidden, _ in captured]
    kwargs = [kw for _, kw in captured]

    def run(layer):
        outs = []
        for inp, kw in zip(inps, kwargs):
            out = layer(inp, **kw)
            outs.append(out[0] if isinstance(out, tuple) else out)
        return outs

    losses: dict[str, float] = {}
    for index, layer in enumerate(layers):
        subset = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
        quantizers = {}
        for name, module in subset.items():
            quantizers[name] = gptq_mod.GPTQ(module)
            quantizers[name].quantizer = quant_mod.Quantizer()
            quantizers[name].quantizer.configure(settings["wbits"], perchannel=True, sym=settings["sym"], mse=False)
        handles = [module.register_forward_hook(
            (lambda name: lambda _m, inp, out: quantizers[name].add_batch(inp[0].data, out.data))(name))
            for name, module in subset.items()]
        run(layer)
        for handle in handles:
            handle.remove()
        for name in subset:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                quantizers[name].fasterquant(blocksize=settings["blocksize"], percdamp=settings["percdamp"],
                                             groupsize=settings["groupsize"], actorder=settings["actorder"],
                                             static_groups=settings["static_groups"])
            found = re.findall(r"^error (\S+)$", printed.getvalue(), re.M)
            losses[f"model.layers.{index}.{name}"] = float(found[-1])
            quantizers[name].free()
        inps = run(layer)  # the quantized layer's outputs feed the next layer
    return sum(losses.values()), losses


def job_figures(record: dict) -> tuple[dict[str, float], float | None]:
    """The job's ``perplexity/*`` metrics and its summed layer loss (``layers.library_error``), if recorded."""
    ppl = {k: v for k, v in (record.get("metrics") or {}).items() if k.startswith("perplexity/")}
    loss = ((record.get("compression") or {}).get("summary") or {}).get("layer_loss")
    layers = record.get("layers") or {}
    errors = layers.get("library_error") if isinstance(layers, dict) else None
    if loss is None and errors and all(isinstance(e, (int, float)) for e in errors):
        loss = float(sum(errors))
    return ppl, loss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("job", help="a finished job folder (results.json, calibration.json)")
    parser.add_argument("--reference", default="/tmp/gptq_ref", help="folder holding the reference gptq.py and quant.py")
    parser.add_argument("--act-order", default=None, help="true/false (default: the job's method.act_order)")
    parser.add_argument("--static-groups", default=None, help="true/false (default: the job's method.static_groups)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    record = json.loads((Path(args.job) / "results.json").read_text())
    cfg = record["config"]
    method = cfg["method"]
    if method["name"] != "gptq":
        raise SystemExit(f"{args.job} is a method={method['name']} job; this compares GPTQ jobs only")
    gptq_mod, quant_mod = load_reference(args.reference)
    from omegaconf import OmegaConf

    ocfg = OmegaConf.create(cfg)
    settings = {
        "wbits": int(method["w_bits"]),
        "groupsize": -1 if method["group_size"] in (None, -1) else int(method["group_size"]),
        "sym": bool(method["symmetric"]),
        "percdamp": float(method["damp_percent"]),
        "blocksize": int(method.get("block_size", 128)),
        "actorder": _flag(args.act_order, bool(method.get("act_order", False))),
        "static_groups": _flag(args.static_groups, job_static_groups(ocfg.method)),
    }
    same_variant = (settings["actorder"] == bool(method.get("act_order", False))
                    and settings["static_groups"] == job_static_groups(ocfg.method))
    torch.manual_seed(0)
    tokenizer = models.load_tokenizer(ocfg.model)
    rows = calibration_rows(record, tokenizer)
    model = models.load_model(ocfg.model, torch.device("cpu"), torch.float32)
    start = time.perf_counter()
    total, per_layer = reference_quantize(model, rows, gptq_mod, quant_mod, settings)
    seconds = time.perf_counter() - start

    separator = models.document_separator(ocfg.model, tokenizer)
    bos = models.bos_token_id(ocfg.model, tokenizer)
    ppl_cfg = ocfg.eval.perplexity
    ours: dict[str, float] = {}
    for name in ppl_cfg.texts:
        source = ocfg.dataset if name == ocfg.dataset.name else dataset_config(str(name))
        tokens = heldout_token_ids(source, tokenizer, separator_token_id=separator)
        result = perplexity(model, tokens, int(ppl_cfg.seq_len), ppl_cfg.get("max_windows"), int(ppl_cfg.batch_size),
                            text=f"{name}/heldout", bos_token_id=bos)
        ours[f"perplexity/{name}"] = result["perplexity"]
    job_ppl, job_loss = job_figures(record)

    print(f"job {args.job}: {rows.shape[0]} x {rows.shape[1]} calibration tokens (sha256 "
          f"{record['calibration']['token_sha256'][:12]}), reference settings {settings}, {seconds:.0f} s")
    if not same_variant:
        print("note: the reference ran another variant than the job (act_order/static_groups overridden)")
    print(f"{'figure':<34}{'reference':>12}{'job':>12}{'job/ref - 1':>13}")
    out = {"settings": settings, "reference": {}, "job": {}, "same_variant": same_variant, "seconds": seconds}
    for key, value in ours.items():
        theirs = job_ppl.get(key)
        rel = f"{theirs / value - 1:+.3%}" if theirs else "-"
        print(f"{key:<34}{value:>12.4f}{theirs if theirs is not None else float('nan'):>12.4f}{rel:>13}")
        out["reference"][key], out["job"][key] = value, theirs
    rel = f"{job_loss / total - 1:+.3%}" if job_loss else "-"
    print(f"{'summed layer loss':<34}{total:>12.2f}{job_loss if job_loss is not None else math.nan:>12.2f}{rel:>13}")
    out["reference"]["layer_loss"], out["job"]["layer_loss"] = total, job_loss
    out["reference"]["layers"] = per_layer
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
