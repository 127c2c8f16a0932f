#!/usr/bin/env bash
# collect.sh — the collection chain in one command.
#
#   pm-markets --watch ──market records──▶ tee ─▶ pm-books ──raw envelopes──▶ jsonl-rotate --stream books ───┐
#        │                                   ├──▶ jsonl-rotate --stream markets (market + resolution records) ┤
#        │                                   ├──▶ pm-trades ──raw envelopes──▶ jsonl-rotate --stream trades ──┤
#        │                                   └──▶ pm-stream ──raw envelopes──▶ jsonl-rotate --stream ws_market┼─▶ manifest build
#        └──── raw Gamma replies (--raw-out) ────────────────────────────────▶ jsonl-rotate --stream gamma ───┤
#   kalshi-markets --watch ─▶ tee ─▶ kalshi-books ──raw envelopes──▶ jsonl-rotate --venue kalshi --stream books ──┤
#        │                     ├──▶ jsonl-rotate --venue kalshi --stream markets (market + resolution records) ────┤
#        │                     └──▶ kalshi-trades ──raw envelopes──▶ jsonl-rotate --venue kalshi --stream trades ──┤
#        └──── raw Kalshi replies (--raw-out) ──────────────────────▶ jsonl-rotate --venue kalshi --stream discovery ┘
#   (Polymarket: on unless PMARCHIVE_POLYMARKET=0 — then pm-stream and pm-trades are off too;
#   pm-trades: on unless PMARCHIVE_TRADES=0; pm-stream: on unless PMARCHIVE_WS=0; the Kalshi lane
#   (KXBTC15M): off unless PMARCHIVE_KALSHI=1, its trades on unless PMARCHIVE_KALSHI_TRADES=0. At
#   least one venue must be on.)
#   Both venues run in this one chain: one run id, one run manifest, one adoption of unlisted files —
#   the archive's crash recovery assumes one writer chain per archive root (docs/KALSHI.md).
#
# Usage: pipelines/collect.sh [ENV_FILE]
#        pipelines/collect.sh --help
#
# Configuration: environment variables, optionally read from ENV_FILE. The file is read as DATA with
# systemd's EnvironmentFile= rules (scripts/read_env_file.sh): KEY=VALUE lines, '#'/';' comment lines,
# '…' and "…" quotes; it is never sourced and nothing in it runs or expands; its values win over the
# environment. Every setting, its default and meaning: config/polymarket_collector.example.env.
# Defaults point at the real Polymarket hosts.
#
# Behaviour:
# - Before anything starts, every stage's exact argument list is checked by the tool itself
#   (`TOOL ARGS... --check-args`): a bad setting exits 2 with the tool's one-line message, and nothing
#   is started or written.
# - Every stage is a child of this script, connected by FIFOs in a private temp dir that this script
#   also holds open (read+write), so no open() ever blocks and no stage sees end-of-input or a closed
#   pipe until the script decides the chain stops.
# - The script polls its stages (every 0.1 s). Any stage that ends while the chain runs, whatever it
#   died of (exit code, signal, failure before its first line), stops the whole chain and the script
#   exits 1, so that a supervisor (systemd Restart=always) restarts it.
# - Stopping (a failure, SIGTERM/SIGINT/SIGHUP, or PMARCHIVE_DURATION elapsed), in order, each step
#   bounded: the producers (pm-markets, tee, pm-books, pm-trades, pm-stream; kalshi-markets, its tee,
#   kalshi-books, kalshi-trades) get SIGTERM; the script closes its ends of their FIFOs, so the
#   rotators see end-of-input, seal their files and print the sealed records; then the manifest stage
#   sees end-of-input and finalises the run manifest. A stage still
#   running 3 s into its step gets SIGTERM (the rotators seal on SIGTERM too), 2 s later SIGKILL. The
#   whole chain is gone within about 10 s of the trigger.
# - At start, sealed files that no manifest lists (their run's manifest stage died) are adopted into
#   this run's manifest (`manifest unlisted`), and each rotator seals the partial files of dead runs.
# - All stages share one run id (PMARCHIVE_RUN_ID) so envelopes, file names and the manifest agree.
# Exit status: 0 clean stop (signal or duration, every stage ended by itself with 0);
#              1 a stage ended or failed while the chain ran, or had to be killed while stopping;
#              2 bad configuration (nothing was started).
set -uo pipefail
# A stop requested at any time is acted on by the supervision loop (or before any stage starts).
stop_requested=""
trap 'stop_requested=signal' TERM INT HUP

