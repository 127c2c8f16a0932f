#!/usr/bin/env bash
# soak.sh — the soak runner: the deployed chain (pipelines/collect.sh) plus periodic offload
# (scripts/upload_archive_rclone.sh) under a supervisor that restarts it as systemd does, for a given
# duration, with injected faults; then the data-quality checks and the report (soak-report).
#
# Usage: pipelines/soak.sh --duration SECS --out DIR [options]
#        pipelines/soak.sh --help
#
# Two modes:
#   loopback (default)  starts the soak venue (pm-venue, 127.0.0.1 only) with its fault schedule and
#                       points the chain at it. Everything it writes is a LOOPBACK soak, never live.
#   --real ENV_FILE     the operator's real run on a VPS: no venue, the chain reads ENV_FILE as
#                       collect.sh does (real hosts by default); no venue faults. The supervisor's
#                       own faults (SIGKILL, disk fill, clock step) stay off unless asked for.
#
# Options:
#   --duration SECS       Soak length in real seconds (required).
#   --out DIR             Output directory (must not exist): archive/, remote/, logs, checks/,
#                         report. Required.
#   --bin-dir DIR         Where the tools are. [default: <repo>/target/release]
#   --restart-sec SECS    Wait before restarting the chain after it exits (systemd RestartSec). An
#                         exit status of 2 is not restarted (RestartPreventExitStatus=2). [default: 15,
#                         as systemd/polymarket-orderbook-collector.service]
#   --kill-every SECS     SIGKILL one random stage of the chain every SECS on average (0 = never).
#                         [default: 300 in loopback mode, 0 with --real]
#   --kill-at T[,T...]    SIGKILL one random stage at these seconds instead (a schedule that keeps
#                         kills out of chosen fault slots, as the CI soak does). Overrides --kill-every.
#   --disk-full AT:SECS   At AT seconds, fill the archive's disk (a size-limited tmpfs mounted on
#                         DIR/archive; needs root) for SECS seconds. Repeatable.
#   --tmpfs-size SIZE     Size of that tmpfs. [default: 512m]
#   --clock-step AT:SECS:STEP   At AT seconds the chain's wall clock steps by STEP seconds and back
#                         after SECS (PMARCHIVE_CLOCK steps, src/clock.rs; needs a chain started
#                         before AT). Repeatable.
#   --outage AT:SECS      Venue outage (passed to pm-venue). Repeatable.
#   --fault-every SECS    pm-venue --fault-every. [default: 30]
#   --faults PROFILE      pm-venue --faults (soak|none). [default: soak]
#   --rate N              Compressed time: venue and chain on a simulated clock N times real time.
#   --start RFC3339       Simulated clock start (with --rate). [default: now]
#   --offload-every SECS  Run the uploader this often (and once at the end). [default: 300]
#   --remote REMOTE       rclone destination of the offload. [default: a local-backend remote,
#                         soakremote:DIR/remote, configured in DIR/rclone.conf]
#   --rclone-config FILE  rclone config for --remote (e.g. the VPS's Drive config).
#   --report FILE.md      The report. [default: DIR/soak_test_<date>.md]
#   --label TEXT          Report label. [default: "LOOPBACK soak" or "REAL soak (VPS)"]
#   --seed N              Seed of the kill schedule. [default: 16]
# Chain settings (loopback mode; --real reads them from ENV_FILE): PMARCHIVE_* in the environment
# override the soak's defaults (families all five, ws on, trades on, rotate 300 s, flush 5 s).
# PMARCHIVE_KALSHI=1 (the chain's switch of the Kalshi lane, issue 17) runs both venues: pm-venue
# --kalshi also serves the loopback Kalshi API (its Kalshi faults join the fault schedule), the chain
# gets PMARCHIVE_KALSHI_URL = its base URL and starts kalshi-markets / kalshi-books / kalshi-trades
# (not kalshi-trades with PMARCHIVE_KALSHI_TRADES=0), the health check asks for the Kalshi streams
# too, the Kalshi books are normalized apart, and the report reconciles Kalshi books and trades.
#
# Writes DIR/supervisor.jsonl (schema pmarchive.soak_supervisor/1), DIR/venue.jsonl (loopback),
# DIR/collect.log (the chain's stderr), DIR/offload.log, DIR/checks/*, and the report.
# Exit status: the report's (0 all gate lines pass, 1 some fail); 2 bad arguments.
set -uo pipefail
export LC_ALL=C TZ=UTC

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
usage() { sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die2() { printf 'soak.sh: %s\n' "$*" >&2; exit 2; }
say() { printf 'soak.sh: %s\n' "$*" >&2; }

duration="" out="" bin="$repo/target/release" restart_sec=15 kill_every="" kill_list="" tmpfs_size=512m
remote="" rclone_config="" fault_every=30 faults=soak rate="" start="" offload_every=300 report="" label="" seed=16 real_env=""
disk_full=() clock_steps=() outages=()
num() { [[ "$2" =~ ^[0-9]+([.][0-9]+)?$ ]] || die2 "$1: expected a number, got '$2'"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --duration) num "$1" "${2:-}"; duration=$2; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --bin-dir) bin=${2:?}; shift 2 ;;
    --restart-sec) num "$1" "${2:-}"; restart_sec=$2; shift 2 ;;
    --kill-every) num "$1" "${2:-}"; kill_every=$2; shift 2 ;;
    --kill-at) [[ "${2:-}" =~ ^[0-9]+(,[0-9]+)*$ ]] || die2 "--kill-at: expected T[,T...] (whole seconds)"; kill_list=$2; shift 2 ;;
    --disk-full) [[ "${2:-}" =~ ^[0-9]+:[0-9]+$ ]] || die2 "--disk-full: expected AT:SECS"; disk_full+=("$2"); shift 2 ;;
    --tmpfs-size) tmpfs_size=${2:?}; shift 2 ;;
    --clock-step) [[ "${2:-}" =~ ^[0-9]+:[0-9]+:[+-]?[0-9]+$ ]] || die2 "--clock-step: expected AT:SECS:STEP"; clock_steps+=("$2"); shift 2 ;;
    --outage) [[ "${2:-}" =~ ^[0-9]+:[0-9]+$ ]] || die2 "--outage: expected AT:SECS"; outages+=("$2"); shift 2 ;;
    --fault-every) num "$1" "${2:-}"; fault_every=$2; shift 2 ;;
    --faults) faults=${2:?}; shift 2 ;;
    --rate) num "$1" "${2:-}"; rate=$2; shift 2 ;;
    --start) start=${2:?}; shift 2 ;;
    --offload-every) num "$1" "${2:-}"; offload_every=$2; shift 2 ;;
    --report) report=${2:?}; shift 2 ;;
    --remote) remote=${2:?}; shift 2 ;;
    --rclone-config) rclone_config=${2:?}; shift 2 ;;
    --label) label=${2:?}; shift 2 ;;
    --seed) num "$1" "${2:-}"; seed=$2; shift 2 ;;
    --real) real_env=${2:?--real needs an ENV_FILE}; shift 2 ;;
    *) die2 "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$duration" ] || die2 "--duration SECS is required"
