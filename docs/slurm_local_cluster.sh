#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, to try the workflow's SLURM profile on one machine
# (and for tests/test_slurm.py). Debian/Ubuntu, as root; no systemd needed: the daemons are
# started directly and stopped by the PIDs recorded in the state folder.
#
#   docs/slurm_local_cluster.sh start    install the packages if missing, write the config,
#                                           start munged, slurmctld and slurmd, wait for the node;
#                                           a cluster that was not running starts with an empty queue
#                                           (an earlier run's leftover jobs and job steps are ended)
#   docs/slurm_local_cluster.sh status   daemons, node state, queue (exit 0 only when the node is usable)
#   docs/slurm_local_cluster.sh stop     cancel the cluster's jobs, stop the daemons it started by PID,
#                                           end job steps left behind, remove its slurm.conf
#
# The configuration is written to /etc/slurm/slurm.conf, the path every Slurm command (and the
# `srun` that Snakemake's job step runs inside each job, which does not inherit SLURM_CONF) reads;
# the script refuses to touch a slurm.conf it did not write. Everything else lives in
# $NETPERT_SLURM_STATE (default /tmp/netpert-slurm): a munge key and socket of its own (a system
# munged, if any, is left alone), spool and state folders, logs, pidfiles.
#
# Settings (environment):
#   NETPERT_SLURM_STATE         state folder                           [/tmp/netpert-slurm]
#   NETPERT_SLURM_PARTITION     the partition's name (Default=YES)     [debug]
#   NETPERT_SLURM_CTLD_PORT     slurmctld port                         [6817]
#   NETPERT_SLURM_SLURMD_PORT   slurmd port                            [6818]
#   NETPERT_SLURM_MEM_MARGIN_MB memory kept back from the node         [max(512, 10% of total)]
#   NETPERT_SLURM_MIN_JOB_AGE   seconds finished jobs stay in squeue   [3600]
#   NETPERT_SLURM_TIMEOUT       seconds to wait for the node           [60]
#   NETPERT_SLURM_NO_INSTALL=1  never call apt-get (fail if the packages are missing)
set -euo pipefail

