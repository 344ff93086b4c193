#!/usr/bin/env bash
# The runs behind docs/selection/ (issue 16): experiment=selection one method at a time (Wanda, the
# cheapest and least noisy, first; then SparseGPT, then GPTQ), so a run cut short still compares every
# strategy for the methods it finished.  Never two torch jobs at once on a 2-core machine.  Each part
# resumes by config key (selection=random jobs are experiment=replication_cpu's jobs and are reused when
# multirun/.index holds them); a claimed sweep folder is never reused, so a rerun writes <dir>_2.
# Then: python -m calib_sweep.report multirun/selection_*/ --out docs/selection --no-wandb
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
OUT=${MULTIRUN_DIR:-multirun}  # where the sweep folders go (and resume.index_dir=$OUT/.index is the default index)
for method in wanda sparsegpt gptq; do
  echo "== $(date -u +%FT%TZ) selection $method"
  "$PY" -m calib_sweep -m experiment=selection "method=$method" logger=none \
      "hydra.sweep.dir=$OUT/selection_$method" "$@"
  echo "== $(date -u +%FT%TZ) selection $method exit $?"
done