usage() { sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
log() { printf 'collect.sh: %s\n' "$*" >&2; }
die2() { log "$*"; exit 2; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) die2 "unknown option '$1' (usage: collect.sh [ENV_FILE])" ;;
esac
if [ $# -gt 1 ]; then die2 "too many arguments (usage: collect.sh [ENV_FILE])"; fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
ENV_FILE="${1:-${PMARCHIVE_ENV:-}}"
if [ -n "$ENV_FILE" ]; then
  # shellcheck source=../scripts/read_env_file.sh
  . "$repo/scripts/read_env_file.sh" 2>/dev/null || die2 "$repo/scripts/read_env_file.sh is missing"
  PM_ENV_PROG=collect.sh pm_read_env_file "$ENV_FILE" || exit 2
fi

ROOT="${PMARCHIVE_ROOT:-$repo/data/archive}"
BIN_DIR="${PMARCHIVE_BIN_DIR:-$repo/target/release}"
GAMMA_URL="${PMARCHIVE_GAMMA_URL:-https://gamma-api.polymarket.com}"
CLOB_URL="${PMARCHIVE_CLOB_URL:-https://clob.polymarket.com}"
WS_URL="${PMARCHIVE_WS_URL:-wss://ws-subscriptions-clob.polymarket.com/ws/market}"
DATA_URL="${PMARCHIVE_DATA_URL:-https://data-api.polymarket.com}"
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
POLYMARKET="${PMARCHIVE_POLYMARKET:-1}"
WS="${PMARCHIVE_WS:-1}"
TRADES="${PMARCHIVE_TRADES:-1}"
TRADES_INTERVAL="${PMARCHIVE_TRADES_INTERVAL:-5}"
TRADES_SETTLE="${PMARCHIVE_TRADES_SETTLE:-120}"
KALSHI="${PMARCHIVE_KALSHI:-0}"
KALSHI_URL="${PMARCHIVE_KALSHI_URL:-https://api.elections.kalshi.com/trade-api/v2}"
KALSHI_INTERVAL="${PMARCHIVE_KALSHI_INTERVAL:-1}"
KALSHI_TRADES="${PMARCHIVE_KALSHI_TRADES:-1}"
KALSHI_TRADES_INTERVAL="${PMARCHIVE_KALSHI_TRADES_INTERVAL:-5}"
DURATION="${PMARCHIVE_DURATION:-}"
USER_AGENT="${PMARCHIVE_USER_AGENT:-}"
LABEL="${PMARCHIVE_LABEL:-}"

# The only settings this script reads itself; all others are checked by the tools (--check-args).
case "$POLYMARKET" in 0|1) ;; *) die2 "PMARCHIVE_POLYMARKET must be 0 or 1, got '$POLYMARKET'" ;; esac
case "$WS" in 0|1) ;; *) die2 "PMARCHIVE_WS must be 0 or 1, got '$WS'" ;; esac
case "$TRADES" in 0|1) ;; *) die2 "PMARCHIVE_TRADES must be 0 or 1, got '$TRADES'" ;; esac
case "$KALSHI" in 0|1) ;; *) die2 "PMARCHIVE_KALSHI must be 0 or 1, got '$KALSHI'" ;; esac
case "$KALSHI_TRADES" in 0|1) ;; *) die2 "PMARCHIVE_KALSHI_TRADES must be 0 or 1, got '$KALSHI_TRADES'" ;; esac
[ "$KALSHI" = 1 ] || KALSHI_TRADES=0
[ "$POLYMARKET" = 1 ] || { WS=0; TRADES=0; }
[ "$POLYMARKET" = 1 ] || [ "$KALSHI" = 1 ] ||
  die2 "no venue is on: PMARCHIVE_POLYMARKET=0 needs PMARCHIVE_KALSHI=1"