STATE=${NETPERT_SLURM_STATE:-/tmp/netpert-slurm}
PARTITION=${NETPERT_SLURM_PARTITION:-debug}
CTLD_PORT=${NETPERT_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${NETPERT_SLURM_SLURMD_PORT:-6818}
MIN_JOB_AGE=${NETPERT_SLURM_MIN_JOB_AGE:-3600}
TIMEOUT=${NETPERT_SLURM_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
MARKER="# Written by docs/slurm_local_cluster.sh (netpert)"
MUNGE_SOCKET="$STATE/munge-run/munge.socket"
PACKAGES=(munge slurmctld slurmd slurm-client)
DAEMONS=(slurmd slurmctld munged)  # stop order

unset SLURM_CONF

log() { echo "slurm_local_cluster: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

alive() {  # alive PID: the process exists and is not a zombie (died, not yet reaped by init)
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

pid_of() {  # the recorded PID of a daemon we started, if that process is still alive
  local f="$STATE/pids/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  # the PID may have been reused by another program since: check the command name
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
  echo "$pid"
}

need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (slurmd launches jobs as their users; munged and slurmctld run as root here)"
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "${NETPERT_SLURM_NO_INSTALL:-0}" = 1 ] && die "packages missing: ${missing[*]} (and NETPERT_SLURM_NO_INSTALL=1)"
  command -v apt-get >/dev/null || die "packages missing: ${missing[*]}, and there is no apt-get to install them"
  log "installing ${missing[*]} (apt-get)"
  # policy-rc.d keeps the packages' init scripts from starting system-wide daemons
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >"$STATE/logs/apt.log" 2>&1 || rc=$?
  [ $created_policy = 1 ] && rm -f "$policy"
  [ $rc = 0 ] || { tail -20 "$STATE/logs/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $STATE/logs/apt.log)"; }
}

write_config() {
  local cpus total margin mem
  cpus=$(nproc)
  total=$(free -m | awk '/^Mem:/ {print $2}')
  margin=${NETPERT_SLURM_MEM_MARGIN_MB:-$(( total / 10 > 512 ? total / 10 : 512 ))}
  mem=$(( total - margin ))
  [ "$mem" -ge 256 ] || die "too little memory for a node: ${total} MB total, margin ${margin} MB"
  own_config_or_none || die "$CONF exists and was not written by this script: not touching it (a real Slurm setup?)"
  mkdir -p "$(dirname "$CONF")"
  cat >"$CONF.tmp" <<EOF
$MARKER: a one-node cluster on localhost,
# state in $STATE. Regenerated on every start, removed on stop: edit the script (or its settings), not this file.
ClusterName=netpert-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld/slurmctld.pid
SlurmdPidFile=$STATE/slurmd/slurmd.pid
SlurmctldLogFile=$STATE/logs/slurmctld.log
SlurmdLogFile=$STATE/logs/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups (containers, VMs without a delegated cgroup tree): track processes through /proc
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# no slurmdbd: sacct has nothing to read, job states come from slurmctld (squeue)
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue this long (the SLURM executor polls their final state)
MinJobAge=$MIN_JOB_AGE
SchedulerType=sched/backfill
# cores and memory are consumable: --mem is accounted and jobs are packed by cores and memory
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

own_config_or_none() {  # true when there is no slurm.conf, or it is ours
  [ ! -e "$CONF" ] || head -1 "$CONF" | grep -qF "$MARKER"
}

make_munge_key() {
  local key="$STATE/munge-priv/munge.key"
  [ -s "$key" ] && return 0
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$key" >/dev/null 2>&1 || true
  fi
  [ -s "$key" ] || dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
  chmod 400 "$key"
}

launch() {  # launch NAME CMD...: run a daemon in the foreground, detached, and record its PID
  local name=$1
  shift
  setsid "$@" </dev/null >>"$STATE/logs/$name.out" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
}

wait_for() {  # wait_for SECONDS CMD...: poll CMD every 0.5 s until it succeeds; 1 after SECONDS
  local limit=$1 t=0
  shift
  until "$@" >/dev/null 2>&1; do
    t=$((t + 1))
    if [ $t -gt $((limit * 2)) ]; then
      return 1
    fi
    sleep 0.5
  done
}

node_state() { sinfo -h -N -n localhost -o '%T' 2>/dev/null | head -1; }

node_usable() {
  case "$(node_state)" in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
  esac
}

descendants() {  # descendants PID: every process below PID, deepest first
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do
    descendants "$child"
    echo "$child"
  done
}

kill_stray_steps() {  # end job steps (slurmstepd and the jobs below it) that outlived their slurmd
  # This machine's only slurm.conf is ours (own_config_or_none), so every slurmstepd on it is a step
  # of this cluster; with slurmd and slurmctld gone, nothing else would ever end them.
  local step pids
  for step in $(pgrep -x slurmstepd 2>/dev/null); do
    alive "$step" || continue  # a zombie is already dead
    pids="$(descendants "$step" | tr '\n' ' ')$step"
    log "ending a job step left by an earlier run: $(tr '\0' ' ' <"/proc/$step/cmdline" 2>/dev/null) (pids $pids)"
    kill -KILL $pids 2>/dev/null || true
  done
}

show_logs() {
  local f
  for f in munged.out slurmctld.log slurmctld.out slurmd.log slurmd.out; do
    [ -s "$STATE/logs/$f" ] && { echo "--- $STATE/logs/$f (tail)" >&2; tail -15 "$STATE/logs/$f" >&2; }
  done
  return 0
}

cmd_start() {
  need_root
  mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/slurmctld" "$STATE/slurmd" "$STATE/munge-run" "$STATE/munge-priv"
  chmod 755 "$STATE" "$STATE/munge-run"
  chmod 700 "$STATE/munge-priv"
  if pid_of munged >/dev/null && pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null && node_usable; then
    log "already running (state in $STATE)"
    return 0
  fi
  install_packages
  local d
  for d in slurmctld slurmd munged; do command -v "$d" >/dev/null || die "$d not found after installing ${PACKAGES[*]}"; done
  write_config
  make_munge_key

  if ! pid_of munged >/dev/null; then
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    launch munged munged -F --socket="$MUNGE_SOCKET" --key-file="$STATE/munge-priv/munge.key" \
      --log-file="$STATE/logs/munged.log" --pid-file="$STATE/munge-run/munged.pid" \
      --seed-file="$STATE/munge-priv/munged.seed"
    wait_for 15 bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'" ||
      { show_logs; die "munged did not come up within 15 s (logs above)"; }
  fi
  if ! pid_of slurmctld >/dev/null; then
    # A cluster that is not running starts empty. An earlier run's daemons may have died without
    # `stop` (a killed session, a reboot without clearing /tmp): its job steps may still run, and its
    # saved state holds its queue, which -c clears (else those jobs, whose submitter is gone, run first
    # and new jobs wait behind them for minutes); -i: ignore unreadable state rather than refuse to start.
    pid_of slurmd >/dev/null || kill_stray_steps
    launch slurmctld slurmctld -D -c -i -f "$CONF"
    wait_for 30 scontrol ping ||
      { show_logs; die "slurmctld did not answer within 30 s (logs above)"; }
  else
    scontrol reconfigure >/dev/null 2>&1 || true
  fi
  if ! pid_of slurmd >/dev/null; then
    launch slurmd slurmd -D -N localhost -f "$CONF"
  fi
  if ! wait_for "$TIMEOUT" node_usable; then
    show_logs
    sinfo -N -l >&2 2>&1 || true
    die "node 'localhost' not idle within ${TIMEOUT} s (state: '$(node_state)'); logs above, all in $STATE/logs"
  fi
  log "up: partition '$PARTITION', node localhost ($(sinfo -h -N -n localhost -o '%c CPUs, %m MB')); config $CONF, state in $STATE"
}

cmd_stop() {
  local name pid t any=0
  if pid_of slurmctld >/dev/null; then
    # end the cluster's jobs first, so that slurmd's job steps do not outlive it
    scancel --full --quiet --state=PENDING >/dev/null 2>&1 || true
    scancel --full --quiet >/dev/null 2>&1 || true
    for t in $(seq 1 40); do
      [ -z "$(squeue -h -t RUNNING,COMPLETING,PENDING,CONFIGURING -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  for name in "${DAEMONS[@]}"; do
    pid=$(pid_of "$name") || { rm -f "$STATE/pids/$name.pid"; continue; }
    any=1
    kill -TERM "$pid" 2>/dev/null || true
    for t in $(seq 1 80); do
      alive "$pid" || break
      sleep 0.25
    done
    if alive "$pid"; then
      log "$name (pid $pid) did not stop on TERM: KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/pids/$name.pid"
    log "stopped $name (pid $pid)"
  done
  own_config_or_none && kill_stray_steps
  if [ -e "$CONF" ] && own_config_or_none; then rm -f "$CONF"; fi
  [ $any = 1 ] || log "nothing running"
}

cmd_status() {
  local name pid rc=0
  for name in munged slurmctld slurmd; do
    if pid=$(pid_of "$name"); then echo "$name: running (pid $pid)"; else echo "$name: not running"; rc=1; fi
  done
  [ $rc = 0 ] || return 3
  echo "config: $CONF, state: $STATE"
  sinfo -N -o '%N %P %T %c %m' || return 3
  squeue -o '%i %j %T %M %R' || true
  node_usable || return 3
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
