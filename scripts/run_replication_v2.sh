#!/usr/bin/env bash
# experiment=replication_cpu_v2 (issue 28 item 3), run seed by seed so that a partial grid is balanced: for
# each calibration-set seed 0-9, every (method, source) cell; data-free controls on seeds 0-1; the noise floor
# (row-order seeds 1, 2 on seeds 0-1, offline_wikipedia) after seed 1.  Each step is one Hydra multirun under
# `flock /tmp/cpu.lock` when that lock exists.  Resumable: finished jobs are skipped by config key, from
# multirun/.index or the committed archive docs/replication_v2/records (resume.archive_dir).
#   nohup scripts/run_replication_v2.sh > multirun/replication_v2.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${REPLICATION_OUT:-multirun/replication_v2}
LOCK_FILE=${REPLICATION_LOCK-/tmp/cpu.lock}
LOCK=()
[ -n "$LOCK_FILE" ] && [ -e "$LOCK_FILE" ] && LOCK=(flock "$LOCK_FILE")
SOURCES=offline_wikipedia,offline_news,offline_science
QUANT=(method.w_bits=3 method.group_size=64 method.symmetric=false)

step() {  # step <name> <overrides...>
  local name=$1; shift
  echo "$(date -u +%FT%TZ) start $name: $*"
  "${LOCK[@]}" "$PY" -m calib_sweep -m experiment=replication_cpu_v2 "$@" "hydra.sweep.dir=$OUT/$name"
  echo "$(date -u +%FT%TZ) end $name rc=$?"
}

for s in 0 1 2 3 4 5 6 7 8 9; do
  step "s${s}_gptq" method=gptq method.static_groups=false "${QUANT[@]}" dataset=$SOURCES seed=$s
  step "s${s}_pruning" method=sparsegpt,wanda dataset=$SOURCES seed=$s
  if [ "$s" -le 1 ]; then
    step "s${s}_controls_rtn" method=rtn "${QUANT[@]}" dataset=$SOURCES seed=$s
    step "s${s}_controls_magnitude" method=magnitude dataset=$SOURCES seed=$s
  fi
  if [ "$s" = 1 ]; then
    for r in 0 1; do
      step "noise_s${r}_gptq" method=gptq method.static_groups=false "${QUANT[@]}" dataset=offline_wikipedia \
        seed=$r perturb.row_order_seed=1,2
      step "noise_s${r}_pruning" method=sparsegpt,wanda dataset=offline_wikipedia seed=$r perturb.row_order_seed=1,2
    done
  fi
done
echo "$(date -u +%FT%TZ) replication_v2 done"
