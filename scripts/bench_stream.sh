#!/usr/bin/env bash
# Throughput of pm-stream (capture) and pm-rebuild (reconstruction + hash verification), with peers
# run in the same script for scale. Loopback only (127.0.0.1): this is NOT a live measurement.
#
#   scripts/bench_stream.sh [FRAMES]        (default 1000000)
#
# Capture: examples/ws_replay_server.rs (a test-only helper, built here) replays the recorded
# book + 15 price_change messages of tests/fixtures/polymarket/ws_market_book_then_price_changes_trimmed.json
# in a loop, FRAMES frames as fast as possible, into `pm-stream --max-frames FRAMES > raw.jsonl`.
# Reconstruction: pm-rebuild over that raw file (every price_change hash verified), against
# `wc -l` and `jq -c .` over the same file.
set -euo pipefail

N=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --release --quiet --bin pm-stream --bin pm-rebuild --example ws_replay_server
BIN=$ROOT/target/release
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench_stream.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
TOKEN=76670567130917723816490572615540605537878462672464291990940067659127658071111

now() { date +%s.%N; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

"$BIN/examples/ws_replay_server" "$TMP/port" "$N" 2> "$TMP/server.err" &
SERVER=$!
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.05; done
PORT=$(cat "$TMP/port")

t0=$(now)
"$BIN/pm-stream" --token "$TOKEN" --ws-url "ws://127.0.0.1:$PORT/ws/market" --no-rest \
    --max-frames "$N" --asset-silence-secs 0 < /dev/null > "$TMP/raw.jsonl" 2> "$TMP/stream.err"
t1=$(now)
wait "$SERVER" || true
cap_s=$(secs "$t0" "$t1")
frames=$(grep -c '"event":"frame"' "$TMP/raw.jsonl")
bytes=$(stat -c %s "$TMP/raw.jsonl")

t0=$(now); wc -l < "$TMP/raw.jsonl" > /dev/null; t1=$(now); wc_s=$(secs "$t0" "$t1")
t0=$(now); jq -c . "$TMP/raw.jsonl" > /dev/null; t1=$(now); jq_s=$(secs "$t0" "$t1")
t0=$(now)
"$BIN/pm-rebuild" --summary "$TMP/summary.json" "$TMP/raw.jsonl" > "$TMP/rows.jsonl" 2> "$TMP/rebuild.err" || true
t1=$(now); rb_s=$(secs "$t0" "$t1")
t0=$(now)
"$BIN/pm-rebuild" --no-rows "$TMP/raw.jsonl" 2> /dev/null || true
t1=$(now); rbv_s=$(secs "$t0" "$t1")

echo "frames: $N sent, $frames archived ($((bytes / 1024 / 1024)) MiB raw JSONL)"
echo "capture  pm-stream (loopback server -> file):   ${cap_s} s  $(rate "$frames" "$cap_s") frames/s"
echo "peer     wc -l over the raw file:               ${wc_s} s  $(rate "$frames" "$wc_s") lines/s"
echo "peer     jq -c . over the raw file:             ${jq_s} s  $(rate "$frames" "$jq_s") lines/s"
echo "rebuild  pm-rebuild (rows to file):             ${rb_s} s  $(rate "$frames" "$rb_s") frames/s"
echo "rebuild  pm-rebuild --no-rows (verify only):    ${rbv_s} s  $(rate "$frames" "$rbv_s") frames/s"
echo "ratios   pm-stream/jq $(awk -v a="$jq_s" -v b="$cap_s" 'BEGIN{printf "%.2f", a/b}')x  pm-rebuild/jq $(awk -v a="$jq_s" -v b="$rb_s" 'BEGIN{printf "%.2f", a/b}')x (>1 = faster than jq)"
echo "verification: $(jq -c '{changes_applied, hashes_matched, hashes_mismatched, ws_books, rows}' "$TMP/summary.json")"
echo "pm-stream: $(tail -n 1 "$TMP/stream.err")"
