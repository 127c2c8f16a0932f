#!/usr/bin/env bash
# run_polymarket_collector_cycle.sh: what systemd starts for the pm-archive collector.
# See USAGE below (the usage text is the spec) and docs/VPS_DEPLOYMENT.md.

USAGE='run_polymarket_collector_cycle.sh: start one collector cycle (what systemd runs)

Usage:
  run_polymarket_collector_cycle.sh [ENV_FILE]
  run_polymarket_collector_cycle.sh --log-stop
  run_polymarket_collector_cycle.sh --help

Start (default):
  1. reads ENV_FILE (default /etc/pm-archive/collector.env) as data, with the rules of
     systemd'"'"'s EnvironmentFile= (scripts/read_env_file.sh: KEY=value lines, comment lines,
     quotes; never sourced, nothing in it runs or expands); its values win over the calling
     environment;
  2. takes an exclusive lock on <PMARCHIVE_ROOT>/.collector.lock (flock), so that two
     collectors never write to (or recover files of) the same archive at once;
  3. seals partial files left by a dead run: `jsonl-rotate --root ROOT --stream S
     --recover-only` for each stream S under ROOT/venue=polymarket/ (as `manifest streams
     ROOT` lists them: every stream=S directory); the pmarchive.sealed/1 records it prints
     are appended to ROOT/manifests/recovered-files.jsonl, counted in the log, and listed in
     a run manifest of their own (`manifest build`, run id from `manifest run-id`, label
     "crash recovery: ...");
  4. logs one start line and execs pipelines/collect.sh ENV_FILE (same PID, so systemd
     signals the pipeline owner directly).

  Settings used here (all others are read by pipelines/collect.sh):
    PMARCHIVE_ROOT     archive root (default /var/lib/pm-archive/archive)
    PMARCHIVE_BIN_DIR  binaries (default: ../bin beside this script, else ../target/release)
  pipelines/collect.sh is found beside this script: <dir of this script>/../pipelines/.

--log-stop   print one stop line from systemd'"'"'s SERVICE_RESULT, EXIT_CODE and EXIT_STATUS
             (used as ExecStopPost=); always exits 0.

All messages go to stderr (journald under systemd), prefixed with the script name.
Exit status: 0 --help/--log-stop; 1 another collector holds the lock; 2 bad arguments,
missing env file, missing collect.sh, jsonl-rotate or manifest, archive root not writable;
after the exec: whatever pipelines/collect.sh returns: 0 clean stop, 1 a stage failed
(systemd restarts it), 2 bad configuration (RestartPreventExitStatus=2: systemd does not
restart until the env file is fixed and the unit restarted).'

PROG=run_polymarket_collector_cycle

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
    local code=$1
    shift
    log "error: $*"
    exit "$code"
}

# One stop line for the journal (ExecStopPost=). systemd sets these variables for
# ExecStop*/ExecStopPost commands since version 232.
log_stop() {
    local result=${SERVICE_RESULT:-unknown}
    local line="stop: result=$result exit_code=${EXIT_CODE:-unknown} exit_status=${EXIT_STATUS:-unknown}"
    if [ "$result" = success ]; then
        log "$line (clean stop)"
    else
        log "$line (systemd restarts the collector after RestartSec when Restart=always)"
    fi
    exit 0
}

# Directory holding this script, with symlinks resolved.
self_dir() {
    local src
    src=$(readlink -f -- "${BASH_SOURCE[0]}" 2>/dev/null || printf '%s' "${BASH_SOURCE[0]}")
    cd -- "$(dirname -- "$src")" && pwd
}

# Seals one stream's leftovers; appends the sealed records to the recovered-files log.
recover_stream() {
    local bin=$1 root=$2 stream=$3 out rc n
    # Bounded: a start that hangs here would leave the service "running" with nothing collected.
    out=$(timeout -k 5 300 "$bin/jsonl-rotate" --root "$root" --stream "$stream" --recover-only)
    rc=$?
    if [ -n "$out" ]; then
        RECOVERED+="$out"$'\n'
        printf '%s\n' "$out" >>"$root/manifests/recovered-files.jsonl" ||
            log "warning: could not append to $root/manifests/recovered-files.jsonl"
        n=$(printf '%s\n' "$out" | grep -c .)
        log "recovery: sealed $n partial file(s) of stream $stream left by a previous run (records in manifests/recovered-files.jsonl)"
    fi
    if [ "$rc" -ne 0 ]; then
        # A failed recovery must not stop collection: the new run writes new files and
        # the leftovers stay as .partial for the next start or for an operator.
        log "warning: jsonl-rotate --recover-only for stream $stream exited $rc; continuing (partial files may remain)"
    fi
}

