#!/usr/bin/env bash
# Issue 26 item 3: the testbed grid (RTN vs GPTQ, static_groups true/false x symmetric true/false) on
# SmolLM2-135M at 4-bit g64, 3-bit g64, 3-bit per-channel and 2-bit g64, and gemma-3-270m at 4-bit g64.
# One sweep per grid point, each under `flock /tmp/cpu.lock` when that lock exists (a shared 2-core
# machine), in multirun/testbed/<point>[_N]/.  Resumable: rerun this script and finished jobs are
# skipped by config key (multirun/.index); a re-used sweep folder becomes <point>_2 (calib_sweep/claims.py).
# Each finished point's results.json is copied to docs/testbed/records/<point>.json (committed), and a point
# with an ok record there is skipped, so a new checkout resumes the grid where the last commit left it.
#   nohup scripts/run_testbed.sh > multirun/testbed/run.log 2>&1 &
#   python bench/testbed_table.py        # -> docs/testbed/testbed.csv, docs/testbed/README.md
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${TESTBED_OUT:-multirun/testbed}
ARCHIVE=${TESTBED_ARCHIVE:-docs/testbed/records}
mkdir -p "$OUT" "$ARCHIVE"
LOCK_FILE=${TESTBED_LOCK-/tmp/cpu.lock}   # TESTBED_LOCK= (empty): no lock
LOCK=()
[ -n "$LOCK_FILE" ] && [ -e "$LOCK_FILE" ] && LOCK=(flock "$LOCK_FILE")

point() {  # point <name> <overrides...>
  local name=$1; shift
  if grep -qs '"status": "ok"' "$ARCHIVE/$name.json"; then
    echo "$(date -u +%FT%TZ) archived $name: $ARCHIVE/$name.json"; return 0
  fi
  echo "$(date -u +%FT%TZ) start $name: $*"
  "${LOCK[@]}" "$PY" -m calib_sweep -m experiment=testbed "$@" "hydra.sweep.dir=$OUT/$name"
  local rc=$?
  local done_job
  done_job=$(grep -ls '"status": "ok"' "$OUT/$name"/*/results.json | head -n 1)
  [ -n "$done_job" ] && cp "$done_job" "$ARCHIVE/$name.json"
  echo "$(date -u +%FT%TZ) end $name rc=$rc"
}

rtn() {  # rtn <model> <bits> <group>
  local m=$1 b=$2 g=$3
  for sym in true false; do
    point "${m}_w${b}_g${g}_rtn_sym${sym}" model="$m" method=rtn method.w_bits="$b" \
      method.group_size="$g" method.symmetric="$sym" seed=0
  done
}

gptq() {  # gptq <model> <bits> <group> <seed>
  local m=$1 b=$2 g=$3 s=$4 statics="false true"
  [ "$g" = null ] && statics=false   # per-channel: no groups, so static_groups does not apply (refused, exit 2)
  for static in $statics; do
    for sym in true false; do
      point "${m}_w${b}_g${g}_gptq_static${static}_sym${sym}_s${s}" model="$m" method=gptq \
        method.w_bits="$b" method.group_size="$g" method.symmetric="$sym" \
        method.static_groups="$static" seed="$s"
    done
  done
}

S=smollm2_135m
G=gemma3_270m
# Settings not measured yet first (seed 0, then seeds 1-2), then the 4-bit / 3-bit g64 settings.
rtn $S 3 null; gptq $S 3 null 0
rtn $S 2 64;   gptq $S 2 64 0
rtn $G 4 64;   gptq $G 4 64 0
for s in 1 2; do gptq $S 3 null $s; gptq $S 2 64 $s; gptq $G 4 64 $s; done
rtn $S 4 64; rtn $S 3 64
for s in 0 1 2; do gptq $S 4 64 $s; gptq $S 3 64 $s; done
echo "$(date -u +%FT%TZ) testbed done"
