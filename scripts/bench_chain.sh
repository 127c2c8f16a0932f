#!/usr/bin/env bash
# bench_chain.sh — resource use of the collection chain (pm-books | jsonl-rotate) at 1 Hz, measured
# against the LOOPBACK venue (recorded responses on 127.0.0.1; not the live venue: real replies are
# slower and their books differ in size).
#
# Prints, for 8 tokens and for 500 tokens polled every second for SECS seconds: peak RSS of each stage,
# CPU seconds per hour of collection (extrapolated from the measured run), raw and gzip bytes per hour,
# the compression ratio of the raw stream, and gzip -6 on the same raw stream as a peer. The same
# pm-books output also goes (tee, a FIFO) to a second jsonl-rotate writing the format before
# 2026-12-01 (--member-per-flush --level 6: one gzip member per 5 s flush); both flush every 5 s on the real clock, so the
# size ratio "older / current" (target >= 1.6x, issue 14) is measured at the same durability, in
# the same run. `uptime` is printed before and after (CPU figures are only comparable when idle).
#
# Usage: scripts/bench_chain.sh [SECS]      (default 60)
# Needs: cargo, /usr/bin/time, gzip.
set -euo pipefail
secs="${1:-60}"
case "$secs" in ''|*[!0-9]*) echo "bench_chain.sh: SECS must be a whole number" >&2; exit 2 ;; esac
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
cargo build --release --quiet --bins --example loopback_venue
bin="$repo/target/release"
work="$(mktemp -d)"; trap 'kill "${venue_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin/examples/loopback_venue" > "$work/url" & venue_pid=$!
for _ in $(seq 50); do [ -s "$work/url" ] && break; sleep 0.1; done
url="$(cat "$work/url")"

# Market records from the venue: 4 markets (8 tokens) and 250 markets (500 tokens).
"$bin/pm-markets" --once --gamma-url "$url" --families 5m,15m,1h,4h --ahead 0 > "$work/m8.jsonl" 2>/dev/null
"$bin/pm-markets" --once --gamma-url "$url" --families 5m --ahead 249 > "$work/m500.jsonl" 2>/dev/null

run_case() { # run_case NAME RECORDS
  local name="$1" recs="$2" root="$work/root-$1"
  local tokens; tokens=$(( $(wc -l < "$recs") * 2 ))
  mkfifo "$work/$name.fifo"
  /usr/bin/time -f '%M %U %S' -o "$work/$name.rotate-old.time" \
    "$bin/jsonl-rotate" --root "$root-old" --stream books --member-per-flush --level 6 < "$work/$name.fifo" > /dev/null 2>&1 &
  local old_pid=$!
  /usr/bin/time -f '%M %U %S' -o "$work/$name.books.time" \
    "$bin/pm-books" --clob-url "$url" --interval 1 --lead 100000 --grace 100000 --duration "$secs" < "$recs" 2> "$work/$name.books.err" \
  | tee "$work/$name.fifo" \
  | /usr/bin/time -f '%M %U %S' -o "$work/$name.rotate.time" \
    "$bin/jsonl-rotate" --root "$root" --stream books > "$work/$name.sealed"
  wait "$old_pid"
  local gz raw old
  gz=$(find "$root" -name '*.jsonl.gz' -exec cat {} + | wc -c)
  old=$(find "$root-old" -name '*.jsonl.gz' -exec cat {} + | wc -c)
  cmp <(find "$root" -name '*.jsonl.gz' -exec zcat {} +) <(find "$root-old" -name '*.jsonl.gz' -exec zcat {} +) \
    || { echo "bench_chain.sh: the two formats hold different lines" >&2; exit 1; }
  raw=$(find "$root" -name '*.jsonl.gz' -exec zcat {} + | wc -c)
  local peer; peer=$(find "$root" -name '*.jsonl.gz' -exec zcat {} + | gzip -6 | wc -c)
  read -r b_rss b_u b_s < "$work/$name.books.time"
  read -r r_rss r_u r_s < "$work/$name.rotate.time"
  read -r o_rss o_u o_s < "$work/$name.rotate-old.time"
  awk -v n="$name" -v tok="$tokens" -v s="$secs" -v brss="$b_rss" -v bu="$b_u" -v bs="$b_s" \
      -v rrss="$r_rss" -v ru="$r_u" -v rs="$r_s" -v orss="$o_rss" -v ou="$o_u" -v os="$o_s" \
      -v gz="$gz" -v old="$old" -v raw="$raw" -v peer="$peer" 'BEGIN {
    h = 3600 / s
    printf "%-10s tokens=%d run=%ds\n", n, tok, s
    printf "  pm-books     peak RSS %6.1f MiB   CPU %7.1f s/hour\n", brss/1024, (bu+bs)*h
    printf "  jsonl-rotate peak RSS %6.1f MiB   CPU %7.1f s/hour\n", rrss/1024, (ru+rs)*h
    printf "  jsonl-rotate --member-per-flush (older format) peak RSS %6.1f MiB   CPU %7.1f s/hour\n", orss/1024, (ou+os)*h
    printf "  raw %8.1f MiB/hour   gzip %7.1f MiB/hour (%.1f GiB/day)   compression ratio %.1fx (gzip -6 peer: %.1fx)\n",
      raw*h/1048576, gz*h/1048576, gz*h*24/1073741824, (gz>0?raw/gz:0), (peer>0?raw/peer:0)
    printf "  older format %7.1f MiB/hour, compression %.1fx; size older / current = %.2fx (target >= 1.60x)   current / gzip -6 = %.3f\n",
      old*h/1048576, (old>0?raw/old:0), (gz>0?old/gz:0), (peer>0?gz/peer:0)
  }'
  tail -n 1 "$work/$name.books.err" | sed 's/^/  /'
}
echo "bench_chain.sh: LOOPBACK venue at $url (recorded responses; not live), ${secs}s per case, $(nproc) cores"
echo "load before: $(uptime)"
run_case 8-tokens "$work/m8.jsonl"
run_case 500-tokens "$work/m500.jsonl"
echo "load after:  $(uptime)"
