#!/usr/bin/env bash
# Throughput of pm-stream (capture) and pm-rebuild (reconstruction + hash verification), with peers
# run in the same script for scale. Loopback and DERIVED data only: this is NOT a live measurement.
#
#   scripts/bench_stream.sh [--runs N] [--rebuild-frames N] [--capture-frames N] [--no-capture]
#                           [--base-bin PATH]
#       --runs N             interleaved runs of each rebuild command (default 5); medians are printed
#       --rebuild-frames N   frame lines of the rebuild input (default 200000)
#       --capture-frames N   frames of the capture part (default 200000)
#       --no-capture         skip the capture part (rebuild only)
#       --base-bin PATH      also run another pm-rebuild build (e.g. of the previous commit) with rows,
#                            interleaved, and print its medians, its rows sha256 and the speed-up (A/B)
#
# 1. Capture: examples/ws_replay_server.rs (a test-only helper, built here) replays the recorded
#    book + 15 price_change messages of tests/fixtures/polymarket/ws_market_book_then_price_changes_trimmed.json
#    in a loop, CAPTURE_FRAMES frames as fast as possible, into `pm-stream --max-frames N > raw.jsonl`.
# 2. Rebuild (issue 14 §2; TARGET: pm-rebuild with rows and hash verification >= 5x faster than
#    `jq -c .`): scripts/gen_ws_bench.py writes REBUILD_FRAMES DERIVED frame lines of one market whose
#    two books keep 60-100 levels (both sides together, the size of the real captures' books),
#    every hash the venue's, with trades, refreshes without tick_size/last_trade_price and
#    same-timestamp bursts. `jq -c .`, pm-rebuild (rows; default --threads = the cores + 1: on 2
#    cores the rebuilding, the hashing and the row thread, each with its own copy of the books),
#    pm-rebuild --threads 2 (rows; the rebuilding thread hashes) and pm-rebuild --no-rows (default
#    --threads: a hashing thread beside the rebuilding one) run RUNS times
#    each, interleaved (jq, rows, rows --threads 2, no-rows, jq, ...), every output to /dev/null
#    as jq's (the disk is not what is measured); the medians of wall
#    and user-CPU seconds are printed with the ratios against jq and the TARGET beside them, the
#    load average after every run, and `uptime` before and after. The wall ratio needs free cores
#    (pm-rebuild runs two or three threads, jq one): on a loaded machine it understates pm-rebuild, the
#    user-CPU ratio less so. One more, untimed run writes the rows to a file for their sha256 (equal
#    across builds and thread counts = rows byte-identical) and the summary. Set
#    BENCH_INPUT=FILE to reuse a generated input (else it is generated into TMPDIR for the run).
#    The machine may be shared: quote the load printed with the numbers.
set -euo pipefail

RUNS=5
RN=200000
N=200000
CAPTURE=1
BASE=
while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --rebuild-frames) RN=$2; shift 2 ;;
    --capture-frames) N=$2; shift 2 ;;
    --no-capture) CAPTURE=0; shift ;;
    --base-bin) BASE=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "bench_stream.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $RUNS in '' | *[!0-9]* | 0) echo "bench_stream.sh: --runs: not a positive number: $RUNS" >&2; exit 2 ;; esac
TARGET=5
if [ -n "$BASE" ] && [ ! -x "$BASE" ]; then echo "bench_stream.sh: --base-bin: not an executable: $BASE" >&2; exit 2; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ "$CAPTURE" = 1 ]; then
    cargo build --release --quiet --bin pm-stream --bin pm-rebuild --example ws_replay_server
else
    cargo build --release --quiet --bin pm-rebuild
fi
BIN=$ROOT/target/release
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench_stream.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
TOKEN=76670567130917723816490572615540605537878462672464291990940067659127658071111

