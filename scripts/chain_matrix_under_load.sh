#!/usr/bin/env bash
# chain_matrix_under_load.sh — runs the chain test matrix (tests/pipeline.rs `chain_matrix_*`: every stage
# × {kill -9, kill -9 while collect.sh is SIGSTOPped, death at start-up}) N times in a row while two
# `yes > /dev/null` loops load the CPU, and prints one line per run plus the totals.
#
# Usage: scripts/chain_matrix_under_load.sh [RUNS]      (default 20; loopback venue only, no network)
# Exit status: 0 every run passed; 1 a run failed (its output is kept in the printed directory).
set -uo pipefail
runs=${1:-20}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "chain_matrix_under_load.sh: RUNS must be a positive integer" >&2; exit 2; }
cd "$(dirname "$0")/.." || exit 2
bin=$(cargo test --test pipeline --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*pipeline-[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "chain_matrix_under_load.sh: could not build tests/pipeline.rs" >&2; exit 2; }
out=$(mktemp -d "${TMPDIR:-/tmp}/chain-matrix.XXXXXX")
yes > /dev/null & y1=$!
yes > /dev/null & y2=$!
trap 'kill $y1 $y2 2>/dev/null' EXIT
echo "chain_matrix_under_load.sh: LOOPBACK venue on 127.0.0.1 (recorded responses; not live), $runs runs, 2 yes loops, $(nproc) cores"
failed=0
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  "$bin" chain_matrix --test-threads 8 --nocapture > "$out/run$i.txt" 2>&1 || failed=$((failed + 1))
  printf 'run %s: %s in %ss, load %s\n' "$i" "$(grep -o 'test result: .*; [0-9]* failed' "$out/run$i.txt")" \
    "$(($(date +%s) - start))" "$(cut -d' ' -f1 /proc/loadavg)"
done
max=$(grep -ho 'exited [0-9.]* s after the kill' "$out"/run*.txt | awk '{ if ($2 > m) m = $2 } END { print m }')
maxs=$(grep -ho 'exited [0-9.]* s after its start' "$out"/run*.txt | awk '{ if ($2 > m) m = $2 } END { print m }')
echo "runs: $runs, failed runs: $failed; slowest exit after a kill: ${max:-?} s; after a death at start-up: ${maxs:-?} s (from the start)"
echo "outputs: $out"
[ "$failed" -eq 0 ]
