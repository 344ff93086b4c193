"""Helpers to compose configs and run the CLI in tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module


def compose_cfg(overrides: list[str]):
    """The job config as ``python -m calib_sweep <overrides>`` would compose it."""
    with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def tiny_overrides(model_dir: Path, corpus: Path) -> list[str]:
    """Overrides that point a job at the tiny test model and a local JSON-lines corpus."""
    return [
        "model.source=pretrained", f"model.path={model_dir}", "model.name=tiny-llama", "model.separator_token=null",
        "dataset=local_jsonl", f"dataset.path={corpus}", "samples=tiny", "logger=none",
        "eval.perplexity.texts=[local_jsonl]", "eval.perplexity.seq_len=64", "eval.perplexity.max_windows=8",
        "eval.zeroshot.tasks=[]",
    ]


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``python -m calib_sweep ARGS`` in ``cwd`` and return the finished process."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "calib_sweep", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def tiny_arc_file(folder: Path, n: int = 6) -> Path:
    """``n`` ARC-Easy-schema items of pseudo-prose (seeded) as ``folder/arc_tiny.jsonl``, for lm-eval on the tiny model."""
    import json
    import random

    from conftest import WORDS

    rng = random.Random(1)
    path = folder / "arc_tiny.jsonl"
    with open(path, "w") as handle:
        for i in range(n):
            texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(4)]
            question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15)))
            row = {"id": f"q{i}", "question": question, "choices": {"text": texts, "label": list("ABCD")},
                   "answerKey": "ABCD"[i % 4]}
            handle.write(json.dumps(row) + "\n")
    return path



SLOW_COMPRESS_SITE = '''
"""Test-only: every Python process of the sweep (launcher, joblib workers, submitit tasks) replaces
calib_sweep.methods.compress, when that module loads, by one that marks its pid and sleeps (with
SLOW_COMPRESS_SLURM_TASK set: only in that SLURM array task; the others compress as usual)."""
import os, sys, time
from pathlib import Path


class _SlowCompress:
    def find_spec(self, name, path=None, target=None):
        if name != "calib_sweep.methods":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)

            fast = module.compress
            only = os.environ.get("SLOW_COMPRESS_SLURM_TASK")

            def slow(*args, **kwargs):
                if only is not None and os.environ.get("SLURM_ARRAY_TASK_ID") != only:
                    return fast(*args, **kwargs)
                Path(os.environ["SLOW_COMPRESS_MARKS"], str(os.getpid())).write_text("")
                time.sleep(float(os.environ.get("SLOW_COMPRESS_S", "300")))
            module.compress = slow
        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _SlowCompress())
'''


def slow_compress_env(folder: Path, slurm_task: int | None = None) -> tuple[dict[str, str], Path]:
    """Environment under which every ``calib_sweep`` process of a sweep (its workers and tasks too) hangs in
    the compress stage (``calib_sweep.methods.compress`` sleeps), after writing ``<marks>/<pid>``.

    Args:
        folder: where the ``sitecustomize.py`` folder and the marks folder are made.
        slurm_task: when given, only the SLURM array task with this ``SLURM_ARRAY_TASK_ID`` hangs; the
            others compress as usual.

    Returns:
        ``(env overrides, marks folder)``: ``PYTHONPATH`` with a ``sitecustomize.py`` that patches the
        module as it loads, ``SLOW_COMPRESS_MARKS``.
    """
    site = folder / "slow_site"
    marks = folder / "compressing"
    site.mkdir(parents=True, exist_ok=True)
    marks.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SLOW_COMPRESS_SITE)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "SLOW_COMPRESS_MARKS": str(marks)}
    if slurm_task is not None:
        env["SLOW_COMPRESS_SLURM_TASK"] = str(slurm_task)
    return env, marks
