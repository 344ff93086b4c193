#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, to try calib_sweep's cluster path
# (hydra/launcher=slurm) without a cluster:  scripts/local_slurm.sh start | stop | status
#
#   start   installs Debian's slurm-wlm and munge if missing (apt-get; needs root), writes a one-node
#           config for this machine (CPUs and memory from `slurmd -C`, one partition `cpu`), starts
#           munged, slurmctld and slurmd, and waits until the node is idle (at most 60 s).
#           A second start while they run does nothing.
#   stop    stops the daemons this script started (by the pid files in its state folder), nothing else.
#   status  prints each daemon's state and `sinfo`; exit status 0 when all three run, 3 otherwise.
#
# Files: state folder $LOCAL_SLURM_DIR (default /var/lib/calib_sweep/slurm: munge key and socket,
# pid files, daemon logs, spool) and /etc/slurm/slurm.conf, where SLURM's commands (sbatch, sinfo,
# squeue, scancel) look for it.  An /etc/slurm/slurm.conf this script did not write (a real cluster
# node) is never overwritten: start then stops with an error.
#
# No accounting database (slurmdbd) is set up: `sacct` answers "accounting storage is disabled"; use
# squeue / scontrol show job while jobs run.
set -euo pipefail

DIR="${LOCAL_SLURM_DIR:-/var/lib/calib_sweep/slurm}"
CONF="${LOCAL_SLURM_CONF:-/etc/slurm/slurm.conf}"
MARK="# written by calib_sweep scripts/local_slurm.sh"
PARTITION=cpu
DAEMONS=(munged slurmctld slurmd)

die() { echo "local_slurm: error: $*" >&2; exit 1; }
say() { echo "local_slurm: $*"; }

pidfile() { echo "$DIR/$1.pid"; }

# The pid of a daemon we started, if it is alive and really that program; empty otherwise.
running_pid() {
  local file pid
  file=$(pidfile "$1")
  [ -s "$file" ] || return 0
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ] && echo "$pid"
  return 0
}

need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts the SLURM daemons). Fix: sudo $0 $1"
}

install_packages() {
  local missing=()
  command -v munged >/dev/null || missing+=(munge)
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is missing (not Debian/Ubuntu). Fix: install slurm-wlm and munge with your package manager"
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed. Fix: check the network / apt sources, then rerun"
  apt-get install -y -qq slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed. Fix: run it by hand to see why"
}

write_config() {
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script (a real SLURM installation?); not touching it. Fix: use that cluster directly, or move the file away"
  fi
  mkdir -p "$DIR/spool/slurmd" "$DIR/state" "$(dirname "$CONF")"
  chmod 0755 "$DIR"
  if [ ! -s "$DIR/munge.key" ]; then
    umask 077
    dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge.key" 2>/dev/null
    umask 022
  fi
  chmod 0600 "$DIR/munge.key"
  # This machine as slurmd sees it: e.g. "NodeName=vm CPUs=2 ... RealMemory=24105".
  local probe cpus mem host
  probe=$(slurmd -C | head -1)
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$probe")
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$probe")
  host=$(hostname -s)
  [ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs / RealMemory from 'slurmd -C' (got: $probe)"
  local tmp="$CONF.tmp.$$"
  cat >"$tmp" <<EOF
$MARK
# One node ($host: $cpus CPUs, $mem MB from 'slurmd -C'), one partition '$PARTITION'. Rewritten by each start.
ClusterName=calibsweep
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.socket
SlurmUser=root
SlurmdUser=root
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmdSpoolDir=$DIR/spool/slurmd
StateSaveLocation=$DIR/state
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MpiDefault=none
KillWait=30
SlurmctldTimeout=30
SlurmdTimeout=60
MaxArraySize=10001
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$tmp" "$CONF"
  chmod 0644 "$CONF"
}

start_daemon() {  # name, command...
  local name=$1; shift
  if [ -n "$(running_pid "$name")" ]; then return 0; fi
  "$@" || die "$name did not start (see $DIR/$name.log)"
  local i
  for i in $(seq 50); do
    [ -n "$(running_pid "$name")" ] && return 0
    sleep 0.2
  done
  die "$name did not write its pid file $(pidfile "$name") (see $DIR/$name.log)"
}

node_state() { sinfo -h -N -p "$PARTITION" -o %T 2>/dev/null | head -1; }

all_running() {
  local d
  for d in "${DAEMONS[@]}"; do [ -n "$(running_pid "$d")" ] || return 1; done
}

cmd_start() {
  need_root start
  if all_running && grep -qF "$MARK" "$CONF" 2>/dev/null; then
    say "already running (node: $(node_state))"
    return 0
  fi
  install_packages
  write_config
  start_daemon munged munged --socket="$DIR/munge.socket" --key-file="$DIR/munge.key" \
    --pid-file="$(pidfile munged)" --log-file="$DIR/munged.log" --seed-file="$DIR/munged.seed" --force
  start_daemon slurmctld slurmctld
  start_daemon slurmd slurmd
  local i state=""
  for i in $(seq 120); do
    state=$(node_state)
    case "$state" in
      idle|mixed|allocated|completing) say "running: partition $PARTITION, node $(hostname -s) $state ($(sinfo -h -N -o '%c CPUs, %m MB'))"; return 0 ;;
    esac
    sleep 0.5
  done
  die "node not idle after 60 s (state: ${state:-none}). See $DIR/slurmctld.log and $DIR/slurmd.log"
}

cmd_stop() {
  need_root stop
  local d pid i stopped=0
  for d in slurmd slurmctld munged; do  # reverse start order
    pid=$(running_pid "$d")
    [ -n "$pid" ] || continue
    kill -TERM "$pid"
    for i in $(seq 100); do
      [ -d "/proc/$pid" ] || break
      sleep 0.1
    done
    [ -d "/proc/$pid" ] && die "$d (pid $pid) did not exit within 10 s"
    rm -f "$(pidfile "$d")"
    say "stopped $d (pid $pid)"
    stopped=1
  done
  [ $stopped = 1 ] || say "nothing to stop (no daemon started by this script is running)"
}

cmd_status() {
  local d pid ok=0
  for d in "${DAEMONS[@]}"; do
    pid=$(running_pid "$d")
    if [ -n "$pid" ]; then echo "$d: running (pid $pid)"; else echo "$d: stopped"; ok=3; fi
  done
  if [ $ok = 0 ]; then sinfo; fi
  return $ok
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status  (a one-node SLURM cluster on this machine)" >&2; exit 2 ;;
esac