[ -n "$out" ] || die2 "--out DIR is required"
[ ! -e "$out" ] || die2 "$out exists; artefacts are never overwritten"
kalshi_on="" kalshi_trades=""; [ "${PMARCHIVE_KALSHI:-0}" != 1 ] || kalshi_on=1
[ -z "$kalshi_on" ] || [ "${PMARCHIVE_KALSHI_TRADES:-1}" = 0 ] || kalshi_trades=1
for t in pm-markets pm-books pm-stream pm-trades jsonl-rotate manifest pm-normalize pm-rebuild soak-report \
  ${kalshi_on:+kalshi-markets kalshi-books} ${kalshi_trades:+kalshi-trades}; do
  [ -x "$bin/$t" ] || die2 "$bin/$t not found (cargo build --release)"
done
if [ -n "$real_env" ]; then
  [ -r "$real_env" ] || die2 "--real: cannot read $real_env"
  [ -z "$rate" ] || die2 "--rate is for loopback soaks only"
  # The env file's values win over the environment (collect.sh): the soak's archive must be its own.
  ! grep -Eq '^[[:space:]]*(export[[:space:]]+)?PMARCHIVE_ROOT=' "$real_env" ||
    die2 "--real: $real_env sets PMARCHIVE_ROOT; remove it (the soak archives under --out DIR/archive)"
  kill_every=${kill_every:-0}; label=${label:-REAL soak (VPS)}; faults=none
