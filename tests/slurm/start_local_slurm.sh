#!/usr/bin/env bash
# Start a private one-node Slurm cluster (munged + slurmctld + slurmd) on this machine, for tests and CI.
#
# Usage (as root): tests/slurm/start_local_slurm.sh [--install-only | --stop]
#   (no option)     install Debian's slurm/munge packages when missing, then start the cluster and wait until
#                   its node can run jobs (partition "debug").
#   --install-only  only install the packages.
#   --stop          stop the daemons of this cluster (those whose pid files are in its directory).
#
# Everything the cluster needs lives in one private directory, $HIERA_VIDEO_SLURM_DIR (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/hiera_video/slurm-test): its slurm.conf, state, spool, logs, pid files and its
# own munged (key, socket). Apart from installing the packages, nothing under /etc, /var or /run is written, and
# the daemons listen on their own ports (SlurmctldPort 16817, SlurmdPort 16818): a system cluster on the default
# ports keeps running beside this one, and only daemons whose pid files are in this directory are ever stopped.
# Slurm commands reach this cluster with `export SLURM_CONF=$HIERA_VIDEO_SLURM_DIR/slurm.conf`.
#
# Idempotent: exits quickly when the cluster is already up with the same config; restarts the Slurm daemons
# when their config is stale. On failure it exits non-zero and prints the tails of the daemon logs.
#
# Environment: SLURM_START_TIMEOUT_S (default 60) bounds the wait for the node to become idle.
set -euo pipefail

MODE="${1:-}"
if (($# > 1)) || [[ ! "$MODE" =~ ^(|--install-only|--stop)$ ]]; then
    echo "usage: $0 [--install-only | --stop]" >&2
    exit 2
fi

PARTITION=debug
CLUSTER_NAME=hieravideotest
# Default ports + 10000: clear of a system cluster (6817/6818), of the ephemeral range (32768+) and of the
# rendezvous ports of Slurm jobs (hiera_video.engine.launch.SLURM_PORT_BASE, 20000-39999).
CTLD_PORT=16817
SLURMD_PORT=16818

BASE_DIR="$(realpath -m "${HIERA_VIDEO_SLURM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hiera_video/slurm-test}")"
CONF_FILE="$BASE_DIR/slurm.conf"
PLUGSTACK_FILE="$BASE_DIR/plugstack.conf"
STATE_DIR="$BASE_DIR/state"
SPOOL_DIR="$BASE_DIR/spool"
LOG_DIR="$BASE_DIR/log"
RUN_DIR="$BASE_DIR/run"
MUNGE_DIR="$BASE_DIR/munge"
CTLD_LOG="$LOG_DIR/slurmctld.log"
SLURMD_LOG="$LOG_DIR/slurmd.log"
MUNGE_LOG="$LOG_DIR/munged.log"
CTLD_PID="$RUN_DIR/slurmctld.pid"
SLURMD_PID="$RUN_DIR/slurmd.pid"
MUNGE_PID="$RUN_DIR/munged.pid"
MUNGE_SOCKET="$RUN_DIR/munge.socket"
MUNGE_KEY="$MUNGE_DIR/munge.key"
MUNGE_SEED="$MUNGE_DIR/munged.seed"
TIMEOUT_S="${SLURM_START_TIMEOUT_S:-60}"

# Every Slurm command below (and the daemons) reads this cluster's config, whatever the caller had set.
export SLURM_CONF="$CONF_FILE"

log() { echo "start_local_slurm: $*" >&2; }

print_log_tails() {
    local f
    for f in "$MUNGE_LOG" "$CTLD_LOG" "$SLURMD_LOG"; do
        if [[ -f "$f" ]]; then
            echo "----- last 30 lines of $f -----" >&2
            tail -n 30 "$f" >&2
        fi
    done
}

die() {
    log "ERROR: $*"
    print_log_tails
    exit 1
}

# --- 1. packages -------------------------------------------------------------------------------------
[[ "$(id -u)" == 0 ]] || die "must run as root (it installs packages and starts daemons)"

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null || die "apt-get install of slurm/munge failed"
}

# --- 2. daemon helpers -------------------------------------------------------------------------------
# A daemon is ours when its pid file (in $RUN_DIR) names a live process with the expected command name whose
# command line names a file in $BASE_DIR: a recycled pid or a daemon of another cluster is never taken for ours.
pid_of() {
    local pidfile="$1" name="$2" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)" || return 1
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    [[ "$(cat "/proc/$pid/comm")" == "$name" ]] || return 1
    [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" == *"$BASE_DIR/"* ]] || return 1
    echo "$pid"
}

stop_daemon() {
    local pidfile="$1" name="$2" pid i
    pid="$(pid_of "$pidfile" "$name")" || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d "/proc/$pid" ]] || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

