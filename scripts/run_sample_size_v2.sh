#!/usr/bin/env bash
# Issue 26 item 4: the GPTQ sample-size curve rerun with the faithful GPTQ (static_groups=false) at the
# testbed's 3-bit g64 asymmetric setting: experiment=sample_size_cpu's grid (n_samples 1, 2, 4, ..., 128
# sequences of 256 tokens of offline_wikipedia, 3 disjoint sets each), GPTQ only.  Resumes by config key;
# a claimed sweep folder is never reused, so a rerun writes <dir>_2.  One torch job at a time.
# Then: python -m calib_sweep.report multirun/sample_size_v2* --out docs/replication_v2/sample_size --no-wandb
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m calib_sweep -m experiment=sample_size_cpu method=gptq method.static_groups=false method.w_bits=3 \
    method.group_size=64 method.symmetric=false logger=none \
    "hydra.sweep.dir=${MULTIRUN_DIR:-multirun}/sample_size_v2" "$@"