else
  [ -x "$bin/pm-venue" ] || die2 "$bin/pm-venue not found (cargo build --release)"
  kill_every=${kill_every:-300}; label=${label:-LOOPBACK soak}
fi
[ -z "$kill_list" ] || kill_every=0
command -v rclone >/dev/null || die2 "rclone not found (the offload uses it)"
mkdir -p "$out" || die2 "cannot create $out"
out="$(cd "$out" && pwd)"
report=${report:-$out/soak_test_$(date -u +%Y-%m-%d).md}
ROOT="$out/archive"; mkdir -p "$ROOT" "$out/remote" "$out/checks"
SUP="$out/supervisor.jsonl"
[ -z "$real_env" ] || : > "$out/venue.jsonl"  # no venue: an empty venue log

now() { date -u +%s.%N; }
iso() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }
# ev EVENT [rc] [detail] [pid]: one supervisor line (schema pmarchive.soak_supervisor/1).
ev() {
  local rc=${2:-} detail=${3:-} pid=${4:-} extra=""
  [ -z "$rc" ] || extra+=",\"rc\":$rc"
  [ -z "$detail" ] || extra+=",\"detail\":\"${detail//\"/\'}\""
  [ -z "$pid" ] || extra+=",\"pid\":$pid"
  printf '{"schema":"pmarchive.soak_supervisor/1","at_utc":"%s","event":"%s"%s}\n' "$(iso)" "$1" "$extra" >> "$SUP"
}

t0=$(now)
elapsed() { awk -v a="$(now)" -v b="$t0" 'BEGIN{printf "%.3f", a-b}'; }
past() { awk -v e="$(elapsed)" -v x="$1" 'BEGIN{exit !(e>=x)}'; }

