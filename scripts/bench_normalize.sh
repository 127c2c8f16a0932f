#!/usr/bin/env bash
# Benchmark: pm-normalize (release build) against an equivalent jq filter and bare zcat, on the same
# generated input, in one run. Not a test: it prints figures and ratios, it asserts nothing.
#
# Input (DERIVED, synthetic): gzip JSONL of pmarchive.raw/1 envelopes shaped like pm-books' /books
# lines — each body holds 2 books with 20–60 levels a side, prices/sizes as decimal strings, bids
# ascending / asks descending as the venue sends them (facts §4.1), and valid SHA-1 hashes (§6.3).
#
# Usage: scripts/bench_normalize.sh            (BENCH_MB=200 raw MB by default; BENCH_DIR for the data)
# Targets (from the issue): pm-normalize ≥ 10× jq's throughput and no slower than 2× zcat.
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${BENCH_MB:-200}
DIR=${BENCH_DIR:-$(mktemp -d /tmp/pmarchive-bench-normalize.XXXXXX)}
BIN=target/release/pm-normalize
RAW="$DIR/raw_books.jsonl.gz"

command -v jq >/dev/null || { echo "bench_normalize: jq is required" >&2; exit 2; }
command -v python3 >/dev/null || { echo "bench_normalize: python3 is required (input generator)" >&2; exit 2; }
echo "building $BIN (release)…" >&2
cargo build --release --quiet --bin pm-normalize

if [ ! -s "$RAW" ]; then
  echo "generating ≥ ${MB} MB of raw JSON into $RAW …" >&2
  python3 - "$MB" <<'PY' | gzip -6 > "$RAW"
import hashlib, json, random, sys
target = int(sys.argv[1]) * 1_000_000
rng = random.Random(42)
def book(asset, market, ts):
    mid = rng.randint(20, 80)  # cents
    nb, na = rng.randint(20, 60), rng.randint(20, 60)
    bids = [{"price": f"{p/100:.2f}".rstrip("0").rstrip("."), "size": f"{rng.uniform(5, 50000):.2f}"} for p in range(max(1, mid - nb), mid)]
    asks = [{"price": f"{p/100:.2f}".rstrip("0").rstrip("."), "size": f"{rng.uniform(5, 50000):.2f}"} for p in range(min(99, mid + na), mid, -1)]
    b = {"market": market, "asset_id": asset, "timestamp": str(ts), "hash": "", "bids": bids, "asks": asks,
         "min_order_size": "5", "tick_size": "0.01", "neg_risk": False, "last_trade_price": f"{mid/100:.2f}"}
    b["hash"] = hashlib.sha1(json.dumps(b, separators=(",", ":")).encode()).hexdigest()
    return b
# 64 markets × 2 tokens; 400 distinct bodies reused round-robin with new envelope heads.
markets = [("0x%064x" % rng.getrandbits(256), [str(rng.getrandbits(250)) for _ in range(2)]) for _ in range(64)]
bodies = []
for i in range(400):
    m, toks = markets[i % 64]
    ts = 1786604072222 + i * 997
    bodies.append((toks, json.dumps([book(toks[0], m, ts), book(toks[1], m, ts + 1)], separators=(",", ":"))))
