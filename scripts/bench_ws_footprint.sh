#!/usr/bin/env bash
# Footprint of pm-stream over a multi-window run against the MODELLED loopback venue
# (examples/ws_replay_server.rs --model = tests/common/ws.rs `Model`; 127.0.0.1 only).
# Loopback: these numbers are NOT live measurements. The event rate is an assumption (an argument),
# not the venue's rate.
#
#   scripts/bench_ws_footprint.sh [WINDOWS] [WINDOW_SECS] [EVENTS_PER_SEC]   (default 4 30 50)
#
# WINDOWS back-to-back markets of WINDOW_SECS each (2 tokens each, --lead 2 --grace 2, so windows
# overlap at the roll-over and tokens are added and removed on the open connection) are fed to
# `pm-stream --no-rest`; the modelled venue streams EVENTS_PER_SEC events per connection. pm-stream's
# output goes to a file and, in the same run, through jsonl-rotate (the archive's gzip files).
# Prints: wall time, CPU-s and CPU-s per hour, max RSS, raw bytes/h, archived gzip bytes/h, events by
# type (from pm-stream's stats lines), pm-rebuild's verification counts over the capture, and a peer
# for scale (gzip -6 over the same raw file, CPU-s).
set -euo pipefail

WINDOWS=${1:-4}
WINDOW_SECS=${2:-30}
RATE=${3:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --release --quiet --bin pm-stream --bin pm-rebuild --bin jsonl-rotate --example ws_replay_server
BIN=$ROOT/target/release
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench_ws_footprint.XXXXXX")
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2> /dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

"$BIN/examples/ws_replay_server" --model "$TMP/port" "$RATE" 7 2> "$TMP/server.err" &
SERVER=$!
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.05; done
PORT=$(cat "$TMP/port")

# Market records (pmarchive.market/1, DERIVED test records): window k starts at t0 + k*WINDOW_SECS.
t0=$(( $(date +%s) + 3 ))
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%S.000000Z; }
for k in $(seq 0 $((WINDOWS - 1))); do
    s=$((t0 + k * WINDOW_SECS)); e=$((s + WINDOW_SECS))
    jq -nc --arg c "$(printf '0x%064d' "$k")" --arg s "$(iso "$s")" --arg e "$(iso "$e")" --arg up "$((7000 + 2 * k))" \
        --arg down "$((7001 + 2 * k))" --arg slug "bench-window-$k" '{record:"market", schema:"pmarchive.market/1",
        venue:"polymarket", family:"5m", slug:$slug, question:null, market_id:null, condition_id:$c, question_id:null,
        tokens:[{token_id:$up, outcome:"Up"},{token_id:$down, outcome:"Down"}], window_start_utc:$s, window_end_utc:$e,
        listed_at_utc:null, active:true, closed:false, archived:false, accepting_orders:true, enable_order_book:true,
        status:"open", tick_size:"0.01", min_order_size:"5", neg_risk:false, resolution_source:null,
        source_url:"bench (derived)", fetched_at_utc:$s, change:"snapshot"}'
done > "$TMP/markets.jsonl"

# pm-stream ends by itself once stdin has ended and the last window's grace is over.
/usr/bin/time -f '%e %U %S %M' -o "$TMP/time" \
    "$BIN/pm-stream" --ws-url "ws://127.0.0.1:$PORT/ws/market" --no-rest --lead 2 --grace 2 --stats-secs 10 \
    < "$TMP/markets.jsonl" 2> "$TMP/stream.err" \
    | tee "$TMP/raw.jsonl" \
    | "$BIN/jsonl-rotate" --root "$TMP/archive" --stream ws_market --run-id bench --host loopback > "$TMP/sealed.jsonl"
read -r wall user sys rss_kb < "$TMP/time"
raw=$(stat -c %s "$TMP/raw.jsonl")
archived=$(find "$TMP/archive" -name '*.jsonl.gz' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
t_a=$(date +%s.%N); gzip -6 -c "$TMP/raw.jsonl" | wc -c > "$TMP/gzip6"; t_b=$(date +%s.%N)
per_h() { awk -v x="$1" -v w="$wall" 'BEGIN { printf "%.0f", x / w * 3600 }'; }
"$BIN/pm-rebuild" --no-rows --summary "$TMP/summary.json" "$TMP/raw.jsonl" 2> "$TMP/rebuild.err" || true

echo "LOOPBACK run (modelled venue, not live): $WINDOWS windows x ${WINDOW_SECS}s, $RATE events/s per connection"
echo "pm-stream wall ${wall} s, CPU ${user} s user + ${sys} s sys, max RSS $((rss_kb / 1024)) MiB"
echo "CPU-s per hour:      $(awk -v u="$user" -v s="$sys" -v w="$wall" 'BEGIN { printf "%.1f", (u + s) / w * 3600 }')"
echo "raw bytes per hour:  $(per_h "$raw") ($raw bytes in the run)"
echo "archived gzip bytes per hour (jsonl-rotate): $(per_h "$archived") ($archived bytes)"
echo "peer: gzip -6 over the raw file: $(cat "$TMP/gzip6") bytes, $(awk -v a="$t_a" -v b="$t_b" 'BEGIN { printf "%.3f", b - a }') s"
echo "frames: $(grep -c '"event":"frame"' "$TMP/raw.jsonl"); events by type (stats lines): $(jq -sc \
    '[.[] | select(.kind == "ws" and .ctx.event == "stats") | .ctx.ws_event_types | to_entries[]]
     | group_by(.key) | map({(.[0].key): (map(.value) | add)}) | add' "$TMP/raw.jsonl")"
echo "connections: $(grep -c '"event":"open"' "$TMP/raw.jsonl") opened; subscribe frames $(grep -c '"event":"subscribe"' "$TMP/raw.jsonl"), unsubscribe frames $(grep -c '"event":"unsubscribe"' "$TMP/raw.jsonl")"
echo "pm-rebuild: $(jq -c '{hashes_matched, hashes_mismatched, ws_book_hash_matched, ws_book_hash_mismatched,
    verify_rate: (if (.hashes_matched + .hashes_mismatched) > 0 then (.hashes_matched / (.hashes_matched + .hashes_mismatched) * 1000 | round / 1000) else null end)}' "$TMP/summary.json")"
echo "pm-stream: $(tail -n 1 "$TMP/stream.err")"
