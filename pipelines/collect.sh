#!/usr/bin/env bash
# collect.sh — the collection chain in one command.
#
#   pm-markets --watch ──market records──▶ pm-books ──raw envelopes──▶ jsonl-rotate --stream books ─┐
#        └──── raw Gamma replies (--raw-out) ─────────────────────────▶ jsonl-rotate --stream gamma ─┼─▶ manifest build
#   (PMARCHIVE_WS=1: the market records are teed to pm-stream ────────▶ jsonl-rotate --stream ws_market ┘)
#
# Usage: pipelines/collect.sh [ENV_FILE]
#        pipelines/collect.sh --help
#
# Configuration: environment variables, optionally read from ENV_FILE (KEY=VALUE lines; the same file
# systemd's EnvironmentFile= reads). Every setting, its default and meaning:
# config/polymarket_collector.example.env. Defaults point at the real Polymarket hosts.
#
# Behaviour:
# - Every stage runs as its own job connected by FIFOs in a private temp dir; the script supervises them.
# - A stage that fails (non-zero exit) stops the whole chain and the script exits 1, so that a supervisor
#   (systemd Restart=always) restarts it. Partial files left behind are sealed by the next start.
# - SIGTERM/SIGINT (or PMARCHIVE_DURATION elapsed) stops the producers (pm-markets, pm-books, pm-stream);
#   the rotators then see end-of-input, seal their files, the manifest is finalised, and the script exits 0.
# - At start, sealed files that no manifest lists (their run's manifest stage died) are adopted into
#   this run's manifest (`manifest unlisted`), and each rotator seals the partial files of dead runs.
# - All stages share one run id (PMARCHIVE_RUN_ID) so envelopes, file names and the manifest agree.
# Exit status: 0 clean stop; 1 a stage failed; 2 bad configuration.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
log() { printf 'collect.sh: %s\n' "$*" >&2; }
die2() { log "$*"; exit 2; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) die2 "unknown option '$1' (usage: collect.sh [ENV_FILE])" ;;
esac
if [ $# -gt 1 ]; then die2 "too many arguments (usage: collect.sh [ENV_FILE])"; fi
ENV_FILE="${1:-${PMARCHIVE_ENV:-}}"
if [ -n "$ENV_FILE" ]; then
  [ -r "$ENV_FILE" ] || die2 "cannot read env file '$ENV_FILE'"
  set -a
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  set +a
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

ROOT="${PMARCHIVE_ROOT:-$repo/data/archive}"
BIN_DIR="${PMARCHIVE_BIN_DIR:-$repo/target/release}"
GAMMA_URL="${PMARCHIVE_GAMMA_URL:-https://gamma-api.polymarket.com}"
CLOB_URL="${PMARCHIVE_CLOB_URL:-https://clob.polymarket.com}"
WS_URL="${PMARCHIVE_WS_URL:-wss://ws-subscriptions-clob.polymarket.com/ws/market}"
FAMILIES="${PMARCHIVE_FAMILIES:-5m,15m,1h,4h,daily}"
AHEAD="${PMARCHIVE_AHEAD:-1}"
DISCOVERY_EVERY="${PMARCHIVE_DISCOVERY_EVERY:-60}"
KEEP_AFTER="${PMARCHIVE_KEEP_AFTER:-600}"
INTERVAL="${PMARCHIVE_INTERVAL:-1}"
LEAD="${PMARCHIVE_LEAD:-60}"
GRACE="${PMARCHIVE_GRACE:-120}"
FLUSH_SECS="${PMARCHIVE_FLUSH_SECS:-5}"
ROTATE_SECS="${PMARCHIVE_ROTATE_SECS:-3600}"
MANIFEST_REFRESH="${PMARCHIVE_MANIFEST_REFRESH:-60}"
WS="${PMARCHIVE_WS:-0}"
DURATION="${PMARCHIVE_DURATION:-}"
USER_AGENT="${PMARCHIVE_USER_AGENT:-}"
LABEL="${PMARCHIVE_LABEL:-}"

# Binaries: PMARCHIVE_BIN_DIR, else PATH.
tool() {
  if [ -x "$BIN_DIR/$1" ]; then printf '%s\n' "$BIN_DIR/$1"
  elif command -v "$1" >/dev/null 2>&1; then command -v "$1"
  else die2 "binary '$1' not found in $BIN_DIR or PATH (build with: cargo build --release)"
  fi
}
PM_MARKETS="$(tool pm-markets)"; PM_BOOKS="$(tool pm-books)"
ROTATE="$(tool jsonl-rotate)"; MANIFEST="$(tool manifest)"
if [ "$WS" = 1 ]; then PM_STREAM="$(tool pm-stream)"; fi

num() { [[ "$2" =~ ^[0-9]+([.][0-9]+)?$ ]] || die2 "$1 must be a number, got '$2'"; }
num PMARCHIVE_DISCOVERY_EVERY "$DISCOVERY_EVERY"; num PMARCHIVE_INTERVAL "$INTERVAL"
num PMARCHIVE_LEAD "$LEAD"; num PMARCHIVE_GRACE "$GRACE"; num PMARCHIVE_AHEAD "$AHEAD"
num PMARCHIVE_FLUSH_SECS "$FLUSH_SECS"; num PMARCHIVE_ROTATE_SECS "$ROTATE_SECS"
num PMARCHIVE_KEEP_AFTER "$KEEP_AFTER"; num PMARCHIVE_MANIFEST_REFRESH "$MANIFEST_REFRESH"
[ -z "$DURATION" ] || num PMARCHIVE_DURATION "$DURATION"
pos() { awk -v v="$2" 'BEGIN { exit !(v > 0) }' || die2 "$1 must be greater than 0, got '$2'"; }
pos PMARCHIVE_DISCOVERY_EVERY "$DISCOVERY_EVERY"; pos PMARCHIVE_INTERVAL "$INTERVAL"
pos PMARCHIVE_FLUSH_SECS "$FLUSH_SECS"; pos PMARCHIVE_ROTATE_SECS "$ROTATE_SECS"; pos PMARCHIVE_MANIFEST_REFRESH "$MANIFEST_REFRESH"
case "$WS" in 0|1) ;; *) die2 "PMARCHIVE_WS must be 0 or 1, got '$WS'" ;; esac