out = sys.stdout
written, seq = 0, 0
while written < target:
    toks, body = bodies[seq % len(bodies)]
    s = 1786604000 + seq // 10
    at = "2026-08-13T%02d:%02d:%02d.%06dZ" % ((s // 3600) % 24, (s // 60) % 60, s % 60, (seq * 7919) % 1_000_000)
    line = ('{"schema":"pmarchive.raw/1","venue":"polymarket","tool":"pm-books","collector_version":"0.1.0",'
            '"run_id":"20260813T000000Z-1-bench","host":"bench","seq":%d,"kind":"http","endpoint":"books",'
            '"sent_at_utc":"%s","collected_at_utc":"%s","elapsed_ms":84.512,"attempt":1,'
            '"request":{"method":"POST","url":"https://clob.polymarket.com/books","params":{},"body":[{"token_id":"%s"},{"token_id":"%s"}]},'
            '"status":200,"headers":{"content-type":"application/json"},"body_kind":"json","body":%s,'
            '"ctx":{"slot":%d,"due_at_utc":"%s","tokens":["%s","%s"]}}\n') % (
            seq, at, at, toks[0], toks[1], body, seq, at[:19] + "Z", toks[0], toks[1])
    out.write(line)
    written += len(line)
    seq += 1
PY
fi

RAW_BYTES=$(zcat "$RAW" | wc -c)
echo "input: $RAW ($(stat -c %s "$RAW") bytes gzip, $RAW_BYTES bytes raw JSON, $(zcat "$RAW" | wc -l) lines)" >&2

now() { date +%s.%N; }
t() { local a b; a=$(now); "$@"; b=$(now); echo "$b - $a" | bc -l; }

JQ_FILTER='select(.kind=="http" and (.endpoint=="books" or .endpoint=="book") and .status==200 and .body_kind=="json")
| . as $e | (.body | if type=="array" then .[] else . end)
| {record:"book", venue:$e.venue, source:$e.endpoint, collected_at_utc:$e.collected_at_utc,
   exchange_ts_ms:(.timestamp|tonumber), market, asset_id, slot:$e.ctx.slot, due_at_utc:$e.ctx.due_at_utc,
   raw_run_id:$e.run_id, raw_seq:$e.seq,
   best_bid_price:.bids[-1].price, best_bid_size:.bids[-1].size, best_ask_price:.asks[-1].price, best_ask_size:.asks[-1].size,
   mid:(if (.bids|length)>0 and (.asks|length)>0 then ((.bids[-1].price|tonumber)+(.asks[-1].price|tonumber))/2 else null end),
   spread:(if (.bids|length)>0 and (.asks|length)>0 then (.asks[-1].price|tonumber)-(.bids[-1].price|tonumber) else null end),
   bid_levels:(.bids|length), ask_levels:(.asks|length),
   bid_depth:([.bids[].size|tonumber]|add), ask_depth:([.asks[].size|tonumber]|add),
   tick_size, min_order_size, neg_risk, last_trade_price, hash,
   bids:(.bids|reverse|.[:10]), asks:(.asks|reverse|.[:10])}'

echo "timing zcat …" >&2
T_ZCAT=$(t sh -c "zcat '$RAW' > /dev/null")
echo "timing pm-normalize …" >&2
T_NORM=$(t sh -c "'$BIN' '$RAW' > /dev/null 2>'$DIR/summary.txt'")
echo "timing jq (zcat | jq -c) …" >&2
T_JQ=$(t sh -c "zcat '$RAW' | jq -c '$JQ_FILTER' > /dev/null")

ROWS=$("$BIN" "$RAW" 2>/dev/null | wc -l)
mbs() { echo "scale=1; $RAW_BYTES / 1000000 / $1" | bc -l; }
printf '\nraw JSON: %.1f MB, pm-normalize rows: %s, cores: %s\n' "$(echo "$RAW_BYTES/1000000" | bc -l)" "$ROWS" "$(nproc)"
printf '%-28s %8.2f s  %8s MB/s\n' "zcat > /dev/null" "$T_ZCAT" "$(mbs "$T_ZCAT")"
printf '%-28s %8.2f s  %8s MB/s\n' "pm-normalize (release)" "$T_NORM" "$(mbs "$T_NORM")"
printf '%-28s %8.2f s  %8s MB/s\n' "zcat | jq -c (equivalent)" "$T_JQ" "$(mbs "$T_JQ")"
printf 'pm-normalize vs jq:   %.1fx faster   (target >= 10x)\n' "$(echo "$T_JQ / $T_NORM" | bc -l)"
printf 'pm-normalize vs zcat: %.2fx zcat time (target <= 2x)\n' "$(echo "$T_NORM / $T_ZCAT" | bc -l)"
echo "(jq does less work: no SHA-1 hash recomputation, no flags, float arithmetic.)"
echo "data kept in $DIR (delete it when done)"
