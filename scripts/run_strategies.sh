#!/usr/bin/env bash
# Issue 29 item 3: the two predictor-based selection strategies (zipf_diversity, outlier_coverage) against
# random on experiment=selection's design (SmolLM2-135M, offline_wikipedia and offline_news, seeds 0-2,
# 16 x 256 tokens, every strategy, random included, picking from the same share of pool_factor 4), for
# Wanda and SparseGPT at 50% and the faithful GPTQ at the testbed's 3-bit g64 asymmetric setting.
# 54 jobs, about 1.3 job-hours on a 2-core CPU.  Resumes by config key; a claimed sweep folder is never
# reused, so a rerun writes <dir>_2.  One torch job at a time.
# Then: python -m calib_sweep.report multirun/strategies/selection_wanda multirun/strategies/selection_sparsegpt \
#         multirun/strategies/selection_gptq3 --out docs/predictors/strategies --no-wandb
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DIR=${MULTIRUN_DIR:-multirun}/strategies
STRATEGIES=selection=random,zipf_diversity,outlier_coverage
"$PY" -m calib_sweep -m experiment=selection "$STRATEGIES" method=wanda logger=none "hydra.sweep.dir=$DIR/selection_wanda" "$@"
"$PY" -m calib_sweep -m experiment=selection "$STRATEGIES" method=sparsegpt logger=none "hydra.sweep.dir=$DIR/selection_sparsegpt" "$@"
"$PY" -m calib_sweep -m experiment=selection "$STRATEGIES" method=gptq method.w_bits=3 method.group_size=64 \
    method.symmetric=false method.static_groups=false logger=none "hydra.sweep.dir=$DIR/selection_gptq3" "$@"