if [ -n "$DURATION" ]; then
  [[ "$DURATION" =~ ^[0-9]+([.][0-9]+)?$ ]] && [[ "$DURATION" =~ [1-9] ]] ||
    die2 "PMARCHIVE_DURATION must be a number of seconds greater than 0 (or empty), got '$DURATION'"
fi

# Binaries: PMARCHIVE_BIN_DIR, else PATH.
tool() {
  if [ -x "$BIN_DIR/$1" ]; then printf '%s\n' "$BIN_DIR/$1"
  elif command -v "$1" >/dev/null 2>&1; then command -v "$1"
  else die2 "binary '$1' not found in $BIN_DIR or PATH (build with: cargo build --release)"
  fi
}
PM_MARKETS="" PM_BOOKS=""
if [ "$POLYMARKET" = 1 ]; then PM_MARKETS="$(tool pm-markets)" || exit 2; PM_BOOKS="$(tool pm-books)" || exit 2; fi
ROTATE="$(tool jsonl-rotate)" || exit 2
MANIFEST="$(tool manifest)" || exit 2
if [ "$WS" = 1 ]; then PM_STREAM="$(tool pm-stream)" || exit 2; fi
if [ "$TRADES" = 1 ]; then PM_TRADES="$(tool pm-trades)" || exit 2; fi
if [ "$KALSHI" = 1 ]; then KX_MARKETS="$(tool kalshi-markets)" || exit 2; KX_BOOKS="$(tool kalshi-books)" || exit 2; fi
if [ "$KALSHI_TRADES" = 1 ]; then KX_TRADES="$(tool kalshi-trades)" || exit 2; fi

if [ -z "${PMARCHIVE_RUN_ID:-}" ]; then
  PMARCHIVE_RUN_ID="$("$MANIFEST" run-id)" || die2 "$MANIFEST run-id failed"
fi
export PMARCHIVE_RUN_ID

ua=(); [ -z "$USER_AGENT" ] || ua=(--user-agent "$USER_AGENT")
cfg=(); [ -z "$ENV_FILE" ] || cfg=(--config "$ENV_FILE")
lbl=(); [ -z "$LABEL" ] || lbl=(--label "$LABEL")

# Each stage's exact argument list (the same arrays are checked, then run).
A_MANIFEST=("$MANIFEST" build --root "$ROOT" --refresh "$MANIFEST_REFRESH" "${cfg[@]}" "${lbl[@]}")
# rotate_args STREAM [VENUE]
rotate_args() { A_ROTATE=("$ROTATE" --root "$ROOT" --venue "${2:-polymarket}" --stream "$1" --flush-secs "$FLUSH_SECS" --rotate-secs "$ROTATE_SECS"); }
rotate_args gamma; A_ROT_GAMMA=("${A_ROTATE[@]}")
rotate_args books; A_ROT_BOOKS=("${A_ROTATE[@]}")
rotate_args ws_market; A_ROT_WS=("${A_ROTATE[@]}")
rotate_args markets; A_ROT_MARKETS=("${A_ROTATE[@]}")
rotate_args trades; A_ROT_TRADES=("${A_ROTATE[@]}")
rotate_args discovery kalshi; A_ROT_KX_DISCOVERY=("${A_ROTATE[@]}")
rotate_args books kalshi; A_ROT_KX_BOOKS=("${A_ROTATE[@]}")
rotate_args markets kalshi; A_ROT_KX_MARKETS=("${A_ROTATE[@]}")
rotate_args trades kalshi; A_ROT_KX_TRADES=("${A_ROTATE[@]}")
A_BOOKS=("$PM_BOOKS" --clob-url "$CLOB_URL" --interval "$INTERVAL" --lead "$LEAD" --grace "$GRACE" "${ua[@]}")
A_MARKETS=("$PM_MARKETS" --watch "$DISCOVERY_EVERY" --families "$FAMILIES" --ahead "$AHEAD" --keep-after "$KEEP_AFTER"
  --gamma-url "$GAMMA_URL" --raw-out /dev/fd/3 "${ua[@]}")
