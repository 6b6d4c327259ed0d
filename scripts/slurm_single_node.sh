#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (Debian/Ubuntu, run as root), for the SLURM tests and for
# trying the cluster path without a cluster.  Idempotent: run it again at any time; it installs what is
# missing, (re)writes the munge key and slurm.conf only when needed, starts whatever daemon is not running
# and returns once `sinfo` shows the node idle.
#
#   bash scripts/slurm_single_node.sh          # set up and start (or check) the cluster
#   bash scripts/slurm_single_node.sh stop     # stop slurmd, slurmctld and munged
#
# The node is this host with all its CPUs and 90% of its memory, in one default partition `debug`.
# No accounting daemon: `sacct` fails, so submitit cannot read job states from SLURM and relies on its
# result files (it logs "Bypassing sacct error").  Settings that cut latency for short test jobs: a
# requeued job may start again 10 s after its requeue (cred_expire; SLURM's default is 120 s), the main
# scheduler runs every second, finished jobs leave the queue after 30 s, and a killed job gets
# KillWait=5 s between SIGTERM and SIGKILL.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
KEY=/etc/munge/munge.key
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
NODE=$(hostname -s)
PARTITION=${SLURM_PARTITION:-debug}
WAIT_S=${SLURM_WAIT_S:-90}

say() { echo "slurm_single_node: $*"; }
die() { echo "slurm_single_node: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"

running() {  # running <pid file> <program name>: the pid file names a live process of that program
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

stop_daemon() {  # stop_daemon <pid file> <program name>
    local pid i
    running "$1" "$2" || return 0
    pid=$(cat "$1")
    kill "$pid"
    for i in $(seq 50); do
        [ -d "/proc/$pid" ] || break
        sleep 0.2
    done
    [ -d "/proc/$pid" ] && kill -9 "$pid"
    rm -f "$1"
    say "stopped $2 (pid $pid)"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

if [ "${1:-}" = stop ]; then
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    if [ -s /run/munge/munged.pid ]; then stop_daemon /run/munge/munged.pid munged; fi
    exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [stop]"

# --- packages ------------------------------------------------------------------------------------
missing=()
for prog in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${prog%%:*}" >/dev/null 2>&1 || missing+=("${prog#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- munge ---------------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s "$KEY" ]; then
    say "writing a random $KEY"
    dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
fi
chown munge:munge "$KEY"
chmod 0400 "$KEY"
if ! munge_ok; then
    rm -f /run/munge/munge.socket.2 /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || die "munged does not answer (see /var/log/munge/munged.log)"
    say "started munged"
fi

# --- slurm.conf ----------------------------------------------------------------------------------
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
install -d -m 0755 "$CONF_DIR" "$STATE" "$SPOOL" "$LOGS"
new=$(mktemp)
trap 'rm -f "$new"' EXIT
cat >"$new" <<EOF
# Written by scripts/slurm_single_node.sh: a one-node cluster on $NODE.
ClusterName=stablenets
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
ReturnToService=2
MinJobAge=30
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
changed=0
if ! cmp -s "$new" "$CONF"; then
    install -m 0644 "$new" "$CONF"
    changed=1
    say "wrote $CONF"
fi

# --- daemons -------------------------------------------------------------------------------------
if [ $changed = 1 ]; then  # a new node or partition definition needs fresh daemons
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
fi
if ! running "$CTLD_PID" slurmctld; then
    slurmctld
    say "started slurmctld"
fi
if ! running "$SLURMD_PID" slurmd; then
    slurmd
    say "started slurmd"
fi

# --- wait for the node ---------------------------------------------------------------------------
state=""
for i in $(seq $((WAIT_S * 2))); do
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|drained*)  # e.g. registered before the node definition changed
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
case "$state" in
    idle|mixed|allocated|completing) ;;
    *)
        tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
        die "node $NODE is '${state:-not listed}' after ${WAIT_S}s (logs above)" ;;
esac
say "node $NODE is $state: $(nproc) CPUs, ${mem_mb} MB, partition $PARTITION (default)"
