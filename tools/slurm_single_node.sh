#!/usr/bin/env bash
# A one-node SLURM (controller + daemon) on this machine, for the `ifer launch --executor slurm` check in the
# regression session (noxfile.py) and for trying the cluster workflow locally (docs/cluster.md):
#
#   bash tools/slurm_single_node.sh start DIR   # install slurm-wlm + munge (Debian, root) if missing, start them
#   export SLURM_CONF=DIR/slurm.conf            # then sbatch / squeue / ifer launch --executor slurm use it
#   bash tools/slurm_single_node.sh stop DIR
#
# Everything SLURM writes (config, state, logs) stays in DIR; nothing under /etc/slurm is touched. No accounting
# database: `sacct` cannot answer here, so submitit learns a job's end from its result file (a job killed without
# one, e.g. `scancel`, is not seen ending; on a real cluster sacct answers).
# Exit 0: running (last line `SLURM_CONF=...`); exit 3: SLURM cannot start here, with one line saying why.
set -uo pipefail
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
conf="$dir/slurm.conf"
why() { echo "SLURM unavailable: $*" >&2; exit 3; }

if [ "$cmd" = stop ]; then
  for p in slurmd slurmctld; do [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null; done
  exit 0
fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  [ "$(id -u)" = 0 ] || why "slurm-wlm/munge are not installed and installing them needs root"
  command -v apt-get >/dev/null || why "slurm-wlm/munge are not installed and there is no apt-get (not Debian/Ubuntu)"
  echo "installing slurm-wlm and munge (apt-get) ..." >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } \
    >"$dir/apt.log" 2>&1 || why "apt-get install slurm-wlm munge failed (log: $dir/apt.log)"
fi
[ "$(id -u)" = 0 ] || why "slurmd must run as root to start jobs as their user (this is uid $(id -u))"

# munge: the authentication SLURM's daemons and clients share (the package created /etc/munge/munge.key)
if ! munge -n >/dev/null 2>&1; then
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null
  runuser -u munge -- /usr/sbin/munged >"$dir/munged.log" 2>&1 || /usr/sbin/munged --force >>"$dir/munged.log" 2>&1
  for _ in $(seq 20); do munge -n >/dev/null 2>&1 && break; sleep 0.5; done
  munge -n >/dev/null 2>&1 || why "munged did not start (log: $dir/munged.log)"
fi

host=$(hostname -s)
getent hosts "$host" >/dev/null || why "host name $host does not resolve (add it to /etc/hosts)"
node=$(slurmd -C 2>/dev/null | head -1)  # NodeName=... CPUs=... RealMemory=... as slurmd itself sees this node
[ -n "$node" ] || why "slurmd -C printed nothing"
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/" <<<"$node")  # leave the OS some memory
mkdir -p "$dir/state" "$dir/spool"
cat >"$conf" <<EOF
ClusterName=ifer-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=${IFER_SLURMCTLD_PORT:-6817}
SlurmdPort=${IFER_SLURMD_PORT:-6818}
# no cgroups (containers rarely allow them): processes tracked by parentage, no task affinity
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
$node State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$conf"
"$0" stop "$dir"
slurmctld -f "$conf" || why "slurmctld did not start (log: $dir/slurmctld.log)"
slurmd -f "$conf" || why "slurmd did not start (log: $dir/slurmd.log)"
for _ in $(seq 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -1)
  case "$state" in idle*|mix*|alloc*) echo "SLURM_CONF=$conf"; exit 0 ;; esac
  sleep 1
done
why "the node did not come up (state '${state:-none}'; logs: $dir/slurmctld.log, $dir/slurmd.log)"