A_TRADES=()
[ "$TRADES" = 0 ] || A_TRADES=("$PM_TRADES" --data-url "$DATA_URL" --interval "$TRADES_INTERVAL" --settle "$TRADES_SETTLE" "${ua[@]}")
A_KX_MARKETS=() A_KX_BOOKS=() A_KX_TRADES=()
if [ "$KALSHI" = 1 ]; then
  A_KX_MARKETS=("$KX_MARKETS" --watch "$DISCOVERY_EVERY" --ahead "$AHEAD" --keep-after "$KEEP_AFTER"
    --kalshi-url "$KALSHI_URL" --raw-out /dev/fd/3 "${ua[@]}")
  A_KX_BOOKS=("$KX_BOOKS" --kalshi-url "$KALSHI_URL" --interval "$KALSHI_INTERVAL" --lead "$LEAD" --grace "$GRACE" "${ua[@]}")
fi
[ "$KALSHI_TRADES" = 0 ] || A_KX_TRADES=("$KX_TRADES" --kalshi-url "$KALSHI_URL" --interval "$KALSHI_TRADES_INTERVAL"
  --lead "$LEAD" --settle "$TRADES_SETTLE" "${ua[@]}")
A_STREAM=()
[ "$WS" = 0 ] || A_STREAM=("$PM_STREAM" --ws-url "$WS_URL" --clob-url "$CLOB_URL" --lead "$LEAD" --grace "$GRACE" "${ua[@]}")

# check NAME ARGV...: the tool parses and validates its own arguments and exits (0, or 2 + message).
check() {
  local name=$1 out rc
  shift
  out=$(timeout -k 2 20 "$@" --check-args 2>&1 </dev/null >/dev/null)
  rc=$?
  [ "$rc" -eq 0 ] && return 0
  out=$(printf '%s\n' "$out" | grep -v "^Try '.* --help' for more information\.$" | head -n 1)
  if [ "$rc" -eq 2 ]; then
    local flag setting=""
    flag=$(printf '%s\n' "$out" | grep -o -- '--[a-z-]*' | head -n 1)
    case "$name $flag" in
      "pm-trades --interval") flag=; setting=TRADES_INTERVAL ;; "pm-trades --settle") flag=; setting=TRADES_SETTLE ;;
      "kalshi-books --interval") flag=; setting=KALSHI_INTERVAL ;;
      "kalshi-trades --interval") flag=; setting=KALSHI_TRADES_INTERVAL ;; "kalshi-trades --settle") flag=; setting=TRADES_SETTLE ;;
    esac
    case $flag in
      --data-url) setting=DATA_URL ;; --kalshi-url) setting=KALSHI_URL ;;
      --interval) setting=INTERVAL ;; --lead) setting=LEAD ;; --grace) setting=GRACE ;;
      --clob-url) setting=CLOB_URL ;; --gamma-url) setting=GAMMA_URL ;; --ws-url) setting=WS_URL ;;
      --families) setting=FAMILIES ;; --ahead) setting=AHEAD ;; --watch) setting=DISCOVERY_EVERY ;;
      --keep-after) setting=KEEP_AFTER ;; --flush-secs) setting=FLUSH_SECS ;; --rotate-secs) setting=ROTATE_SECS ;;
      --refresh) setting=MANIFEST_REFRESH ;; --label) setting=LABEL ;; --user-agent) setting=USER_AGENT ;;
      --host) setting=HOST ;; --run-id) setting=RUN_ID ;; --root) setting=ROOT ;;
    esac
    die2 "bad configuration${setting:+ in PMARCHIVE_$setting}: ${out:-$name rejected its arguments} (nothing was started)"
  fi
  log "cannot run $name ($1 --check-args exited $rc${out:+: $out}); nothing was started"
  exit 1
}
check "manifest build" "${A_MANIFEST[@]}"
check "jsonl-rotate" "${A_ROT_BOOKS[@]}"
[ "$POLYMARKET" = 0 ] || { check pm-books "${A_BOOKS[@]}"; check pm-markets "${A_MARKETS[@]}"; }
[ "$WS" = 0 ] || check pm-stream "${A_STREAM[@]}"
[ "$TRADES" = 0 ] || check pm-trades "${A_TRADES[@]}"
[ "$KALSHI" = 0 ] || { check kalshi-markets "${A_KX_MARKETS[@]}"; check kalshi-books "${A_KX_BOOKS[@]}"; }
[ "$KALSHI_TRADES" = 0 ] || check kalshi-trades "${A_KX_TRADES[@]}"