mkdir -p "$ROOT/manifests" || die2 "cannot create archive root '$ROOT'"
if [ -z "${PMARCHIVE_RUN_ID:-}" ]; then
  PMARCHIVE_RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)-$$-$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')"
fi
export PMARCHIVE_RUN_ID

ua=(); [ -z "$USER_AGENT" ] || ua=(--user-agent "$USER_AGENT")
cfg=(); [ -z "$ENV_FILE" ] || cfg=(--config "$ENV_FILE")
lbl=(); [ -z "$LABEL" ] || lbl=(--label "$LABEL")

work="$(mktemp -d "${TMPDIR:-/tmp}/pm-collect.XXXXXX")"
mkfifo "$work/markets" "$work/gamma" "$work/books" "$work/sealed"
if [ "$WS" = 1 ]; then mkfifo "$work/markets_books" "$work/markets_ws" "$work/ws"; fi

declare -A NAME=()
PRODUCERS=()
stopping=0; status=0
stop_producers() {
  [ "$stopping" = 1 ] && return 0
  stopping=1
  log "stopping producers: ${PRODUCERS[*]:-none yet}"
  [ "${#PRODUCERS[@]}" -eq 0 ] || kill -TERM "${PRODUCERS[@]}" 2>/dev/null || true
}
# Installed before any stage starts, so that a stop during start-up is handled too.
trap 'log "signal received"; stop_producers' TERM INT HUP
log "run $PMARCHIVE_RUN_ID: root=$ROOT families=$FAMILIES interval=${INTERVAL}s gamma=$GAMMA_URL clob=$CLOB_URL ws=$WS${DURATION:+ duration=${DURATION}s}"