case "$MODE" in
--install-only)
    install_packages
    exit 0
    ;;
--stop)
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    stop_daemon "$MUNGE_PID" munged
    exit 0
    ;;
esac
install_packages

# A unix socket path is limited to 107 bytes; munged's lock file adds ".lock".
((${#MUNGE_SOCKET} <= 100)) || die "path of the munge socket $MUNGE_SOCKET is too long: set HIERA_VIDEO_SLURM_DIR"

# --- 3. the config this machine should run with ------------------------------------------------------
HOST="$(hostname -s)"
CPUS="$(nproc)"
# What `free -m` reports as total, read from /proc so that minimal images without procps work too.
MEM_TOTAL_MB="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
# Leave 10% (at least 512 MB) to the OS: slurmd drains a node whose real memory is below RealMemory.
MEM_MARGIN_MB=$((MEM_TOTAL_MB / 10 > 512 ? MEM_TOTAL_MB / 10 : 512))
REAL_MEM_MB=$((MEM_TOTAL_MB - MEM_MARGIN_MB))
((REAL_MEM_MB > 0)) || die "too little memory for a slurm node: /proc/meminfo reports ${MEM_TOTAL_MB} MB"
# Jobs that ask no memory get their share per CPU instead of the whole node.
DEF_MEM_PER_CPU_MB=$((REAL_MEM_MB / CPUS))

desired_config() {
    cat <<EOF
# Written by tests/slurm/start_local_slurm.sh: private one-node cluster on ${HOST}, no cgroups, no accounting.
ClusterName=${CLUSTER_NAME}
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# This cluster's own munged. cred_expire also sets how long a requeued job waits before it may start again
# (default 120 s).
AuthInfo=socket=${MUNGE_SOCKET},cred_expire=10
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
PlugStackConfig=${PLUGSTACK_FILE}
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL_DIR}
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${CTLD_LOG}
SlurmdLogFile=${SLURMD_LOG}
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Tests wait on the scheduler: look at pending jobs every second instead of every 30-60 s.
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=${DEF_MEM_PER_CPU_MB}
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=120
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${REAL_MEM_MB} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
}

# Daemonised slurmctld/slurmd write their pid file a moment after the start command returns.
STARTUP_GRACE_S=3
declare -A STARTED_AT

# Starts "$name $args..." unless it is already running.
start_daemon() {
    local pidfile="$1" name="$2"
    shift 2
    pid_of "$pidfile" "$name" >/dev/null && return 0
    log "starting $name"
    "$name" "$@" || die "$name failed to start"
    STARTED_AT[$name]=$SECONDS
}

# Fails at once if a daemon we started has died, instead of waiting for the deadline.
check_alive() {
    local pidfile="$1" name="$2"
    if ((SECONDS - ${STARTED_AT[$name]:-0} >= STARTUP_GRACE_S)) && ! pid_of "$pidfile" "$name" >/dev/null; then
        die "$name exited during startup"
    fi
}

# True when something listens on TCP port $1 (read from /proc: minimal images may lack ss and netstat).
port_in_use() {
    local hex
    hex="$(printf '%04X' "$1")"
    awk -v port=":$hex" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == port {found = 1}
        END {exit !found}' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# The port of a daemon that is not running yet must be free: fail clearly instead of in the daemon's log.
require_free_port() {
    local pidfile="$1" name="$2" port="$3"
    pid_of "$pidfile" "$name" >/dev/null && return 0
    if port_in_use "$port"; then
        die "TCP port $port for $name is taken by another program (another test cluster under a different" \
            "HIERA_VIDEO_SLURM_DIR?); stop it or free the port"
    fi
}

controller_answers() {
    timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'
}

node_state() {
    timeout 10 sinfo -h -p "$PARTITION" -n "$HOST" -o '%T' 2>/dev/null | head -n 1
}

# Usable means the node can run jobs now: idle, or already running some (mixed/allocated/completing).
node_usable() {
    case "$(node_state)" in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
    esac
}

munge_works() {
    munge --socket="$MUNGE_SOCKET" -n 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1
}

# --- 4. fast path: already up with this config -------------------------------------------------------
CONFIG_TEXT="$(desired_config)"
config_current=false
if [[ -f "$CONF_FILE" && "$(cat "$CONF_FILE")" == "$CONFIG_TEXT" ]]; then
    config_current=true
fi
if $config_current && munge_works && pid_of "$CTLD_PID" slurmctld >/dev/null &&
    pid_of "$SLURMD_PID" slurmd >/dev/null && node_usable; then
    log "cluster already up: node $HOST is $(node_state) in partition $PARTITION (SLURM_CONF=$CONF_FILE)"
    exit 0
fi

# --- 5. munge: a private munged with its own key and socket -----------------------------------------
# Only root may read the key. The rest is readable by all, so that other users can reach a cluster started in
# a directory they can traverse (HIERA_VIDEO_SLURM_DIR).
install -d -m 0755 "$BASE_DIR" "$RUN_DIR" "$LOG_DIR"
install -d -m 0700 "$MUNGE_DIR"
if [[ ! -s "$MUNGE_KEY" ]]; then
    log "creating munge key $MUNGE_KEY"
    mungekey --create --keyfile="$MUNGE_KEY" || die "could not create $MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
fi
if ! munge_works; then
    stop_daemon "$MUNGE_PID" munged
    # --force: munged wants a socket that every user can reach, and the default directory is under $HOME, which
    # others may not traverse (/root is 0700); it then only warns in its log.
    start_daemon "$MUNGE_PID" munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
        --pid-file="$MUNGE_PID" --log-file="$MUNGE_LOG" --seed-file="$MUNGE_SEED"
    for ((i = 0; i < 50; i++)); do
        munge_works && break
        sleep 0.1
    done
    munge_works || die "munge does not answer on $MUNGE_SOCKET (munge -n | unmunge fails)"
fi

# --- 6. config + slurm daemons -----------------------------------------------------------------------
if ! $config_current; then
    log "writing $CONF_FILE (node $HOST: CPUs=$CPUS RealMemory=${REAL_MEM_MB}MB)"
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    printf '%s\n' "$CONFIG_TEXT" >"$CONF_FILE.tmp"
    mv "$CONF_FILE.tmp" "$CONF_FILE"
fi
# No SPANK plugins: an empty plugin stack instead of the system's /etc/slurm/plugstack.conf.
: >"$PLUGSTACK_FILE"
install -d -m 0755 "$STATE_DIR" "$SPOOL_DIR"

DEADLINE=$((SECONDS + TIMEOUT_S))
require_free_port "$CTLD_PID" slurmctld "$CTLD_PORT"
start_daemon "$CTLD_PID" slurmctld -f "$CONF_FILE"
until controller_answers; do
    check_alive "$CTLD_PID" slurmctld
    ((SECONDS < DEADLINE)) || die "slurmctld does not answer 'scontrol ping' after ${TIMEOUT_S}s"
    sleep 0.5
done
require_free_port "$SLURMD_PID" slurmd "$SLURMD_PORT"
start_daemon "$SLURMD_PID" slurmd -f "$CONF_FILE"

# --- 7. wait for the node ----------------------------------------------------------------------------
resume_after=$((SECONDS + 2))
until node_usable; do
    check_alive "$SLURMD_PID" slurmd
    check_alive "$CTLD_PID" slurmctld
    ((SECONDS < DEADLINE)) || die "node $HOST is '$(node_state)' after ${TIMEOUT_S}s, not idle" \
        "($(timeout 10 scontrol show node "$HOST" 2>&1 | grep -io 'reason=.*' || true))"
    state="$(node_state)"
    # A node left down/drained by an earlier run (e.g. killed daemons) must be told to come back once
    # slurmd has registered; ReturnToService=2 covers only nodes that were down for being unresponsive.
    if ((resume_after > 0 && SECONDS >= resume_after)) && [[ "$state" == down* || "$state" == drain* ]]; then
        log "node $HOST is $state, resuming it"
        timeout 10 scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
        resume_after=0
    fi
    sleep 0.5
done
log "cluster up: node $HOST is $(node_state) in partition $PARTITION ($CPUS CPUs, ${REAL_MEM_MB} MB)," \
    "SLURM_CONF=$CONF_FILE"
