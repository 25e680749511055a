#!/usr/bin/env bash
# Start a real one-node Slurm cluster (munged + slurmctld + slurmd) on this machine, for tests and CI.
#
# Usage (as root): tests/slurm/start_local_slurm.sh
# Installs Debian's slurm packages when missing, writes /etc/slurm/slurm.conf for this host (partition
# "debug"), starts the daemons directly (no systemd) and waits until `sinfo` shows the node usable.
# Idempotent: exits quickly when the cluster is already up with the same config; restarts the daemons when
# their config is stale. On failure it exits non-zero and prints the tails of the daemon logs.
#
# Environment: SLURM_START_TIMEOUT_S (default 60) bounds the wait for the node to become idle.
set -euo pipefail

PARTITION=debug
CONF_DIR=/etc/slurm
CONF_FILE="$CONF_DIR/slurm.conf"
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
CTLD_LOG="$LOG_DIR/slurmctld.log"
SLURMD_LOG="$LOG_DIR/slurmd.log"
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key
MUNGE_LOG=/var/log/munge/munged.log
TIMEOUT_S="${SLURM_START_TIMEOUT_S:-60}"

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
install_packages

# --- 2. the config this machine should run with ------------------------------------------------------
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
# Written by tests/slurm/start_local_slurm.sh: one-node cluster on ${HOST}, no cgroups, no accounting.
ClusterName=localcluster
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
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

# --- 3. daemon helpers -------------------------------------------------------------------------------
# A daemon is "running" when its pid file names a live process with the expected command name.
pid_of() {
    local pidfile="$1" name="$2" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)" || return 1
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    [[ "$(cat "/proc/$pid/comm")" == "$name" ]] || return 1
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

# Daemonised slurmctld/slurmd write their pid file a moment after the start command returns.
STARTUP_GRACE_S=3
declare -A STARTED_AT

start_daemon() {
    local pidfile="$1" name="$2"
    pid_of "$pidfile" "$name" >/dev/null && return 0
    log "starting $name"
    "$name" || die "$name failed to start"
    STARTED_AT[$name]=$SECONDS
}

# Fails at once if a daemon we started has died, instead of waiting for the deadline.
check_alive() {
    local pidfile="$1" name="$2"
    if ((SECONDS - ${STARTED_AT[$name]:-0} >= STARTUP_GRACE_S)) && ! pid_of "$pidfile" "$name" >/dev/null; then
        die "$name exited during startup"
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
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

# --- 4. fast path: already up with this config -------------------------------------------------------
CONFIG_TEXT="$(desired_config)"
config_current=false
if [[ -f "$CONF_FILE" && "$(cat "$CONF_FILE")" == "$CONFIG_TEXT" ]]; then
    config_current=true
fi
if $config_current && munge_works && pid_of "$CTLD_PID" slurmctld >/dev/null &&
    pid_of "$SLURMD_PID" slurmd >/dev/null && node_usable; then
    log "cluster already up: node $HOST is $(node_state) in partition $PARTITION"
    exit 0
fi

# --- 5. munge ----------------------------------------------------------------------------------------
if [[ ! -s "$MUNGE_KEY" ]]; then
    log "creating munge key $MUNGE_KEY"
    install -d -o munge -g munge -m 0700 /etc/munge
    mungekey --create --keyfile="$MUNGE_KEY" || die "could not create $MUNGE_KEY"
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
fi
if ! munge_works; then
    log "starting munged"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged || die "munged failed to start"
    for ((i = 0; i < 50; i++)); do
        munge_works && break
        sleep 0.1
    done
    munge_works || die "munge does not answer (munge -n | unmunge fails)"
fi

# --- 6. config + slurm daemons -----------------------------------------------------------------------
if ! $config_current; then
    log "writing $CONF_FILE (node $HOST: CPUs=$CPUS RealMemory=${REAL_MEM_MB}MB)"
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    install -d -m 0755 "$CONF_DIR"
    printf '%s\n' "$CONFIG_TEXT" >"$CONF_FILE.tmp"
    mv "$CONF_FILE.tmp" "$CONF_FILE"
fi
install -d -m 0755 "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR"

DEADLINE=$((SECONDS + TIMEOUT_S))
start_daemon "$CTLD_PID" slurmctld
until controller_answers; do
    check_alive "$CTLD_PID" slurmctld
    ((SECONDS < DEADLINE)) || die "slurmctld does not answer 'scontrol ping' after ${TIMEOUT_S}s"
    sleep 0.5
done
start_daemon "$SLURMD_PID" slurmd

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
log "cluster up: node $HOST is $(node_state) in partition $PARTITION ($CPUS CPUs, ${REAL_MEM_MB} MB)"