mkdir -p "$ROOT/manifests" 2>/dev/null || die2 "cannot create archive root '$ROOT/manifests'"

work="$(mktemp -d "${TMPDIR:-/tmp}/pm-collect.XXXXXX")" || { log "cannot create a temp dir"; exit 1; }
fifos=(sealed tick)
[ "$POLYMARKET" = 0 ] || fifos+=(gamma books markets markets_books markets_rot)
[ "$WS" = 0 ] || fifos+=(markets_ws ws)
[ "$TRADES" = 0 ] || fifos+=(markets_trades trades)
[ "$KALSHI" = 0 ] || fifos+=(kx_discovery kx_markets kx_markets_books kx_markets_rot kx_books)
[ "$KALSHI_TRADES" = 0 ] || fifos+=(kx_markets_trades kx_trades)
HELD=()
declare -A FD=()
for f in "${fifos[@]}"; do
  mkfifo "$work/$f" || { log "cannot create FIFO $work/$f"; rm -rf "$work"; exit 1; }
  # Read+write: never blocks, and keeps both ends of every FIFO open until the stop sequence.
  exec {fd}<>"$work/$f"
  FD[$f]=$fd; HELD+=("$fd")
done
# Children close every descriptor the script holds (else a rotator would never see end-of-input).
close_held() { local v; for v in "${HELD[@]}"; do exec {v}>&-; done; }
tick() { read -r -t 0.1 -u "${FD[tick]}" _ 2>/dev/null; return 0; }  # one supervision step (0.1 s)

declare -A NAME=() KIND=() RC=()
started() { NAME[$1]=$2; KIND[$1]=$3; log "started $2 (pid $1)"; }
alive() { local p; for p in "$@"; do [ -z "${RC[$p]:-}" ] && kill -0 "$p" 2>/dev/null && printf '%s ' "$p"; done; }
# reap PID: its exit status (bash keeps the status of a reaped background child).
reap() { local rc=0; wait "$1" 2>/dev/null || rc=$?; RC[$1]=$rc; }
describe() { # PID -> "NAME (pid P) exited N" / "... died of SIGX"
  local rc=${RC[$1]}
  if [ "$rc" -gt 128 ] && [ "$rc" -lt 160 ]; then
    printf '%s (pid %s) died of SIG%s' "${NAME[$1]}" "$1" "$(kill -l "$((rc - 128))" 2>/dev/null || echo "$((rc - 128))")"
  else
    printf '%s (pid %s) exited %s' "${NAME[$1]}" "$1" "$rc"
  fi
}
pids_of() { local p; for p in "${!KIND[@]}"; do [ "${KIND[$p]}" = "$1" ] && printf '%s ' "$p"; done; }

status=0
cleanup() { rm -rf "$work"; }
if [ -n "$stop_requested" ]; then log "stopped before any stage started"; cleanup; exit 0; fi
log "run $PMARCHIVE_RUN_ID: root=$ROOT families=$FAMILIES interval=${INTERVAL}s gamma=$GAMMA_URL clob=$CLOB_URL ws=$WS trades=$TRADES data=$DATA_URL kalshi=$KALSHI${DURATION:+ duration=${DURATION}s}"