now() { date +%s.%N; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Runs a command with stdout to $1; prints "wall user" seconds.
timed() {
    local out=$1
    shift
    local TIMEFORMAT='%R %U'
    { time "$@" > "$out" 2> /dev/null; } 2>&1 | tail -n 1
}

echo "machine: $(nproc) cores; $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') release build"
echo "uptime before: $(uptime)"

# ---- 1. capture ----
capture() {
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
t0=$(now); jq -c . "$TMP/raw.jsonl" > /dev/null; t1=$(now); jq_s=$(secs "$t0" "$t1")
echo "capture  frames: $N sent, $frames archived ($((bytes / 1024 / 1024)) MiB raw JSONL; 24-level recorded book)"
echo "capture  pm-stream (loopback server -> file):   ${cap_s} s  $(rate "$frames" "$cap_s") frames/s"
echo "capture  jq -c . over the raw file:             ${jq_s} s  $(rate "$frames" "$jq_s") lines/s"
echo "capture  ratio pm-stream/jq $(ratio "$jq_s" "$cap_s")x (>1 = faster than jq)"
echo "pm-stream: $(tail -n 1 "$TMP/stream.err")"
}
if [ "$CAPTURE" = 1 ]; then capture; fi

# ---- 2. rebuild on 60-100-level books ----
IN=${BENCH_INPUT:-$TMP/rebuild.jsonl}
if [ ! -s "$IN" ]; then
    python3 scripts/gen_ws_bench.py "$RN" 7 60 100 > "$IN"
fi
lines=$(wc -l < "$IN")
ibytes=$(stat -c %s "$IN")
declare -a jq_w jq_u rb_w rb_u r1_w r1_u rv_w rv_u ba_w ba_u
for r in $(seq "$RUNS"); do
    read -r w u < <(timed /dev/null jq -c . "$IN"); jq_w+=("$w"); jq_u+=("$u")
    read -r w u < <(timed /dev/null "$BIN/pm-rebuild" "$IN"); rb_w+=("$w"); rb_u+=("$u")
    read -r w u < <(timed /dev/null "$BIN/pm-rebuild" --threads 2 "$IN"); r1_w+=("$w"); r1_u+=("$u")
    read -r w u < <(timed /dev/null "$BIN/pm-rebuild" --no-rows "$IN"); rv_w+=("$w"); rv_u+=("$u")
    base=
    if [ -n "$BASE" ]; then
        read -r w u < <(timed /dev/null "$BASE" "$IN"); ba_w+=("$w"); ba_u+=("$u")
        base="  base ${ba_w[-1]} s (user ${ba_u[-1]})"
    fi
    echo "rebuild  run $r: jq ${jq_w[-1]} s (user ${jq_u[-1]})  pm-rebuild ${rb_w[-1]} s (user ${rb_u[-1]})  --threads 2 ${r1_w[-1]} s (user ${r1_u[-1]})  --no-rows ${rv_w[-1]} s (user ${rv_u[-1]})$base  load $(cut -d' ' -f1 /proc/loadavg)"
done
"$BIN/pm-rebuild" --summary "$TMP/summary.json" "$IN" > "$TMP/rows.jsonl" 2> /dev/null || true
"$BIN/pm-rebuild" --threads 2 --summary "$TMP/summary1.json" "$IN" > "$TMP/rows1.jsonl" 2> /dev/null || true
mjw=$(median "${jq_w[@]}"); mju=$(median "${jq_u[@]}")
mrw=$(median "${rb_w[@]}"); mru=$(median "${rb_u[@]}")
m1w=$(median "${r1_w[@]}"); m1u=$(median "${r1_u[@]}")
mvw=$(median "${rv_w[@]}"); mvu=$(median "${rv_u[@]}")
# "met" / "NOT met" for a ratio against the target.
verdict() { awk -v r="$1" -v t="$TARGET" 'BEGIN { print (r >= t) ? "met" : "NOT met" }'; }
rw=$(ratio "$mjw" "$mrw"); ru=$(ratio "$mju" "$mru")
echo "rebuild  input: $lines DERIVED frame lines, $((ibytes / 1024 / 1024)) MiB, books of 60-100 levels (scripts/gen_ws_bench.py)"
echo "rebuild  medians of $RUNS interleaved runs (wall / user CPU seconds, user CPU of all threads):"
echo "rebuild    jq -c .                    $mjw / $mju  ($(rate "$lines" "$mjw") lines/s)"
echo "rebuild    pm-rebuild (rows + hashes) $mrw / $mru  ($(rate "$lines" "$mrw") frames/s)"
echo "rebuild    pm-rebuild --threads 2 (rows)  $m1w / $m1u  ($(rate "$lines" "$m1w") frames/s)"
echo "rebuild    pm-rebuild --no-rows       $mvw / $mvu  ($(rate "$lines" "$mvw") frames/s)"
echo "rebuild  ratio pm-rebuild/jq with rows: wall ${rw}x (TARGET >= ${TARGET}x: $(verdict "$rw")), user CPU ${ru}x"
echo "rebuild  ratio pm-rebuild --threads 2/jq with rows: wall $(ratio "$mjw" "$m1w")x, user CPU $(ratio "$mju" "$m1u")x"
echo "rebuild  ratio pm-rebuild/jq --no-rows: wall $(ratio "$mjw" "$mvw")x, user CPU $(ratio "$mju" "$mvu")x"
echo "rebuild  verification: $(jq -c '{hash_checks, hash_checks_matched, hash_checks_mismatched, hash_checks_unverifiable, verified_rate, rows}' "$TMP/summary.json")"
echo "rebuild  rows sha256: $(sha256sum < "$TMP/rows.jsonl" | cut -d' ' -f1) (--threads 2: $(sha256sum < "$TMP/rows1.jsonl" | cut -d' ' -f1); summaries $(cmp -s "$TMP/summary.json" "$TMP/summary1.json" && echo equal || echo DIFFER))"
if [ -n "$BASE" ]; then
    mbw=$(median "${ba_w[@]}"); mbu=$(median "${ba_u[@]}")
    "$BASE" "$IN" > "$TMP/base_rows.jsonl" 2> /dev/null || true
    echo "rebuild  base $BASE: $mbw / $mbu (wall / user CPU s, medians); ratio base/pm-rebuild: wall $(ratio "$mbw" "$mrw")x, user CPU $(ratio "$mbu" "$mru")x"
    echo "rebuild  base rows sha256: $(sha256sum < "$TMP/base_rows.jsonl" | cut -d' ' -f1)"
fi
echo "uptime after: $(uptime)"
