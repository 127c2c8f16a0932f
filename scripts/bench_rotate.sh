#!/usr/bin/env bash
# Benchmark: jsonl-rotate vs `gzip -6 > file` on the same input, in the same run.
#
# Generates ~200 MB (BENCH_MB) of synthetic envelope-like JSONL (pmarchive.raw/1-shaped lines with a
# /books-like body: 8 fixed tokens whose books change a few sizes per poll; synthetic test data, not
# venue replies), warms the page cache, then times both writers reading it from a file. Prints MB/s
# of input (wall clock), CPU seconds (all threads), the throughput ratios and both compression ratios.
# Wall-clock numbers are only meaningful on an otherwise idle machine; MB per CPU second less so.
# No network.
#
# Usage: scripts/bench_rotate.sh            (builds the release binary if needed)
#        BIN=path/to/jsonl-rotate BENCH_MB=200 WORK=/tmp/dir scripts/bench_rotate.sh
set -euo pipefail

cd "$(dirname "$0")/.."
MB=${BENCH_MB:-200}
BIN=${BIN:-target/release/jsonl-rotate}
if [[ ! -x $BIN ]]; then
    cargo build --release --bin jsonl-rotate >&2
fi
WORK=${WORK:-$(mktemp -d /tmp/bench-rotate.XXXXXX)}
mkdir -p "$WORK"
IN=$WORK/input.jsonl

if [[ ! -s $IN ]]; then # reused when WORK already holds one
echo "generating ~${MB} MB of envelope-like JSONL in $IN ..." >&2
awk -v target=$((MB * 1000000)) 'BEGIN {
    # 8 fixed tokens (as when polling the same markets), books that change a few levels per poll,
    # a fresh 40-hex hash per book, our own timestamps advancing.
    srand(42); bytes = 0; seq = 0
    for (t = 0; t < 8; t++) {
        asset[t] = sprintf("%d%d%d", 1e9 + int(rand() * 9e9), 1e9 + int(rand() * 9e9), 1e9 + int(rand() * 9e9))
        market[t] = sprintf("0x%08x%08x%08x%08x", rand() * 4e9, rand() * 4e9, rand() * 4e9, rand() * 4e9)
        for (k = 0; k < 12; k++) { bsz[t, k] = sprintf("%.2f", rand() * 5000); asz[t, k] = sprintf("%.2f", rand() * 5000) }
    }
    while (bytes < target) {
        body = ""
        for (b = 0; b < 4; b++) {
            t = (seq * 4 + b) % 8
            for (c = 0; c < 3; c++) { k = int(rand() * 12); bsz[t, k] = sprintf("%.2f", rand() * 5000); asz[t, int(rand() * 12)] = sprintf("%.2f", rand() * 5000) }
            bids = ""; asks = ""
            for (k = 0; k < 12; k++) {
                bids = bids (k ? "," : "") sprintf("{\"price\":\"0.%02d\",\"size\":\"%s\"}", 38 + k, bsz[t, k])
                asks = asks (k ? "," : "") sprintf("{\"price\":\"0.%02d\",\"size\":\"%s\"}", 62 - k, asz[t, k])
            }
            hash = sprintf("%08x%08x%08x%08x%08x", rand() * 4e9, rand() * 4e9, rand() * 4e9, rand() * 4e9, rand() * 4e9)
            body = body (b ? "," : "") sprintf("{\"market\":\"%s\",\"asset_id\":\"%s\",\"timestamp\":\"%d\",\"hash\":\"%s\",\"bids\":[%s],\"asks\":[%s],\"min_order_size\":\"5\",\"tick_size\":\"0.01\",\"neg_risk\":false,\"last_trade_price\":\"0.%02d\"}", market[t], asset[t], 1790000000000 + seq * 1000, hash, bids, asks, 40 + int(rand() * 20))
        }
        s = seq % 60; us = int(rand() * 1e6)
        line = sprintf("{\"schema\":\"pmarchive.raw/1\",\"venue\":\"polymarket\",\"tool\":\"pm-books\",\"collector_version\":\"0.1.0\",\"run_id\":\"20261124T160133Z-4242-beef\",\"host\":\"bench\",\"seq\":%d,\"kind\":\"http\",\"endpoint\":\"books\",\"sent_at_utc\":\"2026-11-24T16:%02d:%02d.%06dZ\",\"collected_at_utc\":\"2026-11-24T16:%02d:%02d.%06dZ\",\"elapsed_ms\":%.3f,\"attempt\":1,\"request\":{\"method\":\"POST\",\"url\":\"https://clob.polymarket.com/books\",\"params\":{}},\"status\":200,\"headers\":{\"content-type\":\"application/json\"},\"body_kind\":\"json\",\"body\":[%s],\"ctx\":{\"slot\":%d}}", seq, int(seq / 60) % 60, s, us, int(seq / 60) % 60, s, us, rand() * 200, body, seq)
        print line
        bytes += length(line) + 1; seq++
    }
}' > "$IN"
fi
SIZE=$(stat -c %s "$IN")
LINES=$(wc -l < "$IN")
cat "$IN" > /dev/null # warm the page cache for both runs

