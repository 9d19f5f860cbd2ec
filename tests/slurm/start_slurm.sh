#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (Debian's slurm-wlm + munge), for the SLURM
# integration test (tests/test_slurm.py) and for trying config/profiles/slurm by hand.
#
#   sudo apt-get install -y slurm-wlm munge     # once
#   sudo tests/slurm/start_slurm.sh             # starts munged, slurmctld, slurmd; idempotent
#   sudo tests/slurm/start_slurm.sh stop
#
# The node gets this machine's cores (at least 4) and 90% of its memory; accounting is off (jobs are followed with
# squeue, MinJobAge keeps finished jobs visible for an hour).
set -euo pipefail

STATE=${SLURM_TEST_STATE:-/var/tmp/lmbrain-slurm}
CONF=/etc/slurm/slurm.conf

if [[ "${1:-start}" == "stop" ]]; then
    pkill -x slurmd || true
    pkill -x slurmctld || true
    pkill -x munged || true
    exit 0
fi

for tool in slurmctld slurmd munged sbatch; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found: apt-get install -y slurm-wlm munge" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "error: run as root (it writes $CONF and starts the daemons)" >&2; exit 2; }

mkdir -p "$STATE"/{ctld,d} /etc/slurm /etc/munge /run/munge /var/log/munge /var/lib/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chmod 0400 /etc/munge/munge.key
# A killed daemon can linger as a zombie until it is reaped: only live processes count as running.
running() { pgrep -x -r D,R,S "$1" >/dev/null; }
running munged || munged --force

HOST=$(hostname -s)
# at least 4 CPUs (oversubscribed on smaller machines): a group of the profile's small jobs asks for
# the summed threads of up to 4 one-thread jobs
CPUS=$(( $(nproc) > 4 ? $(nproc) : 4 ))
MEM=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
cat > "$CONF" <<CONFEOF
ClusterName=lmbrain-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=3600
SchedulerType=sched/backfill
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONFEOF
# With both daemons down no job of this cluster can be running, but the saved state still lists the jobs
# that were queued or running when they stopped (a killed test run, a machine that was suspended). Recovered,
# such phantom jobs hold the node's CPUs until slurmctld gives up on them (half an hour) and then run their
# stale commands. This cluster is only for trying the profile, so a cold start clears its state (-c).
CLEAN=()
if ! running slurmctld && ! running slurmd; then
    CLEAN=(-c)
fi
running slurmctld || slurmctld "${CLEAN[@]}"
running slurmd || slurmd "${CLEAN[@]}"
for _ in $(seq 30); do
    if timeout 10 sinfo -h -o "%T" 2>/dev/null | grep -qE "idle|mixed|allocated"; then
        sinfo
        exit 0
    fi
    timeout 10 scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "error: the SLURM node did not come up; see $STATE/slurmctld.log and $STATE/slurmd.log" >&2
exit 1