main() {
    local env_file=""
    while [ $# -gt 0 ]; do
        case $1 in
        -h | --help)
            printf '%s\n' "$USAGE"
            exit 0
            ;;
        --log-stop) log_stop ;;
        --) shift; break ;;
        -*) die 2 "unknown option '$1' (see --help)" ;;
        *)
            [ -z "$env_file" ] || die 2 "only one ENV_FILE may be given (see --help)"
            env_file=$1
            ;;
        esac
        shift
    done
    if [ $# -gt 0 ]; then
        [ -z "$env_file" ] && [ $# -eq 1 ] || die 2 "only one ENV_FILE may be given (see --help)"
        env_file=$1
    fi
    env_file=${env_file:-/etc/pm-archive/collector.env}
    [ -f "$env_file" ] || die 2 "env file $env_file not found (copy config/polymarket_collector.vps.example.env there, or run scripts/install.sh)"
    [ -r "$env_file" ] || die 2 "env file $env_file is not readable by $(id -un 2>/dev/null || id -u)"

    # Read as data with systemd's EnvironmentFile= rules (never sourced: nothing in it runs).
    local reader
    reader="$(self_dir)/read_env_file.sh"
    # shellcheck source=read_env_file.sh
    . "$reader" 2>/dev/null || die 2 "$reader is missing (reinstall: scripts/install.sh)"
    PM_ENV_PROG=$PROG pm_read_env_file "$env_file" || die 2 "env file $env_file could not be read"

    local base bin root collect
    base=$(dirname -- "$(self_dir)")
    if [ -n "${PMARCHIVE_BIN_DIR:-}" ]; then
        bin=$PMARCHIVE_BIN_DIR
    elif [ -x "$base/bin/jsonl-rotate" ]; then
        bin=$base/bin
    else
        bin=$base/target/release
    fi
    root=${PMARCHIVE_ROOT:-/var/lib/pm-archive/archive}
    collect=$base/pipelines/collect.sh
    [ -x "$collect" ] || die 2 "$collect not found or not executable"
    [ -x "$bin/jsonl-rotate" ] || die 2 "$bin/jsonl-rotate not found or not executable (PMARCHIVE_BIN_DIR=$bin)"
    [ -x "$bin/manifest" ] || die 2 "$bin/manifest not found or not executable (PMARCHIVE_BIN_DIR=$bin)"
    mkdir -p -- "$root/manifests" 2>/dev/null || die 2 "cannot create $root/manifests (is PMARCHIVE_ROOT=$root writable by $(id -un 2>/dev/null || id -u)?)"

    # The lock stays held by collect.sh and its stages (the descriptor survives exec and
    # is inherited), so it is released only when the whole pipeline is gone. A bash-chosen
    # descriptor (>= 10): collect.sh uses fd 9 for its own FIFO and would close a lock there.
    local lock_fd
    if command -v flock >/dev/null 2>&1; then
        exec {lock_fd}>>"$root/.collector.lock" || die 2 "cannot open lock file $root/.collector.lock"
        flock -n "$lock_fd" || die 1 "another collector is already running on $root (lock $root/.collector.lock is held)"
    else
        log "warning: flock not found (util-linux); running without the single-collector lock"
    fi

    # The streams come from the archive layout (manifest streams): every stream=S directory of the
    # venue, so that a new stream's leftovers are recovered without editing this script.
    local s streams
    streams=$("$bin/manifest" streams "$root" --venue polymarket) ||
        log "warning: manifest streams $root exited $?; no partial files recovered this start"
    RECOVERED=""
    for s in $streams; do
        recover_stream "$bin" "$root" "$s"
    done
    # Recovered files belong to no live run: list them in a manifest of their own, so that
    # `manifest verify` accounts for them (its label says what it is).
    if [ -n "$RECOVERED" ]; then
        local rid
        rid=$("$bin/manifest" run-id) || die 2 "$bin/manifest run-id failed"
        printf '%s' "$RECOVERED" | PMARCHIVE_RUN_ID="$rid" timeout -k 5 300 "$bin/manifest" build --root "$root" \
            --label "crash recovery: partial files of dead runs sealed before a collector start" ||
            log "warning: manifest build for the recovered files exited $?"
        log "recovery: listed in manifests/run-*-$rid.json"
    fi

    log "start: pid=$$ user=$(id -un 2>/dev/null || id -u) env=$env_file root=$root bin=$bin families=${PMARCHIVE_FAMILIES:-default} interval=${PMARCHIVE_INTERVAL:-default} ws=${PMARCHIVE_WS:-1} duration=${PMARCHIVE_DURATION:-forever} label=${PMARCHIVE_LABEL:-} host=${PMARCHIVE_HOST:-$(hostname 2>/dev/null || echo unknown)}"
    exec "$collect" "$env_file"
}

main "$@"
