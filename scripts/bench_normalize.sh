#!/usr/bin/env bash
# Benchmark: pm-normalize (release build) against bare zcat and an equivalent jq filter, on the same
# generated input, in one run. Not a test: it prints figures and ratios (each with its target beside
# it, issue 14) and the machine's load; it asserts nothing.
#
# Input (DERIVED, synthetic): gzip JSONL of pmarchive.raw/1 envelopes shaped like pm-books' /books
# lines — each body holds 2 books with 20–60 levels a side, prices/sizes as decimal strings, bids
# ascending / asks descending as the venue sends them (facts §4.1), and valid SHA-1 hashes (§6.3).
#
# Every timed command runs N times (--runs, default 5), interleaved A/B: each round runs zcat,
# pm-normalize, pm-normalize --threads 1, … and jq once, then the next round; the MEDIAN wall time and
# CPU time (user+sys) of each are printed. "one core" rows run under `taskset -c 0`. The output of
# each pm-normalize variant is hashed (sha256) in the same run: figures compare only the same bytes.
# The machine's load (`uptime`) and its busiest other processes are printed before and after: on a
# shared machine the ratios are only as good as that load.
#
# Usage: scripts/bench_normalize.sh [--runs N] [--jq-runs N] [--mb MB] [--dir DIR] [--baseline BIN]
#   --runs N          timed rounds (default 5)
#   --jq-runs N       rounds that also run jq (default: all of them; jq takes ~13 s a round)
#   --mb MB           raw MB to generate (default 200); --dir DIR keeps the data between runs
#   --baseline BIN    also time another pm-normalize binary (e.g. built from an older commit)
#                     and compare its output bytes
#   (the environment variables BENCH_RUNS, BENCH_JQ_RUNS, BENCH_MB, BENCH_DIR, BENCH_BASELINE
#   set the same defaults)
# Targets (issue 14): pm-normalize <= 0.5x the time of bare zcat (using both cores), >= 10x jq's
# throughput, and --threads 1 no slower than the previous build (--baseline) on one core.
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${BENCH_MB:-200}
DIR=${BENCH_DIR:-}
RUNS=${BENCH_RUNS:-5}
JQ_RUNS=${BENCH_JQ_RUNS:-}
BASE=${BENCH_BASELINE:-}
usage() { sed -n '/^# Usage:/,/^# Targets/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=${2:?--runs N}; shift 2 ;;
    --jq-runs) JQ_RUNS=${2:?--jq-runs N}; shift 2 ;;
    --mb) MB=${2:?--mb MB}; shift 2 ;;
    --dir) DIR=${2:?--dir DIR}; shift 2 ;;
    --baseline) BASE=${2:?--baseline BIN}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "bench_normalize: unknown argument '$1'" >&2; usage ;;
  esac
done
for n in "$RUNS" "${JQ_RUNS:-1}" "$MB"; do
  case $n in ''|*[!0-9]*|0) echo "bench_normalize: --runs/--jq-runs/--mb take a positive number, got '$n'" >&2; exit 2 ;; esac
done
JQ_RUNS=${JQ_RUNS:-$RUNS}
[ -z "$BASE" ] || [ -x "$BASE" ] || { echo "bench_normalize: --baseline $BASE is not an executable" >&2; exit 2; }
[ -n "$DIR" ] || DIR=$(mktemp -d /tmp/pmarchive-bench-normalize.XXXXXX)
mkdir -p "$DIR"
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
RAW_LINES=$(zcat "$RAW" | wc -l)
echo "input: $RAW ($(stat -c %s "$RAW") bytes gzip, $RAW_BYTES bytes raw JSON, $RAW_LINES lines)"

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

ONE=""
command -v taskset >/dev/null && ONE="taskset -c 0"
RAW_MB=$(echo "scale=1; $RAW_BYTES / 1000000" | bc -l)
rm -f "$DIR"/t.*.txt

# t NAME CMD : one timed run of the shell command CMD (its output discarded inside CMD); appends
# "wall user sys" to $DIR/t.NAME.txt.
t() {
  local name=$1 TIMEFORMAT='%R %U %S'
  { time sh -c "$2" ; } 2>> "$DIR/t.$name.txt"
}
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
wall() { awk '{print $1}' "$DIR/t.$1.txt" | med; }
cpu() { awk '{print $2+$3}' "$DIR/t.$1.txt" | med; }

