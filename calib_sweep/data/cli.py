"""``python -m calib_sweep.data`` (also ``calib-sweep-data``): list sources, inspect and rebuild calibration sets.

Commands::

    sources [OVERRIDES...]              every dataset config with documents and tokens (calibration /
                                        held-out) for the model's tokenizer, and how many disjoint sets
                                        of samples.n_samples x samples.seq_len each can give
    inspect [--results FILE | OVERRIDES...] [--show N] [--no-model] [--activations] [--coverage]
            [--predictors [NAME,...]]
                                        statistics and anomaly flags of each sample of a calibration set,
                                        how many of the source's documents hold special-token strings
                                        (tokenized as text), and the set's distinct n-gram ratio, mean
                                        dense perplexity and activation coverage (the last two load the
                                        model; --no-model skips them); --predictors: the set's
                                        predictors (calib_sweep.data.predictors; all, or the named ones)
    rebuild FILE [--export OUT.jsonl]   rebuild the calibration set recorded in a results.json from its
                                        manifest (document ids and token spans), check its SHA-256, and
                                        optionally write the sequences' text (to publish the data)

OVERRIDES are the job's Hydra overrides, e.g. ``dataset=offline_news seed=3 samples=cpu model=...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from calib_sweep.errors import ConfigError


def compose(overrides: list[str]):
    """The job config for ``overrides``, exactly as ``python -m calib_sweep`` composes it.

    Raises:
        ConfigError: Hydra refuses an override (unknown group option, a key that needs ``+``, ...):
            Hydra's message on one line.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise ConfigError(" ".join(lines) or type(exc).__name__) from None


def _tokenizer(cfg):
    from calib_sweep import models

    return models.load_tokenizer(cfg.model)