# Consumers first (opening a FIFO blocks until both ends exist), producers last. Every child closes fd 9,
# the script's own writer on the sealed-record FIFO, which keeps the manifest reading until the end.
( exec "$MANIFEST" build --root "$ROOT" --refresh "$MANIFEST_REFRESH" "${cfg[@]}" "${lbl[@]}" < "$work/sealed" ) &
NAME[$!]=manifest; PID_MANIFEST=$!
exec 9>"$work/sealed"
# Sealed files that no manifest lists (a previous run's manifest stage died before it read their
# records, e.g. kill -9) are adopted into this run's manifest, before any rotator starts.
"$MANIFEST" unlisted "$ROOT" >&9 || log "warning: manifest unlisted exited $? (its message is above); continuing"
( exec 9>&-; exec "$ROTATE" --root "$ROOT" --stream gamma --flush-secs "$FLUSH_SECS" --rotate-secs "$ROTATE_SECS" < "$work/gamma" > "$work/sealed" ) &
NAME[$!]="jsonl-rotate gamma"
( exec 9>&-; exec "$ROTATE" --root "$ROOT" --stream books --flush-secs "$FLUSH_SECS" --rotate-secs "$ROTATE_SECS" < "$work/books" > "$work/sealed" ) &
NAME[$!]="jsonl-rotate books"
books_in="$work/markets"
if [ "$WS" = 1 ]; then
  ( exec 9>&-; exec "$ROTATE" --root "$ROOT" --stream ws_market --flush-secs "$FLUSH_SECS" --rotate-secs "$ROTATE_SECS" < "$work/ws" > "$work/sealed" ) &
  NAME[$!]="jsonl-rotate ws_market"
  ( exec 9>&-; exec "$PM_STREAM" --ws-url "$WS_URL" --clob-url "$CLOB_URL" --lead "$LEAD" --grace "$GRACE" "${ua[@]}" < "$work/markets_ws" > "$work/ws" ) &
  NAME[$!]=pm-stream; PRODUCERS+=($!)
  ( exec 9>&-; exec tee "$work/markets_ws" < "$work/markets" > "$work/markets_books" ) &
  NAME[$!]=tee
  books_in="$work/markets_books"
fi
( exec 9>&-; exec "$PM_BOOKS" --clob-url "$CLOB_URL" --interval "$INTERVAL" --lead "$LEAD" --grace "$GRACE" "${ua[@]}" < "$books_in" > "$work/books" ) &
NAME[$!]=pm-books; PRODUCERS+=($!)
# The shell opens the Gamma FIFO (fd 3), not pm-markets: if pm-markets rejects its arguments and exits,
# the gamma rotator still sees end-of-input instead of waiting forever for a writer.
( exec 9>&-; exec "$PM_MARKETS" --watch "$DISCOVERY_EVERY" --families "$FAMILIES" --ahead "$AHEAD" --keep-after "$KEEP_AFTER" \
    --gamma-url "$GAMMA_URL" --raw-out /dev/fd/3 "${ua[@]}" 3> "$work/gamma" > "$work/markets" ) &
NAME[$!]=pm-markets; PRODUCERS+=($!)
TIMER=""
if [ -n "$DURATION" ]; then { exec 9>&-; exec sleep "$DURATION"; } & TIMER=$!; fi
for p in "${!NAME[@]}"; do log "started ${NAME[$p]} (pid $p)"; done
# A stop that arrived while the stages were starting: stop the producers now that they exist.
if [ "$stopping" = 1 ]; then stopping=0; stop_producers; fi


# Supervise: wait for any job; a failure stops everything; the end of a producer stops the others.
while [ "${#NAME[@]}" -gt 0 ]; do
  pid=""; rc=0
  wait -n -p pid "${!NAME[@]}" ${TIMER:+"$TIMER"} || rc=$?
  if [ -z "${pid:-}" ]; then continue; fi       # interrupted by a trapped signal (bash leaves pid unset)
  if [ "$pid" = "$TIMER" ]; then TIMER=""; log "duration ${DURATION}s reached"; stop_producers; continue; fi
  name="${NAME[$pid]}"; unset "NAME[$pid]"
  if [ "$rc" -ne 0 ] && ! { [ "$stopping" = 1 ] && [ "$rc" -eq 143 ]; }; then
    log "$name (pid $pid) failed with exit $rc"
    status=1
    stop_producers
  else
    log "$name (pid $pid) ended (exit $rc)"
  fi
  case "$name" in pm-markets|pm-books|pm-stream) stop_producers ;; esac
  # When only the manifest is left, close our end of its FIFO so that it sees end-of-input.
  if [ "${#NAME[@]}" -eq 1 ] && [ -n "${NAME[$PID_MANIFEST]:-}" ]; then exec 9>&-; fi
done
[ -z "$TIMER" ] || kill "$TIMER" 2>/dev/null || true
rm -rf "$work"
log "run $PMARCHIVE_RUN_ID ended with status $status"
exit "$status"