# Sealed files that no manifest lists (a previous run's manifest stage died before it read their
# records, e.g. kill -9) are adopted into this run's manifest. Listed before any rotator starts (a
# rotator seals dead-run partials at start, and those must not be listed twice); fed to the manifest
# stage by a one-shot `cat`, so that a dead manifest stage cannot block the script.
"$MANIFEST" unlisted "$ROOT" > "$work/unlisted" || log "warning: manifest unlisted exited $? (its message is above); continuing"

( close_held; exec "${A_MANIFEST[@]}" < "$work/sealed" ) &
started $! "manifest build" manifest
( close_held; exec cat "$work/unlisted" ) > "$work/sealed" &
started $! "unlisted feed" oneshot
if [ "$POLYMARKET" = 1 ]; then
  ( close_held; exec "${A_ROT_GAMMA[@]}" < "$work/gamma" > "$work/sealed" ) &
  started $! "jsonl-rotate gamma" rotator
  ( close_held; exec "${A_ROT_BOOKS[@]}" < "$work/books" > "$work/sealed" ) &
  started $! "jsonl-rotate books" rotator
  # pm-markets' records (market and resolution records) go to every consumer and into the archive.
  ( close_held; exec "${A_ROT_MARKETS[@]}" < "$work/markets_rot" > "$work/sealed" ) &
  started $! "jsonl-rotate markets" rotator
  tee_out=("$work/markets_rot")
  if [ "$WS" = 1 ]; then
    ( close_held; exec "${A_ROT_WS[@]}" < "$work/ws" > "$work/sealed" ) &
    started $! "jsonl-rotate ws_market" rotator
    ( close_held; exec "${A_STREAM[@]}" < "$work/markets_ws" > "$work/ws" ) &
    started $! pm-stream producer
    tee_out+=("$work/markets_ws")
  fi
  if [ "$TRADES" = 1 ]; then
    ( close_held; exec "${A_ROT_TRADES[@]}" < "$work/trades" > "$work/sealed" ) &
    started $! "jsonl-rotate trades" rotator
    ( close_held; exec "${A_TRADES[@]}" < "$work/markets_trades" > "$work/trades" ) &
    started $! pm-trades producer
    tee_out+=("$work/markets_trades")
  fi
  ( close_held; exec tee "${tee_out[@]}" < "$work/markets" > "$work/markets_books" ) &
  started $! tee producer
  ( close_held; exec "${A_BOOKS[@]}" < "$work/markets_books" > "$work/books" ) &
  started $! pm-books producer
  ( close_held; exec "${A_MARKETS[@]}" < /dev/null 3> "$work/gamma" > "$work/markets" ) &
  started $! pm-markets producer
fi
if [ "$KALSHI" = 1 ]; then
  ( close_held; exec "${A_ROT_KX_DISCOVERY[@]}" < "$work/kx_discovery" > "$work/sealed" ) &
  started $! "jsonl-rotate kalshi discovery" rotator
  ( close_held; exec "${A_ROT_KX_BOOKS[@]}" < "$work/kx_books" > "$work/sealed" ) &
  started $! "jsonl-rotate kalshi books" rotator
  ( close_held; exec "${A_ROT_KX_MARKETS[@]}" < "$work/kx_markets_rot" > "$work/sealed" ) &
  started $! "jsonl-rotate kalshi markets" rotator
  kx_tee_out=("$work/kx_markets_rot")
  if [ "$KALSHI_TRADES" = 1 ]; then
    ( close_held; exec "${A_ROT_KX_TRADES[@]}" < "$work/kx_trades" > "$work/sealed" ) &
    started $! "jsonl-rotate kalshi trades" rotator
    ( close_held; exec "${A_KX_TRADES[@]}" < "$work/kx_markets_trades" > "$work/kx_trades" ) &
    started $! kalshi-trades producer
    kx_tee_out+=("$work/kx_markets_trades")
  fi
  ( close_held; exec tee "${kx_tee_out[@]}" < "$work/kx_markets" > "$work/kx_markets_books" ) &
  started $! "kalshi tee" producer
  ( close_held; exec "${A_KX_BOOKS[@]}" < "$work/kx_markets_books" > "$work/kx_books" ) &
  started $! kalshi-books producer
  ( close_held; exec "${A_KX_MARKETS[@]}" < /dev/null 3> "$work/kx_discovery" > "$work/kx_markets" ) &
  started $! kalshi-markets producer