def cmd_sources(overrides: list[str], out=sys.stdout) -> list[dict[str, Any]]:
    """Print and return one row per dataset config: kind, documents, tokens, disjoint sets."""
    from calib_sweep.data import build
    from calib_sweep.data.sampling import tokenize_documents
    from calib_sweep.data.sources import load_documents, split_documents

    from calib_sweep import models

    cfg = compose(overrides)
    tokenizer = _tokenizer(cfg)
    n, seq_len = int(cfg.samples.n_samples), int(cfg.samples.seq_len)
    slot_len = seq_len - (models.bos_token_id(cfg.model, tokenizer) is not None)  # text tokens per row
    separator = models.document_separator(cfg.model, tokenizer)
    rows = []
    for path in sorted(build.CONF_DATASET_DIR.glob("*.yaml")):
        source = OmegaConf.load(path)
        row: dict[str, Any] = {"name": path.stem, "loader": source.get("loader")}
        if source.get("loader") in ("hub", "self_generated", "mixture", "jsonl", "hf_disk"):
            row["note"] = {
                "hub": "Hugging Face Hub (not counted offline)", "self_generated": "written by the model",
                "mixture": "weighted mix of: " + ", ".join(str(c.dataset) for c in source.get("components") or []),
                "jsonl": "your own file (dataset.path)",
                "hf_disk": "your own saved dataset (dataset.path)",
            }[source.loader]
        else:
            try:
                docs = load_documents(source)
                calib, held = split_documents(docs, float(source.get("heldout_fraction", 0)))
                calib_tokens = sum(map(len, tokenize_documents(calib, tokenizer, separator)))
                held_tokens = sum(map(len, tokenize_documents(held, tokenizer, separator))) if held else 0
                row.update(
                    documents=len(docs), calibration_documents=len(calib), heldout_documents=len(held),
                    calibration_tokens=calib_tokens, heldout_tokens=held_tokens,
                    disjoint_sets=(calib_tokens // max(slot_len, 1)) // n,
                )
            except Exception as exc:  # one broken source must not hide the others
                row["note"] = f"unavailable: {exc}"
        rows.append(row)
    print(f"sources for tokenizer of {cfg.model.name}; disjoint sets of {n} x {seq_len} tokens", file=out)
    header = f"{'name':<22}{'loader':<26}{'docs':>7}{'calib tokens':>14}{'held-out tokens':>17}{'sets':>7}  note"
    print(header, file=out)
    for r in rows:
        print(
            f"{r['name']:<22}{str(r['loader']):<26}{r.get('documents', ''):>7}{r.get('calibration_tokens', ''):>14}"
            f"{r.get('heldout_tokens', ''):>17}{r.get('disjoint_sets', ''):>7}  {r.get('note', '')}",
            file=out,
        )
    return rows


def _load_model_if_needed(cfg, always: bool = False):
    from calib_sweep import models
    from calib_sweep.data import needs_model

    if not (always or needs_model(cfg.dataset, cfg.get("selection"))):
        return None
    device = models.resolve_device(cfg.device)
    return models.load_model(cfg.model, device, models.resolve_dtype(cfg.dtype, device))


def cmd_inspect(results: str | None, overrides: list[str], show: int, out=sys.stdout,
                use_model: bool = True, activations: bool = False, coverage: bool = False,
                predictors: list[str] | None = None) -> list[dict[str, Any]]:
    """Print statistics and flags of each sample, then the set's statistics
    (:func:`calib_sweep.data.inspect.set_stats`; ``use_model=False`` skips the two that need the dense
    model; the activation coverage only with ``coverage``, as it scores every window of the source) and, with
    ``activations``, per target layer the set's input-activation statistics on the dense
    model (:func:`calib_sweep.methods.diagnostics.activation_stats`); with ``predictors`` (a list; empty:
    all, or the token-only ones with ``use_model=False``) one line per predictor of
    :mod:`calib_sweep.data.predictors`; return the per-sample rows (with text).
    One line per document source counts its documents that hold special-token strings
    (:func:`calib_sweep.data.inspect.special_token_documents`; they are tokenized as text); one line
    names how the base weights were stored, and a warning follows when the composed method quantizes
    them onto a grid at or near that one (:mod:`calib_sweep.models.storage`).

    Raises:
        ConfigError: an unknown predictor name, or a model-based one with ``use_model=False``;
            ``activations`` or ``coverage`` together with ``use_model=False``, or
            ``use_model=False`` for a set that needs the model to be drawn (they contradict each other);
            a bad override or ``selection`` value (before any weights load).
    """
    for flag, given in (("--activations", activations), ("--coverage", coverage)):
        if given and not use_model:
            raise ConfigError(f"{flag} needs the dense model, but --no-model was given. Fix: drop one of the two.")
    if predictors is not None:
        from calib_sweep.data.predictors import resolve_names

        predictors = resolve_names(predictors, use_model)  # refused before anything loads
    from calib_sweep import models
    from calib_sweep.data import build_calibration_set, needs_model, validate_samples
    from calib_sweep.data import build
    from calib_sweep.data.inspect import (
        THRESHOLDS, format_set_stats, format_special_tokens, inspect_set, set_stats, special_token_documents,
    )
    from calib_sweep.data.sources import load_documents
    from calib_sweep.data.selection import validate_selection
    from calib_sweep.data.selection.scoring import check_model_fit

    cfg = OmegaConf.create(json.loads(Path(results).read_text())["config"]) if results else compose(overrides)
    # Everything that can be refused without weights is refused first (as a job does).
    validate_samples(cfg.samples.n_samples, cfg.samples.seq_len, cfg.seed,
                     allow_fewer=cfg.samples.get("allow_fewer", False))
    validate_selection(cfg.get("selection"), cfg.dataset)
    check_model_fit(cfg.get("selection"), models.load_config(cfg.model))
    if not use_model and needs_model(cfg.dataset, cfg.get("selection")):
        what = (f"dataset={cfg.dataset.name} is generated by" if cfg.dataset.get("loader") == "self_generated"
                else f"selection={cfg.selection.name} chooses windows by the scores of")
        raise ConfigError(f"--no-model was given, but {what} the dense model. Fix: drop --no-model.")
    tokenizer = _tokenizer(cfg)
    # Document sources are read once, for the set and for the special-token count (mixtures: per component).
    if cfg.dataset.get("loader") == "self_generated":
        sources = {}
    elif cfg.dataset.get("loader") == "mixture":
        sources = {str(c.name): load_documents(c) for c in (build.dataset_config(str(e.dataset)) for e in cfg.dataset.components)}
    else:
        sources = {str(cfg.dataset.name): load_documents(cfg.dataset)}
    model = _load_model_if_needed(cfg, always=use_model)
    bos = models.bos_token_id(cfg.model, tokenizer)
    separator = models.document_separator(cfg.model, tokenizer)
    calib = build_calibration_set(
        cfg.dataset, tokenizer, int(cfg.samples.n_samples), int(cfg.samples.seq_len), int(cfg.seed),
        allow_fewer=cfg.samples.get("allow_fewer", False), model=model,
        bos_token_id=bos, separator_token_id=separator, selection=cfg.get("selection"),
        docs=sources.get(str(cfg.dataset.name)) if cfg.dataset.get("loader") != "mixture" else None,
    )
    expect = "code" if "code" in str(cfg.dataset.name) else "en"
    rows = inspect_set(calib, tokenizer, expect_language=expect)
    print(
        f"calibration set {calib.source} seed={calib.seed}: {calib.n_samples} x {calib.seq_len} tokens, "
        f"sha256 {calib.token_sha256[:16]}; flag thresholds {THRESHOLDS}",
        file=out,
    )
    print(f"{'#':>4}{'chars':>7}{'non-alpha':>11}{'rep.lines':>11}{'distinct':>10}{'lang':>7}  flags", file=out)
    for r in rows:
        print(
            f"{r['index']:>4}{r['chars']:>7}{r['non_alpha']:>11.1%}{r['repeated_lines']:>11.1%}"
            f"{r['distinct_tokens']:>10.1%}{r['language']:>7}  {'; '.join(r['flags'])}",
            file=out,
        )
    flagged = [r for r in rows if r["flags"]]
    print(f"{len(flagged)} of {len(rows)} samples flagged", file=out)
    for name, docs in sources.items():
        print(format_special_tokens(special_token_documents(docs, tokenizer), name, calib.separator_token_id, bos), file=out)
    stats = set_stats(calib, model=model if use_model else None, dataset_cfg=cfg.dataset, tokenizer=tokenizer,
                      selection=cfg.get("selection"), separator_token_id=separator, coverage=coverage)
    print(format_set_stats(stats, calib), file=out)
    from calib_sweep.models.storage import describe, grid_warning, weights_storage

    storage = weights_storage(cfg.model)
    print(f"base weights: {describe(storage)}", file=out)
    warning = grid_warning(storage, cfg.method)
    if warning:
        print(f"warning: method={cfg.method.name}: {warning}", file=out)
    if activations:
        from calib_sweep.methods.diagnostics import OUTLIER_RMS, activation_stats

        per_layer = activation_stats(model, calib.input_ids)
        print(f"input activations per layer on the dense model ({calib.n_samples * calib.seq_len} tokens): mean token "
              f"L2 norm, largest/mean channel RMS, share of entries above {OUTLIER_RMS:g} x the layer's RMS", file=out)
        print(f"{'layer':<44}{'mean norm':>11}{'max ch.':>9}{'outliers':>10}", file=out)
        for name, figures in per_layer.items():
            print(f"{name:<44}{figures['mean_norm']:>11.3g}{figures['max_channel_ratio']:>9.1f}"
                  f"{figures['outlier_fraction']:>10.2e}", file=out)
    if predictors is not None:
        _print_predictors(cfg, calib, tokenizer, model if use_model else None, sources, separator, predictors, out,
                          {k: stats[k] for k in ("activation_coverage",) if stats.get(k) is not None})
    for r in rows[:show]:
        print(f"--- sample {r['index']} ---\n{r['text'][:600]}", file=out)
    return rows


def _print_predictors(cfg, calib, tokenizer, model, sources, separator, names: list[str], out,
                      features: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute and print the predictors ``names`` of ``calib`` (one line each: value, unit, or ``n/a (reason)``);
    ``features``: values already computed (``--coverage``'s activation coverage)."""
    import numpy as np

    from calib_sweep.data import heldout_token_ids
    from calib_sweep.data.predictors import PREDICTORS, SetContext, compute

    heldout = None
    if cfg.dataset.get("loader") not in ("mixture", "self_generated"):
        heldout = heldout_token_ids(cfg.dataset, tokenizer, docs=sources.get(str(cfg.dataset.name)),
                                    separator_token_id=separator).numpy()
    context = SetContext(input_ids=calib.input_ids.numpy(), sequences=calib.sequences, bos_token_id=calib.bos_token_id,
                         separator_token_id=calib.separator_token_id, heldout_tokens=heldout, model=model, calib=calib,
                         dataset_cfg=cfg.dataset, tokenizer=tokenizer, selection=cfg.get("selection"),
                         features=dict(features or {}))
    values = compute(context, names)
    print(f"predictors of the set ({len(names)}):", file=out)
    for name in names:
        shown = f"{values[name]:.6g}" if values.get(name) is not None else f"n/a ({values.get(name + '_na')})"
        print(f"  {name:<26}{shown:>12}  {PREDICTORS[name].unit}", file=out)
    return values


def rebuild_input_ids(record: dict[str, Any], tokenizer=None) -> torch.Tensor:
    """Rebuild a recorded calibration set from its manifest.

    Document sources and mixtures are rebuilt from the manifest alone (document ids and token
    spans), without re-running the sampler; self-generated sets are generated again with the
    recorded model and settings (equal on the same hardware).

    Args:
        record: a ``results.json`` as a dict (needs ``config`` and ``calibration``).
        tokenizer: the model's tokenizer (loaded from the config when None).

    Returns:
        ``int64`` tensor ``[n_samples, seq_len]``.

    Raises:
        ConfigError: the record has no manifest, or a document named in it no longer exists.
    """
    from calib_sweep.data import build, build_calibration_set
    from calib_sweep.data.sampling import tokenize_documents
    from calib_sweep.data.sources import load_documents

    if "calibration" not in record:
        raise ConfigError("this results.json has no calibration manifest (the job failed before drawing it).")
    cfg = OmegaConf.create(record["config"])
    manifest = record["calibration"]
    tokenizer = tokenizer or _tokenizer(cfg)
    if "generation" in manifest:
        from calib_sweep import models

        model = _load_model_if_needed(cfg)
        return build_calibration_set(cfg.dataset, tokenizer, manifest["n_samples"], manifest["seq_len"],
                                     manifest["seed"], model=model, selection=cfg.get("selection"),
                                     separator_token_id=models.document_separator(cfg.model, tokenizer)).input_ids
    # Manifests name their separator; older ones (without the key) used the tokenizer's EOS token.
    separator = manifest.get("separator_token_id", -1)
    tokens: dict[str, dict[str, list[int]]] = {}
    rows = []
    for seq in manifest["sequences"]:
        source = seq.get("source", cfg.dataset.name)
        if source not in tokens:
            source_cfg = cfg.dataset if source == cfg.dataset.name else build.dataset_config(source)
            docs = load_documents(source_cfg)
            wanted = {p["doc_id"] for s in manifest["sequences"] if s.get("source", cfg.dataset.name) == source
                      for p in s["pieces"]}
            chosen = [d for d in docs if d.doc_id in wanted]
            missing = wanted - {d.doc_id for d in chosen}
            if missing:
                raise ConfigError(f"documents {sorted(missing)[:3]} of source {source!r} no longer exist; cannot rebuild.")
            tokens[source] = {d.doc_id: ids for d, ids in zip(chosen, tokenize_documents(chosen, tokenizer, separator))}
        bos = [] if manifest.get("bos_token_id") is None else [int(manifest["bos_token_id"])]
        rows.append(bos + [t for p in seq["pieces"] for t in tokens[source][p["doc_id"]][p["start"] : p["end"]]])
    return torch.tensor(rows, dtype=torch.long)


def _check_share(selection: dict[str, Any], sequences: list[dict[str, Any]], out) -> bool:
    """Print and return whether a manifest's chosen windows lie in its recorded share(s) and its strategy is known."""
    from calib_sweep.data.selection import STRATEGIES

    strategy = selection.get("strategy")
    pool = selection.get("pool")
    if strategy not in STRATEGIES:
        print(f"MISMATCH: selection strategy {strategy!r} is not one of {sorted(STRATEGIES)}", file=out)
        return False
    if not isinstance(pool, dict) or not pool:
        print(f"MISMATCH: selection={strategy} records no pool (calibration.selection.pool), so disjointness "
              "across seeds cannot be checked", file=out)
        return False
    pools = pool if "slots" not in pool else {None: pool}  # a mixture records one share per source
    outside = []
    for seq in sequences:
        share = pools.get(seq.get("source") if None not in pools else None) or {}
        if seq.get("slot") not in set(share.get("slots", ())):
            outside.append(seq.get("slot"))
    print(f"{'MISMATCH: ' if outside else ''}selection={strategy}: {len(sequences) - len(outside)} of {len(sequences)} "
          "windows lie in the recorded share" + (f"; slots {outside[:5]} do not" if outside else ""), file=out)
    return not outside


def cmd_rebuild(results: str, export: str | None, out=sys.stdout) -> bool:
    """Rebuild, compare hashes, optionally export text; return whether the hash matched (and, for a
    selected set, whether its strategy is known and every chosen window lies in the recorded share)."""
    from calib_sweep.data.sampling import token_hash

    record = json.loads(Path(results).read_text())
    cfg = OmegaConf.create(record["config"])
    tokenizer = _tokenizer(cfg)
    ids = rebuild_input_ids(record, tokenizer)
    expected = record["calibration"]["token_sha256"]
    got = token_hash(ids)
    ok = got == expected
    print(f"{'OK' if ok else 'MISMATCH'}: rebuilt {ids.shape[0]} x {ids.shape[1]} tokens, sha256 {got}"
          + ("" if ok else f" != recorded {expected}"), file=out)
    selection = record["calibration"].get("selection")
    if selection:  # the chosen windows must lie in the recorded share: the proof of disjointness across seeds
        ok = _check_share(selection, record["calibration"]["sequences"], out) and ok
    if export:
        with open(export, "w", encoding="utf-8") as handle:
            for index, (row, seq) in enumerate(zip(ids.tolist(), record["calibration"]["sequences"])):
                handle.write(json.dumps({"index": index, "pieces": seq["pieces"], "text": tokenizer.decode(row)}) + "\n")
        print(f"wrote {ids.shape[0]} sequences to {export}", file=out)
    return ok


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for invalid input, 1 for a hash mismatch)."""
    parser = argparse.ArgumentParser(prog="calib-sweep-data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_sources = sub.add_parser("sources", help="list every source with its size for the model's tokenizer")
    p_sources.add_argument("overrides", nargs="*")
    p_inspect = sub.add_parser("inspect", help="statistics and anomaly flags of a calibration set's samples")
    p_inspect.add_argument("--results", help="a results.json whose calibration set to inspect")
    p_inspect.add_argument("--show", type=int, default=0, help="print the text of the first N samples")
    p_inspect.add_argument("--no-model", action="store_true",
                           help="skip the set statistics that need the dense model (perplexity, activation coverage)")
    p_inspect.add_argument("--coverage", action="store_true",
                           help="also the set's activation coverage of the source (scores every window of the source "
                                "with the model: minutes on a CPU the first time, cached)")
    p_inspect.add_argument("--activations", action="store_true",
                           help="per target layer: the set's input-activation norm and outlier statistics on the dense model")
    p_inspect.add_argument("--predictors", nargs="?", const="", default=None, metavar="NAME,...",
                           help="the set's predictors (calib_sweep.data.predictors): all of them, or the comma-separated "
                                "names; with --no-model only the token-only ones")
    p_inspect.add_argument("overrides", nargs="*")
    p_rebuild = sub.add_parser("rebuild", help="rebuild a recorded calibration set and check its hash")
    p_rebuild.add_argument("results")
    p_rebuild.add_argument("--export", help="write the sequences' text as JSON lines to this file")
    args = parser.parse_args(argv)
    if getattr(args, "predictors", None) and "=" in args.predictors:  # `--predictors dataset=x`: an override, not names
        args.overrides.insert(0, args.predictors)
        args.predictors = ""
    try:
        if args.command == "sources":
            cmd_sources(args.overrides)
        elif args.command == "inspect":
            cmd_inspect(args.results, args.overrides, args.show, use_model=not args.no_model, activations=args.activations,
                        coverage=args.coverage,
                        predictors=None if args.predictors is None else [n for n in args.predictors.split(",") if n])
        else:
            return 0 if cmd_rebuild(args.results, args.export) else 1
    except (ConfigError, FileNotFoundError) as exc:
        print(f"calib-sweep-data: error: {exc}", file=sys.stderr)
        return 2
    return 0
