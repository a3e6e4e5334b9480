#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying the study's SLURM launcher and for the tests: munge,
# slurmctld and slurmd with their own configuration, keys, state and logs in one folder, on loopback.
#
#   scripts/local-slurm.sh start [DIR]   # install slurm-wlm + munge if missing (apt-get), configure, start
#   scripts/local-slurm.sh env [DIR]     # the line to eval: export SLURM_CONF=DIR/slurm.conf
#   scripts/local-slurm.sh status [DIR]  # sinfo and squeue of that cluster
#   scripts/local-slurm.sh stop [DIR]    # stop the daemons it started (by their pid files), keep DIR
#
# DIR defaults to .local-slurm/ in the repository (gitignored). Needs root: slurmd starts every job as its
# submitting user, and apt-get installs the packages. Exit status 3 means "this machine cannot run it" (not
# root, or the packages cannot be installed): the tests skip on it, unless INITSTUDY_REQUIRE_CLUSTER=1.
# Nothing here touches the system's own /etc/slurm or /etc/munge: clients find this cluster through
# SLURM_CONF, and its munged listens on a socket of its own (AuthInfo in slurm.conf).
set -euo pipefail

ACTION=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${2:-$ROOT/.local-slurm}
START_TIMEOUT_S=${INITSTUDY_SLURM_START_TIMEOUT_S:-60}

NAME=local-slurm
# shellcheck source=scripts/service-lib.sh
source "$ROOT/scripts/service-lib.sh"

install_if_missing() {
    local missing=()
    for bin in munged slurmctld slurmd sbatch; do command -v "$bin" >/dev/null || missing+=("$bin"); done
    [ ${#missing[@]} -eq 0 ] && return
    apt_install slurm-wlm munge
}

# This machine's processors and memory as slurmd sees them, under the node name the cluster uses.
node_line() {
    slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]*/NodeName=localhost NodeAddr=127.0.0.1/'
}

write_config() {
    local ctld_port=$1 slurmd_port=$2 task_plugin=$3
    cat >"$DIR/slurm.conf" <<CONF
# Written by scripts/local-slurm.sh: one node, loopback, state and logs under $DIR.
ClusterName=initstudy
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
# Bind to the loopback address the node names resolve to, not to every address of the machine.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a job credential lives, and so how long a requeued job waits before it starts
# again (default 120 s); 30 s keeps a requeue quick.
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=30
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=$task_plugin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# No slurmdbd: jobs are looked up with squeue / scontrol while slurmctld knows them (MinJobAge), and every
# finished job (id, state, times) is appended to the job-completion log.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
MinJobAge=600
# A job that names no memory gets 1 GB per CPU, not the whole node (which would block every other job).
DefMemPerCPU=1024
# A cancelled or timed-out job gets SIGTERM, then SIGKILL after this many seconds.
KillWait=5
InactiveLimit=0
# The backfill scheduler every 5 s (default 30 s): a requeued job starts soon after it may.
SchedulerParameters=bf_interval=5
$(node_line) State=UNKNOWN
# Up to 4 jobs share a core, so that a 2-core machine runs 8 one-CPU jobs at once (the tests' concurrency).
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
}

start_munge() {
    mkdir -p "$DIR/munge"
    chmod 0700 "$DIR/munge"
    [ -f "$DIR/munge/munge.key" ] || { head -c 1024 /dev/urandom >"$DIR/munge/munge.key"; }
    chmod 0400 "$DIR/munge/munge.key"
    munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
}

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "$what did not come up in ${START_TIMEOUT_S} s; logs: $DIR/log"
        sleep 0.5
    done
}

node_idle() { [ "$(sinfo -h -N -o %T 2>/dev/null)" = "idle" ]; }

# task/affinity binds each job to the CPUs it was given; where the kernel refuses CPU affinity (some
# sandboxes), fall back to task/none (jobs then see every CPU of the node).
task_plugin() {
    if taskset -c 0 true 2>/dev/null; then echo task/affinity; else echo task/none; fi
}

start() {
    [ "$(id -u)" -eq 0 ] || cannot "needs root (slurmd starts jobs as their users; apt-get installs it)"
    install_if_missing
    [ ${#DIR} -lt 80 ] || die "$DIR is too long a path for munge's socket (max ~100 characters)"
    if [ -f "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
        die "already running in $DIR (scripts/local-slurm.sh stop $DIR first)"
    fi
    local begin=$SECONDS
    mkdir -p "$DIR"/{state,spool,run,log}
    chmod 0700 "$DIR"
    write_config "${SLURMCTLD_PORT:-$(free_port)}" "${SLURMD_PORT:-$(free_port)}" "$(task_plugin)"
    export SLURM_CONF=$DIR/slurm.conf
    start_munge
    wait_until "$START_TIMEOUT_S" munged test -S "$DIR/munge/munge.socket"
    slurmctld -f "$SLURM_CONF"
    wait_until "$START_TIMEOUT_S" slurmctld scontrol ping
    slurmd -f "$SLURM_CONF" -N localhost
    wait_until "$START_TIMEOUT_S" "the node" node_idle
    echo "local SLURM cluster up in $((SECONDS - begin)) s ($(grep -o 'TaskPlugin=.*' "$SLURM_CONF")):" >&2
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop_daemon() {  # stop_daemon NAME: SIGTERM by its pid file, SIGKILL after 15 s
    local pidfile=$DIR/run/$1.pid pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

stop() {
    [ -f "$DIR/slurm.conf" ] || die "no cluster configured in $DIR"
    export SLURM_CONF=$DIR/slurm.conf
    # Jobs first (their processes are slurmstepd's children), then the daemons, munge last.
    if scontrol ping >/dev/null 2>&1; then
        scancel --quiet --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 40); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    echo "local SLURM cluster in $DIR stopped" >&2
}

case "$ACTION" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$DIR/slurm.conf" ;;
    status) SLURM_CONF=$DIR/slurm.conf sinfo && SLURM_CONF=$DIR/slurm.conf squeue ;;
    *) echo "usage: $0 start|stop|status|env [DIR]" >&2; exit 2 ;;
esac