# The busiest processes other than this benchmark (what else ran on the machine).
others() { ps -eo pcpu=,etime=,comm= --sort=-pcpu | awk '$3 != "ps" && $3 !~ /bench_normal/ && n++ < 5 { print "    " $0 }'; }
echo "load before: $(uptime)"
echo "  busiest processes (%CPU since start, elapsed, name):"
others
echo "cores: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "timing: $RUNS rounds (jq: $JQ_RUNS), interleaved; medians"
for r in $(seq "$RUNS"); do
  echo "round $r/$RUNS …" >&2
  t zcat "zcat '$RAW' > /dev/null"
  t norm "'$BIN' '$RAW' > /dev/null 2>&1"
  t norm1 "'$BIN' --threads 1 '$RAW' > /dev/null 2>&1"
  [ -n "$BASE" ] && t base "'$BASE' '$RAW' > /dev/null 2>&1"
  if [ -n "$ONE" ]; then
    t zcat_1c "$ONE zcat '$RAW' > /dev/null"
    t norm_1c "$ONE '$BIN' '$RAW' > /dev/null 2>&1"
    t norm1_1c "$ONE '$BIN' --threads 1 '$RAW' > /dev/null 2>&1"
    [ -n "$BASE" ] && t base_1c "$ONE '$BASE' '$RAW' > /dev/null 2>&1"
  fi
  if [ "$r" -le "$JQ_RUNS" ]; then
    echo "  jq …" >&2
    t jq "zcat '$RAW' | jq -c '$JQ_FILTER' > /dev/null"
  fi
done
echo "load after:  $(uptime)"
echo "  busiest processes (%CPU since start, elapsed, name):"
others

ROWS=$("$BIN" "$RAW" 2>/dev/null | wc -l)
SHA_N=$("$BIN" "$RAW" 2>/dev/null | sha256sum | cut -c1-16)
SHA_1=$("$BIN" --threads 1 "$RAW" 2>/dev/null | sha256sum | cut -c1-16)
printf '\nraw JSON: %s MB in %s lines, pm-normalize rows: %s\n' "$RAW_MB" "$RAW_LINES" "$ROWS"
printf '%-40s %8s %8s %9s\n' "median of runs" "wall s" "CPU s" "MB/s"
row() { printf '%-40s %8.3f %8.3f %9.1f\n' "$1" "$(wall "$2")" "$(cpu "$2")" "$(echo "$RAW_BYTES / 1000000 / $(wall "$2")" | bc -l)"; }
row "zcat > /dev/null" zcat
row "pm-normalize (default threads: $(( $(nproc) > 1 ? $(nproc) + 1 : 1 )) on $(nproc) cores)" norm
row "pm-normalize --threads 1" norm1
[ -n "$BASE" ] && row "baseline ($BASE)" base
if [ -n "$ONE" ]; then
  row "one core: zcat" zcat_1c
  row "one core: pm-normalize (default)" norm_1c
  row "one core: pm-normalize --threads 1" norm1_1c
  [ -n "$BASE" ] && row "one core: baseline" base_1c
fi
row "zcat | jq -c (equivalent)" jq
ratio() { echo "$1 / $2" | bc -l; }
echo
# met VALUE OP TARGET: "met" or "NOT met".
met() { if [ "$(echo "$1 $2 $3" | bc -l)" = 1 ]; then echo "met"; else echo "NOT met"; fi; }
R_ZCAT=$(ratio "$(wall norm)" "$(wall zcat)")
R_JQ=$(ratio "$(wall jq)" "$(wall norm)")
printf 'pm-normalize vs zcat:             %.2fx zcat time      (target <= 0.50x: %s)\n' "$R_ZCAT" "$(met "$R_ZCAT" '<=' 0.5)"
printf 'pm-normalize vs jq:               %.1fx faster          (target >= 10x: %s)\n' "$R_JQ" "$(met "$R_JQ" '>=' 10)"
printf 'pm-normalize cores used:          %.2f (CPU s / wall s)\n' "$(ratio "$(cpu norm)" "$(wall norm)")"
printf 'pm-normalize CPU vs zcat CPU:     %.2fx (the work done, whatever the load)\n' "$(ratio "$(cpu norm)" "$(cpu zcat)")"
printf 'pm-normalize --threads 1 vs zcat: %.2fx zcat time\n' "$(ratio "$(wall norm1)" "$(wall zcat)")"
if [ -n "$BASE" ]; then
  SHA_B=$("$BASE" "$RAW" 2>/dev/null | sha256sum | cut -c1-16)
  printf 'baseline vs zcat:                 %.2fx zcat time\n' "$(ratio "$(wall base)" "$(wall zcat)")"
  if [ -n "$ONE" ]; then
    R_BASE=$(ratio "$(wall norm1_1c)" "$(wall base_1c)")
    printf 'one core: --threads 1 vs baseline: %.2fx its time     (target <= 1.00x: %s)\n' "$R_BASE" "$(met "$R_BASE" '<=' 1)"
  fi
fi
if [ -n "$ONE" ]; then
  printf 'one core: default vs --threads 1:  %.2fx its time\n' "$(ratio "$(wall norm_1c)" "$(wall norm1_1c)")"
fi
echo "output sha256 (first 16 hex): default $SHA_N, --threads 1 $SHA_1${BASE:+, baseline $SHA_B}"
if [ "$SHA_N" = "$SHA_1" ] && { [ -z "$BASE" ] || [ "$SHA_N" = "$SHA_B" ]; }; then echo "outputs: byte-identical"; else echo "outputs: DIFFERENT"; fi
echo "(jq does less work: no SHA-1 hash recomputation, no flags, float arithmetic.)"
echo "data kept in $DIR (delete it when done)"