# Disk fill needs a tmpfs of our own on the archive (root only).
tmpfs_mounted=""
if [ ${#disk_full[@]} -gt 0 ]; then
  if mount -t tmpfs -o "size=$tmpfs_size" soak-archive "$ROOT" 2>/dev/null; then tmpfs_mounted=1
  else say "cannot mount a tmpfs on $ROOT (not root?): --disk-full is skipped"; ev disk_full_skipped "" "mount failed"; disk_full=()
  fi
fi

cleanup() {
  [ -z "${venue_pid:-}" ] || kill "$venue_pid" 2>/dev/null
  [ -z "${chain_pid:-}" ] || kill "$chain_pid" 2>/dev/null
}
trap cleanup EXIT
trap 'stop=1' TERM INT

ev soak_start "" "$([ -n "$real_env" ] && echo real || echo loopback) duration=${duration}s rate=${rate:-1} kill_every=${kill_every}${kill_list:+ kill_at=$kill_list} faults=$faults disk_full=${disk_full[*]:-none} clock_steps=${clock_steps[*]:-none} outages=${outages[*]:-none}${kalshi_on:+ kalshi=on}"

# --- the venue (loopback)
export PMARCHIVE_ROOT="$ROOT" PMARCHIVE_BIN_DIR="$bin"
if [ -z "$real_env" ]; then
  vargs=(--log "$out/venue.jsonl" --faults "$faults" --fault-every "$fault_every" --resolve-after 120 ${kalshi_on:+--kalshi})
  urls=$((2 + ${kalshi_on:-0}))
  for o in "${outages[@]}"; do vargs+=(--outage "$o"); done
  if [ -n "$rate" ]; then
    vargs+=(--clock "${start:-$(iso)}x$rate" --clock-file "$out/venue.clock")
  fi
: > "$out/venue.urls"  # exists before the wait below reads it
  "$bin/pm-venue" "${vargs[@]}" > "$out/venue.urls" 2> "$out/venue.log" &
  venue_pid=$!
  for _ in $(seq 100); do [ "$(wc -l < "$out/venue.urls")" -ge "$urls" ] && break; sleep 0.1; done
  [ "$(wc -l < "$out/venue.urls")" -ge "$urls" ] || die2 "pm-venue did not start (see $out/venue.log)"
  http_url=$(sed -n 1p "$out/venue.urls"); ws_url=$(sed -n 2p "$out/venue.urls")
  # The loopback Kalshi API (pm-venue's third line, …/trade-api/v2) for the chain's Kalshi lane.
  if [ -n "$kalshi_on" ]; then PMARCHIVE_KALSHI_URL="$(sed -n 3p "$out/venue.urls")"; export PMARCHIVE_KALSHI_URL; fi
  export PMARCHIVE_GAMMA_URL="$http_url" PMARCHIVE_CLOB_URL="$http_url" PMARCHIVE_WS_URL="$ws_url"
  # pm-venue serves the Data API (/v2/trades) on the same base URL: the trades lane is on.
  export PMARCHIVE_DATA_URL="$http_url" PMARCHIVE_TRADES=${PMARCHIVE_TRADES:-1}
  export PMARCHIVE_LABEL="$label: pm-venue on 127.0.0.1 (recorded and derived responses) — not live data"
  export PMARCHIVE_FAMILIES=${PMARCHIVE_FAMILIES:-5m,15m,1h,4h,daily} PMARCHIVE_WS=${PMARCHIVE_WS:-1}
  export PMARCHIVE_ROTATE_SECS=${PMARCHIVE_ROTATE_SECS:-300} PMARCHIVE_FLUSH_SECS=${PMARCHIVE_FLUSH_SECS:-5}
  export PMARCHIVE_MANIFEST_REFRESH=${PMARCHIVE_MANIFEST_REFRESH:-30}
  export PMARCHIVE_DISCOVERY_EVERY=${PMARCHIVE_DISCOVERY_EVERY:-30} PMARCHIVE_AHEAD=${PMARCHIVE_AHEAD:-1}
  if [ -n "$rate" ]; then
    # Compressed time: discovery, lead and grace are read on the simulated clock; polling and
    # discovery periods stay real seconds, so they are shortened to keep every window in view.
    export PMARCHIVE_DISCOVERY_EVERY=${PMARCHIVE_DISCOVERY_EVERY_SIM:-2} PMARCHIVE_AHEAD=${PMARCHIVE_AHEAD_SIM:-3}
    export PMARCHIVE_ROTATE_SECS=${PMARCHIVE_ROTATE_SECS_SIM:-3600}
  fi
fi

# Simulated clock for a chain started now: the venue's clock (from its clock file) plus steps.
chain_clock() {
  local steps="" spec=""
  for c in "${clock_steps[@]}"; do
    IFS=: read -r at len step <<< "$c"
    local rel; rel=$(awk -v at="$at" -v e="$(elapsed)" 'BEGIN{printf "%.3f", at-e}')
    if awk -v r="$rel" 'BEGIN{exit !(r>0)}'; then
      local back; back=$(awk -v r="$rel" -v l="$len" 'BEGIN{printf "%.3f", r+l}')
      local neg=$(( -step )); [ "$neg" -ge 0 ] && neg="+$neg"; [ "$step" -ge 0 ] && step="+${step#+}"
      steps+=",${step}@${rel},${neg}@${back}"
    fi
  done
  if [ -f "$out/venue.clock" ]; then
    read -r real0 virt0 r < "$out/venue.clock"
    spec="$(date -u -d "@$(awk -v n="$(now)" -v a="$real0" -v v="$virt0" -v r="$r" 'BEGIN{printf "%.6f", v+(n-a)*r}')" +%Y-%m-%dT%H:%M:%S.%6NZ)x$r"
  elif [ -n "$steps" ]; then
    spec="$(iso)"
  fi
  [ -z "$spec" ] || printf '%s%s\n' "$spec" "$steps"
}

if [ -z "$remote" ]; then
  printf '[soakremote]\ntype = local\n' > "$out/rclone.conf"
  remote="soakremote:$out/remote" rclone_config="$out/rclone.conf"
fi
offload() {
  local cfg=(); [ -z "$rclone_config" ] || cfg=(--rclone-config "$rclone_config")
  "$repo/scripts/upload_archive_rclone.sh" --root "$ROOT" --remote "$remote" "${cfg[@]}" \
    --min-age 0 --bwlimit off --tpslimit 0 >> "$out/offload.log" 2>&1
  ev offload "$?"
}

# --- the supervisor
RANDOM=$seed
end_at=$duration
# next_kill: sets kill_at to the next of --kill-at's times, or to a random time about --kill-every
# from now, or to "" (no more kills).
next_kill() {
  kill_at=""
  if [ -n "$kill_list" ]; then
    kill_at=${kill_list%%,*}
    if [ "$kill_at" = "$kill_list" ]; then kill_list=""; else kill_list=${kill_list#*,}; fi
  elif [ "$kill_every" != 0 ]; then
    kill_at=$(awk -v e="$(elapsed)" -v k="$kill_every" -v r="$RANDOM" 'BEGIN{printf "%.3f", e + k*(0.5 + r/32767)}')
  fi
}
next_kill
next_offload=$offload_every
declare -A disk_started=() disk_ended=() step_seen=()
offload_pids=()
stop=""
filler="$ROOT/.soak-disk-filler"
while [ -z "$stop" ] && ! past "$end_at"; do
  spec=$(chain_clock)
  if [ -n "$spec" ]; then export PMARCHIVE_CLOCK="$spec"; else unset PMARCHIVE_CLOCK; fi
  args=(); [ -z "$real_env" ] || args=("$real_env")
  "$repo/pipelines/collect.sh" "${args[@]}" 2>> "$out/collect.log" &
  chain_pid=$!
  ev chain_start "" "${spec:+PMARCHIVE_CLOCK=$spec}" "$chain_pid"
  for c in "${clock_steps[@]}"; do
    IFS=: read -r at len step <<< "$c"
    if ! past "$at"; then step_seen[$c]=pending; fi
  done
  while kill -0 "$chain_pid" 2>/dev/null; do
    sleep 1
    [ -z "$stop" ] || break
    past "$end_at" && break
    for c in "${!step_seen[@]}"; do
      IFS=: read -r at len step <<< "$c"
      if [ "${step_seen[$c]}" = pending ] && past "$at"; then step_seen[$c]=stepped; ev clock_step "" "$step"; fi
      if [ "${step_seen[$c]}" = stepped ] && past "$((at + len))"; then step_seen[$c]="done"; ev clock_step "" "$(( -step ))"; fi
    done
    for d in "${disk_full[@]}"; do
      IFS=: read -r at len <<< "$d"
      if [ -z "${disk_started[$d]:-}" ] && past "$at"; then
        disk_started[$d]=1; ev disk_full_start "" "$d"
        dd if=/dev/zero of="$filler" bs=1M 2>/dev/null; true
      fi
      if [ -n "${disk_started[$d]:-}" ] && [ -z "${disk_ended[$d]:-}" ] && past "$((at + len))"; then
        disk_ended[$d]=1; rm -f "$filler"; ev disk_full_end "" "$d"
      fi
    done
    if [ -n "$kill_at" ] && past "$kill_at"; then
      next_kill
      mapfile -t kids < <(pgrep -P "$chain_pid" | while read -r p; do
        c=$(cat "/proc/$p/comm" 2>/dev/null); case "$c" in sleep|cat|"") ;; *) echo "$p $c" ;; esac; done)
      if [ ${#kids[@]} -gt 0 ]; then
        read -r kp kc <<< "${kids[$((RANDOM % ${#kids[@]}))]}"
        kill -KILL "$kp" 2>/dev/null && ev kill "" "$kc" "$kp"
      fi
    fi
    if past "$next_offload"; then
      next_offload=$(awk -v e="$(elapsed)" -v k="$offload_every" 'BEGIN{print e+k}')
      offload & offload_pids+=($!)
    fi
  done
  if kill -0 "$chain_pid" 2>/dev/null; then kill -TERM "$chain_pid"; fi
  wait "$chain_pid"; rc=$?
  chain_pid=""
  ev chain_exit "$rc"
  if [ "$rc" = 2 ]; then ev no_restart "$rc" "exit 2 (RestartPreventExitStatus=2)"; break; fi
  [ -z "$stop" ] && ! past "$end_at" || break
  ev restart_wait "" "${restart_sec}s"
  sleep "$restart_sec"
done
rm -f "$filler"
for d in "${disk_full[@]}"; do
  if [ -n "${disk_started[$d]:-}" ] && [ -z "${disk_ended[$d]:-}" ]; then ev disk_full_end "" "$d"; fi
done
ev soak_end
[ -z "${venue_pid:-}" ] || { kill "$venue_pid" 2>/dev/null; wait "$venue_pid" 2>/dev/null; venue_pid=""; }
for p in "${offload_pids[@]}"; do wait "$p" 2>/dev/null; done  # (already reaped ones: nothing to wait for)
offload  # the last one: every file sealed by the last stop

# --- data-quality checks (outputs for the report), judged at the chain's clock now (compressed
# time: the venue's clock; real time: the wall clock, steps are over)
clock_steps=()
spec=$(chain_clock)
if [ -n "$spec" ]; then export PMARCHIVE_CLOCK="${spec%x*}"; else unset PMARCHIVE_CLOCK; fi
C="$out/checks"
chk() { local name=$1; shift; "$@" > "$C/$name.out" 2> "$C/$name.err"; echo $? > "$C/$name.rc"; }
chk manifest_verify "$bin/manifest" verify "$ROOT"
# Health: in loopback mode every lane the chain ran must be fresh (trades included); --real: every stream found.
health=()
[ -n "$real_env" ] || health=(--streams "books,gamma$([ "${PMARCHIVE_WS:-1}" = 0 ] || echo ,ws_market)$([ "${PMARCHIVE_TRADES:-1}" = 0 ] || echo ,trades)${kalshi_on:+,kalshi/discovery,kalshi/books}${kalshi_trades:+,kalshi/trades}")
chk manifest_status "$bin/manifest" status "$ROOT" --json "${health[@]}"
# A stream's files in run order: by file name (<host>-<run_id>-<n>: run ids sort by start time, n
# numerically), not by path — after a clock step a file sits under another hour's partition, and -10
# sorts before -2 as text. pm-rebuild and pm-normalize --check read runs in order.
in_run_order() { find "$ROOT" -path "$1" -name '*.jsonl.gz' -printf '%f\t%p\n' | sort -t "$(printf '\t')" -k1,1V | cut -f2-; }
mapfile -t books < <(in_run_order '*venue=polymarket/stream=books*')
mapfile -t wsf < <(in_run_order '*stream=ws_market*')
if [ ${#books[@]} -gt 0 ]; then
  chk normalize "$bin/pm-normalize" "${books[@]}" -o "$C/normalized.jsonl.gz"
  chk normalize_check "$bin/pm-normalize" --check "$C/normalized.jsonl.gz"
fi
if [ -n "$kalshi_on" ]; then
  mapfile -t kbooks < <(in_run_order '*venue=kalshi/stream=books*')
  if [ ${#kbooks[@]} -gt 0 ]; then
    chk normalize_kalshi "$bin/pm-normalize" "${kbooks[@]}" -o "$C/normalized_kalshi.jsonl.gz"
    chk normalize_kalshi_check "$bin/pm-normalize" --check "$C/normalized_kalshi.jsonl.gz"
  fi
fi
if [ ${#wsf[@]} -gt 0 ]; then
  "$bin/pm-rebuild" "${wsf[@]}" --summary "$C/rebuild.out" > /dev/null 2> "$C/rebuild.err"; echo $? > "$C/rebuild.rc"
fi
if [ -n "$tmpfs_mounted" ]; then
  # Keep the archive: copy it off the tmpfs before unmounting.
  cp -a "$ROOT" "$out/archive.kept" && umount "$ROOT" && rmdir "$ROOT" && mv "$out/archive.kept" "$ROOT"
fi
"$bin/soak-report" --archive "$ROOT" --venue-log "$out/venue.jsonl" --supervisor-log "$SUP" --checks "$C" \
  --out "$report" --label "$label" --flush-secs "${PMARCHIVE_FLUSH_SECS:-5}" --interval "${PMARCHIVE_INTERVAL:-1}" \
  --lead "${PMARCHIVE_LEAD:-60}" --grace "${PMARCHIVE_GRACE:-120}" --families "${PMARCHIVE_FAMILIES:-5m,15m,1h,4h,daily}"