# bash's `time` keyword: wall, user and system seconds of the command (all threads).
TIMEFORMAT='%R %U %S'
rm -rf "$WORK/archive" "$WORK/gzip.gz"
{ time "$BIN" --root "$WORK/archive" --stream bench --run-id bench < "$IN" > "$WORK/sealed.jsonl" 2> "$WORK/rotate.err"; } 2> "$WORK/rotate.time"
{ time gzip -6 < "$IN" > "$WORK/gzip.gz"; } 2> "$WORK/gzip.time"
read -r ROT_WALL ru rs < "$WORK/rotate.time"; ROT_CPU=$(awk -v a="$ru" -v b="$rs" 'BEGIN {print a + b}')
read -r GZ_WALL gu gs < "$WORK/gzip.time"; GZ_CPU=$(awk -v a="$gu" -v b="$gs" 'BEGIN {print a + b}')

ROT_OUT=$(find "$WORK/archive" -name '*.jsonl.gz' -printf '%s\n' | awk '{s += $1} END {print s}')
GZ_OUT=$(stat -c %s "$WORK/gzip.gz")
# Sanity: same content out of both.
cmp <(zcat "$(find "$WORK/archive" -name '*.jsonl.gz' | sort)") <(zcat "$WORK/gzip.gz") >/dev/null || { echo "CONTENT MISMATCH" >&2; exit 1; }

awk -v size="$SIZE" -v lines="$LINES" -v rw="$ROT_WALL" -v rc="$ROT_CPU" -v gw="$GZ_WALL" -v gc="$GZ_CPU" \
    -v ro="$ROT_OUT" -v go="$GZ_OUT" 'BEGIN {
    mb = size / 1e6
    printf "input: %.1f MB, %d lines (%.0f bytes/line), synthetic envelope-like JSONL\n", mb, lines, size / lines
    printf "%-14s %8s %10s %10s %14s %12s\n", "writer", "wall s", "MB/s", "CPU s", "MB per CPU s", "compression"
    printf "%-14s %8.2f %10.1f %10.2f %14.1f %11.2fx\n", "jsonl-rotate", rw, mb / rw, rc, mb / rc, size / ro
    printf "%-14s %8.2f %10.1f %10.2f %14.1f %11.2fx\n", "gzip -6", gw, mb / gw, gc, mb / gc, size / go
    printf "throughput ratio jsonl-rotate / gzip -6: %.2fx (wall), %.2fx (per CPU second)\n", gw / rw, (gc / rc)
    printf "output size ratio jsonl-rotate / gzip -6: %.3f\n", ro / go
}'
echo "flate2 backend: $(cargo tree -e features -i flate2 2>/dev/null | grep -q 'feature "zlib-rs"' && echo zlib-rs || echo miniz_oxide) (of this checkout; BIN may differ)" >&2
echo "work dir: $WORK (delete when done)" >&2
