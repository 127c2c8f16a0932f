#!/usr/bin/env bash
# CPU of pm-rebuild's row thread ("rebuild-rows": pm-normalize's row writer, src/normalize/engine.rs)
# against another build of pm-rebuild (--baseline), with `jq -c .` run in the same script for
# scale. DERIVED data only (scripts/gen_ws_bench.py): this is NOT a live measurement. Not a test:
# it prints figures and ratios and the machine's load; it asserts nothing.
#
# Usage: scripts/bench_rows.sh --baseline BIN [--runs N] [--frames N] [--dir DIR] [--to-file]
#   --baseline BIN  the pm-rebuild build to compare with (e.g. built from main before a change)
#   --runs N        interleaved rounds (default 5): each runs this build, then the baseline
#   --frames N      frame lines of the input (default 200000: 371 695 rows of 60-100-level books)
#   --dir DIR       keep the input (and the rows of the last run) in DIR between runs
#   --to-file       timed runs write the rows to a file in DIR (the kernel's copy into the page
#                   cache, about a third of a second here, counts on the row thread) instead of
#                   /dev/null
#
# Each round runs `pm-rebuild --threads 1 INPUT > /dev/null` (or the file; the rebuilding and the row
# thread, no hashing thread) under `perf record -e task-clock -c 1000000`: one sample per ms of CPU
# on each thread, so the samples of the thread named rebuild-rows are its CPU ms. Medians are
# printed with the ratio this/baseline (TARGET set for the row writer under issue 14 §2: <= 0.75x, i.e.
# 25 % less). Then one untimed run of each build per depth (default 10, --depth all, --top) writes
# the rows to a file for their sha256: equal = the rows are byte-identical. `jq -c .` runs once on
# the same input (its user CPU s, for scale: the row thread's share of the job). The load
# (`uptime`) is printed before and after: the machine may be shared, CPU ms are less sensitive to
# that than wall time but not immune (cache and frequency).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5
FRAMES=200000
DIR=
BASE=
TO=/dev/null
usage() { sed -n '/^# Usage:/,/^#$/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=${2:?--runs N}; shift 2 ;;
    --frames) FRAMES=${2:?--frames N}; shift 2 ;;
    --dir) DIR=${2:?--dir DIR}; shift 2 ;;
    --baseline) BASE=${2:?--baseline BIN}; shift 2 ;;
    --to-file) TO="file"; shift ;;
    -h|--help) usage ;;
    *) echo "bench_rows: unknown argument '$1'" >&2; usage ;;
  esac
done
for n in "$RUNS" "$FRAMES"; do
  case $n in ''|*[!0-9]*|0) echo "bench_rows: --runs/--frames take a positive number, got '$n'" >&2; exit 2 ;; esac
done
[ -n "$BASE" ] && [ -x "$BASE" ] || { echo "bench_rows: --baseline BIN (an executable pm-rebuild) is required" >&2; exit 2; }
for c in perf jq python3; do
  command -v $c >/dev/null || { echo "bench_rows: $c is required" >&2; exit 2; }
done
[ -n "$DIR" ] || DIR=$(mktemp -d /tmp/pmarchive-bench-rows.XXXXXX)
mkdir -p "$DIR"
[ "$TO" = /dev/null ] || TO="$DIR/rows.timed.jsonl"
BIN=target/release/pm-rebuild
echo "building $BIN (release)…" >&2
cargo build --release --quiet --bin pm-rebuild
IN="$DIR/ws_frames_$FRAMES.jsonl"
if [ ! -s "$IN" ]; then
  echo "generating $FRAMES frame lines into $IN …" >&2
  python3 scripts/gen_ws_bench.py "$FRAMES" 7 60 100 > "$IN"
fi
echo "input: $IN ($(stat -c %s "$IN") bytes, $FRAMES frame lines, DERIVED)"
echo "load before: $(uptime)"
echo "cores: $(nproc)"

# cpu BIN : "ROWS_MS TOTAL_MS" of one run (task-clock samples of the row thread, of all threads).
cpu() {
  perf record -q -o "$DIR/perf.data" -e task-clock -c 1000000 "$1" --threads 1 "$IN" > "$TO" 2>/dev/null
  perf report -i "$DIR/perf.data" --sort comm -n --stdio 2>/dev/null |
    awk '$1 ~ /%$/ { t += $2; if ($3 == "rebuild-rows") r = $2 } END { print r + 0, t + 0 }'
}
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rm -f "$DIR"/c.*.txt "$DIR/rows.timed.jsonl"
for r in $(seq "$RUNS"); do
  echo "round $r/$RUNS …" >&2
  cpu "$BIN" >> "$DIR/c.this.txt"
  cpu "$BASE" >> "$DIR/c.base.txt"
done
rows_this=$(awk '{print $1}' "$DIR/c.this.txt" | med)
rows_base=$(awk '{print $1}' "$DIR/c.base.txt" | med)
tot_this=$(awk '{print $2}' "$DIR/c.this.txt" | med)
tot_base=$(awk '{print $2}' "$DIR/c.base.txt" | med)
TIMEFORMAT='%U'
jq_user=$( { time jq -c . "$IN" > /dev/null; } 2>&1 )
echo "load after: $(uptime)"
echo
echo "median of $RUNS interleaved runs (pm-rebuild --threads 1, rows to $TO)   CPU ms"
printf '  %-44s %8s   (all rounds: %s)\n' "row thread, this build" "$rows_this" "$(awk '{printf "%s ", $1}' "$DIR/c.this.txt")"
printf '  %-44s %8s   (all rounds: %s)\n' "row thread, baseline" "$rows_base" "$(awk '{printf "%s ", $1}' "$DIR/c.base.txt")"
printf '  %-44s %8s\n' "whole process, this build" "$tot_this"
printf '  %-44s %8s\n' "whole process, baseline" "$tot_base"
printf '  %-44s %8.0f   (one run, user CPU)\n' "jq -c . (peer, for scale)" "$(echo "$jq_user * 1000" | bc -l)"
echo
printf 'row thread this/baseline:    %.2fx   (TARGET <= 0.75x)\n' "$(echo "$rows_this / $rows_base" | bc -l)"
printf 'whole process this/baseline: %.2fx\n' "$(echo "$tot_this / $tot_base" | bc -l)"
printf 'row thread vs jq CPU:        %.3fx\n' "$(echo "$rows_this / ($jq_user * 1000)" | bc -l)"
echo
echo "rows sha256 (first 16 hex), this build vs baseline:"
same=yes
for d in "" "--depth all" "--top"; do
  read -ra opt <<< "$d"
  a=$("$BIN" --threads 1 "${opt[@]}" "$IN" 2>/dev/null | tee "$DIR/rows.jsonl" | sha256sum | cut -c1-16)
  b=$("$BASE" --threads 1 "${opt[@]}" "$IN" 2>/dev/null | sha256sum | cut -c1-16)
  [ "$a" = "$b" ] || same=no
  printf '  %-14s %s  %s\n' "${d:-(depth 10)}" "$a" "$b"
done
echo "rows byte-identical: $same"
echo "data kept in $DIR (delete it when done)"
