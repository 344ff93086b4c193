"""experiment=replication_cpu keeps its config keys, so a resumed sweep still skips the committed replication's
jobs (issue 25 item 5). ``data/replication_cpu_keys.json`` holds the 100 keys computed at main 9ddafe3, the
code that last resumed the committed grid (docs/replication)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from calib_sweep.tracking import config_key

KEYS = json.loads((Path(__file__).parent / "data" / "replication_cpu_keys.json").read_text())
METHODS = ("gptq", "sparsegpt", "wanda", "rtn", "magnitude")
SOURCES = ("offline_wikipedia", "offline_news", "offline_science", "offline_fiction")


def key(*overrides: str) -> str:
    """The config key of ``experiment=replication_cpu`` + ``overrides`` (inside a Hydra config context)."""
    cfg = compose(config_name="config", overrides=["experiment=replication_cpu", *overrides])
    return config_key(OmegaConf.to_container(cfg, resolve=True), "torch.float32")


def test_every_replication_cpu_job_keeps_its_key():
    assert len(KEYS) == 100
    with initialize_config_module(config_module="calib_sweep.conf", version_base="1.3"):
        changed = []
        for m, d in itertools.product(METHODS, SOURCES):  # one compose per cell; the seed is a plain top-level int
            # GPTQ's committed jobs ran static group scales (llmcompressor): method.static_groups=true keeps their
            # keys; the default static_groups=false is the published algorithm, a new key (issue 26 item 1)
            static = ["method.static_groups=true"] if m == "gptq" else []
            resolved = OmegaConf.to_container(compose(config_name="config", overrides=[
                "experiment=replication_cpu", f"method={m}", f"dataset={d}", *static]), resolve=True)
            changed += [f"{m}/{d}/s{s}" for s in range(5)
                        if config_key({**resolved, "seed": s}, "torch.float32") != KEYS[f"{m}/{d}/s{s}"]]
        assert changed == []
        assert key("method=gptq", "dataset=offline_news", "seed=3", "method.static_groups=true") == KEYS["gptq/offline_news/s3"]
        assert key("method=gptq", "dataset=offline_news", "seed=3") != KEYS["gptq/offline_news/s3"]  # faithful GPTQ
        assert key("method=wanda", "dataset=offline_news", "seed=0", "method.sparsity=0.6") != KEYS["wanda/offline_news/s0"]
        # the zero-shot scorer (fast, the default, or lm-eval's hflm) gives the same numbers: not part of the key
        assert key("method=wanda", "dataset=offline_news", "seed=0", "eval.zeroshot.scorer=hflm") == KEYS["wanda/offline_news/s0"]
