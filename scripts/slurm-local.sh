#!/usr/bin/env bash
# Installs and starts a single-node Slurm cluster on localhost (Debian/Ubuntu, run as root,
# works without systemd). Idempotent: when the node already answers and the configuration is
# unchanged it exits at once.
#
#   scripts/slurm-local.sh        # install (if needed), configure, start, wait for the node
#
# Result: partition `debug` (default, no time limit) with one node, this machine's CPUs and
# its memory less 2 GiB; no slurmdbd, so `sacct` is unavailable (the job-completion log is
# /var/log/slurm/jobcomp.log instead). Exit 0 when the node is usable, 1 (with log tails) if not.
set -euo pipefail

WAIT_S=${SLURM_LOCAL_WAIT_S:-60}
CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
RUNDIR=/run/slurm
NODE=$(hostname -s)
t0=$SECONDS

log() { echo "slurm-local: $*" >&2; }

node_state() {
  # Prints the node's state (idle, mixed, down*, ...) or nothing when slurmctld does not answer
  # (sinfo would spend its 5 s timeout when the daemons are not even there).
  command -v sinfo >/dev/null 2>&1 && running munged && running slurmctld || return 0
  timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true
}

slurmd_registered_since() { # $1: epoch seconds; has slurmd (re)registered since then?
  local t
  t=$(timeout 5 scontrol show node "$NODE" -o 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
  [ -n "$t" ] && [ "$(date -d "$t" +%s 2>/dev/null || echo 0)" -ge $(($1 - 1)) ]
}

usable() {
  case "$1" in idle | mixed | allocated | completing) return 0 ;; *) return 1 ;; esac
}

summary() {
  local s
  s=$(timeout 5 sinfo -h -o '%P %D %c %m %T' 2>/dev/null | head -n1 || true)
  echo "slurm-local: up in $((SECONDS - t0)) s: node $NODE, partition/nodes/cpus/mem_mb/state: $s"
}

fail() {
  log "FAILED: $*"
  local f
  for f in "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" /var/log/munge/munged.log; do
    if [ -f "$f" ]; then
      echo "---- last lines of $f" >&2
      tail -n 25 "$f" >&2
    fi
  done
  exit 1
}

running() { # Is a live (not zombie) process of this name there?
  local pid st
  for pid in $(pgrep -x "$1" || true); do
    st=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    case "$st" in "" | Z*) ;; *) return 0 ;; esac
  done
  return 1
}

stop_daemon() { # $1: name, $2: pid file. Stops a daemon this script started earlier.
  local pid
  pid=$(cat "$2" 2>/dev/null || true)
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 100); do
      running "$1" || break
      sleep 0.1
    done
  fi
  if running "$1"; then fail "$1 is running but not as the pid in $2; stop it first"; fi
}

render_conf() {
  local cpus mem_total_mb real_mem
  cpus=$(nproc)
  mem_total_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
  real_mem=$((mem_total_mb - 2048))
  [ "$real_mem" -ge 1000 ] || real_mem=$((mem_total_mb * 3 / 4))
  # Nodes give only CPUs (no socket/core layout), so each CPU is one schedulable core.
  # bf_interval=1: a finishing array task is still COMPLETING (and counted against a `%N`
  # limit) when the completion event schedules, so without a frequent backfill pass the
  # freed slot waits for the next periodic pass (30 s).
  cat <<EOF
# Written by scripts/slurm-local.sh: a single-node cluster on localhost.
ClusterName=local
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MaxArraySize=10001
MaxJobCount=100000
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=${LOGDIR}/jobcomp.log
SlurmctldPidFile=${RUNDIR}/slurmctld.pid
SlurmdPidFile=${RUNDIR}/slurmd.pid
SlurmctldLogFile=${LOGDIR}/slurmctld.log
SlurmdLogFile=${LOGDIR}/slurmd.log
StateSaveLocation=${CTLD_SPOOL}
SlurmdSpoolDir=${SLURMD_SPOOL}
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${real_mem} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
}

if [ "$(id -u)" != 0 ]; then
  # Not root: re-run through passwordless sudo when there is one.
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n SLURM_LOCAL_WAIT_S="$WAIT_S" bash "$0" "$@"
  fi
  fail "must run as root (or with passwordless sudo): it installs packages and starts daemons"
fi

new_conf=$(mktemp)
trap 'rm -f "$new_conf"' EXIT
render_conf >"$new_conf"

# Already up with this configuration? Then there is nothing to do.
if cmp -s "$new_conf" "$CONF" && running slurmd && usable "$(node_state)"; then
  summary
  exit 0
fi

# 1. Packages.
if ! command -v sbatch >/dev/null 2>&1 || ! command -v slurmctld >/dev/null 2>&1 ||
  ! command -v slurmd >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(slurm-wlm munge)
  if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/tmp/slurm-local-apt.log 2>&1; then
    apt-get update -q >>/tmp/slurm-local-apt.log 2>&1 || true
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>/tmp/slurm-local-apt.log 2>&1; then
      tail -n 30 /tmp/slurm-local-apt.log >&2
      fail "apt-get install ${pkgs[*]}"
    fi
  fi
fi
id munge >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin munge
id slurm >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin slurm

# 2. Munge key and directories.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile=/etc/munge/munge.key --force
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

# 3. Slurm configuration and directories; running daemons restart when the file changes.
install -d -m 0755 /etc/slurm "$SLURMD_SPOOL"
install -d -o slurm -g slurm -m 0755 "$LOGDIR" "$CTLD_SPOOL" "$RUNDIR"
if ! cmp -s "$new_conf" "$CONF"; then
  if running slurmd; then stop_daemon slurmd "$RUNDIR/slurmd.pid"; fi
  if running slurmctld; then stop_daemon slurmctld "$RUNDIR/slurmctld.pid"; fi
  install -m 0644 "$new_conf" "$CONF"
fi

# 4. Daemons (each daemonizes itself).
if ! running munged; then
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
fi
for _ in $(seq 50); do
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then break; fi
  sleep 0.1
done
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munge does not work"
if ! running slurmctld; then slurmctld || fail "slurmctld did not start"; fi
slurmd_launch=0
if ! running slurmd; then
  slurmd_launch=$(date +%s)
  slurmd || fail "slurmd did not start"
fi

# Wait for the node; resume it when slurmctld remembers it as down or drained.
deadline=$((SECONDS + WAIT_S))
last_resume=0
while :; do
  state=$(node_state)
  # slurmctld reports the state it saved until slurmd registers: wait for a fresh slurmd's.
  if usable "$state" && { [ "$slurmd_launch" = 0 ] || slurmd_registered_since "$slurmd_launch"; }; then
    break
  fi
  case "$state" in
  down* | drain* | fail*)
    if [ $((SECONDS - last_resume)) -ge 3 ]; then
      scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
      last_resume=$SECONDS
    fi
    ;;
  esac
  [ "$SECONDS" -lt "$deadline" ] || fail "node $NODE not usable after ${WAIT_S} s (state: '${state:-no answer}')"
  sleep 0.5
done
summary
