#!/usr/bin/env bash
# The runs behind docs/replication/ (issue 14), one after the other (never two torch jobs at once on a
# 2-core machine).  Each sweep resumes by config key: rerun this script to finish an interrupted grid
# (a claimed sweep folder is never reused, so a rerun writes multirun/<name>_2 with skipped.json links).
# Then: python -m calib_sweep.report multirun/noise_floor* multirun/replication_cpu* multirun/sample_size_cpu* --out docs/replication
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
for experiment in noise_floor replication_cpu sample_size_cpu; do
  echo "== $(date -u +%FT%TZ) $experiment"
  "$PY" -m calib_sweep -m "experiment=$experiment" logger=none "hydra.sweep.dir=multirun/$experiment" "$@"
  echo "== $(date -u +%FT%TZ) $experiment exit $?"
done