fi
TIMER=""
if [ -n "$DURATION" ]; then ( close_held; exec sleep "$DURATION" ) & TIMER=$!; fi

# Supervise: poll every stage; the first one to end (or a signal, or the duration) stops the chain.
why=""
while [ -z "$why" ]; do
  if [ -n "$stop_requested" ]; then why="signal received"; break; fi
  if [ -n "$TIMER" ] && ! kill -0 "$TIMER" 2>/dev/null; then why="duration ${DURATION}s reached"; break; fi
  for p in "${!NAME[@]}"; do
    [ -z "${RC[$p]:-}" ] || continue
    kill -0 "$p" 2>/dev/null && continue
    reap "$p"
    if [ "${KIND[$p]}" = oneshot ]; then
      [ "${RC[$p]}" -eq 0 ] || log "warning: $(describe "$p"); continuing"
      continue
    fi
    log "$(describe "$p") while the chain was running: stopping the chain"
    why="${NAME[$p]} ended"; status=1
    break
  done
  [ -n "$why" ] || tick
done

# end_step SECS PID...: wait up to SECS for the stages to end by themselves, then SIGTERM, then SIGKILL.
end_step() {
  local secs=$1 n left p
  shift
  for sig in "" TERM KILL; do
    case $sig in "") n=$((secs * 10)) ;; TERM) n=20 ;; KILL) n=20 ;; esac
    if [ -n "$sig" ]; then
      left=$(alive "$@")
      [ -n "$left" ] || break
      for p in $left; do log "${NAME[$p]} (pid $p) still running: sending SIG$sig"; done
      # shellcheck disable=SC2086
      kill -"$sig" $left 2>/dev/null
      [ "$sig" = TERM ] || status=1
    fi
    while [ "$n" -gt 0 ] && [ -n "$(alive "$@")" ]; do tick; n=$((n - 1)); done
  done
  for p in "$@"; do
    [ -n "${RC[$p]:-}" ] && continue
    if kill -0 "$p" 2>/dev/null; then
      # Unkillable (uninterruptible I/O): never wait for it, so the script still ends.
      log "${NAME[$p]} (pid $p) survived SIGKILL; not waiting for it"
      RC[$p]=137; status=1
      continue
    fi
    reap "$p"
    local rc=${RC[$p]}
    if [ "$rc" -eq 0 ] || { [ "$rc" -eq 143 ] && [ "${KIND[$p]}" = producer ]; }; then
      log "${NAME[$p]} (pid $p) ended (exit $rc)"
    else
      log "$(describe "$p") while stopping"
      status=1
    fi
  done
}

log "stopping the chain: $why"
# shellcheck disable=SC2046
{
  producers=$(pids_of producer)
  # shellcheck disable=SC2086
  [ -z "$producers" ] || kill -TERM $producers 2>/dev/null
  # shellcheck disable=SC2086
  end_step 3 $producers $(pids_of oneshot)
  for f in markets markets_books markets_rot markets_ws markets_trades gamma books ws trades \
    kx_discovery kx_markets kx_markets_books kx_markets_rot kx_markets_trades kx_books kx_trades; do
    [ -z "${FD[$f]:-}" ] || { v=${FD[$f]}; exec {v}>&-; }
  done
  # shellcheck disable=SC2086
  end_step 3 $(pids_of rotator)
  v=${FD[sealed]}; exec {v}>&-
  # shellcheck disable=SC2086
  end_step 3 $(pids_of manifest)
}
[ -z "$TIMER" ] || { kill "$TIMER" 2>/dev/null; wait "$TIMER" 2>/dev/null; }
cleanup
log "run $PMARCHIVE_RUN_ID ended with status $status"
exit "$status"
