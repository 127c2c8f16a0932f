#!/usr/bin/env bash
# sample_run_loopback.sh — the roadmap's checkpoint-4/5 sample run, against the LOOPBACK venue.
#
# Runs the real collection chain (pipelines/collect.sh: pm-markets → pm-books → jsonl-rotate → manifest)
# for N minutes against examples/loopback_venue (real recorded Polymarket responses and records derived
# from them, served on 127.0.0.1), then verifies the archive, checks health, normalizes it and checks the
# normalized output. Everything it writes is labelled LOOPBACK: it is not live data. The live sample is
# for a networked VPS (same script with real URLs = pipelines/collect.sh with PMARCHIVE_DURATION set).
#
# Usage: scripts/sample_run_loopback.sh [--minutes N] [--out DIR]
#   --minutes N   collection time (default 6)
#   --out DIR     default <repo>/data/loopback_sample
# Writes:
#   DIR/archive/...                                    the raw archive (hive layout) and its run manifest
#   DIR/README.md, DIR/verify.txt, DIR/status.json     what was run and what the checks said
#   DIR/normalized/orderbook_snapshots.jsonl.gz        pm-normalize output, DIR/normalized/check.json
#   data/manifests/orderbook_collector_sample_manifest.json       copy of the run manifest
#   data/manifests/orderbook_normalization_sample_manifest.json   pm-normalize's manifest
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
minutes=6; out="$repo/data/loopback_sample"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    --minutes) minutes="${2:?--minutes needs a value}"; shift 2 ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    *) echo "sample_run_loopback.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
case "$minutes" in ''|*[!0-9]*) echo "sample_run_loopback.sh: --minutes must be a whole number" >&2; exit 2 ;; esac
cd "$repo"
cargo build --release --quiet --bins --example loopback_venue
bin="$repo/target/release"
if [ -e "$out/archive" ]; then echo "sample_run_loopback.sh: $out/archive exists; move it away first (artefacts are never overwritten)" >&2; exit 2; fi
mkdir -p "$out/normalized" "$repo/data/manifests"
work="$(mktemp -d)"; trap 'kill "${venue_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin/examples/loopback_venue" > "$work/url" & venue_pid=$!
for _ in $(seq 50); do [ -s "$work/url" ] && break; sleep 0.1; done
url="$(cat "$work/url")"
label="LOOPBACK REPLAY of recorded responses (examples/loopback_venue on 127.0.0.1) — not live data"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# The example venue has no Data API: the trade lane stays off (and its URL loopback all the same).
PMARCHIVE_TRADES=0 PMARCHIVE_DATA_URL="$url" \
PMARCHIVE_ROOT="$out/archive" PMARCHIVE_BIN_DIR="$bin" PMARCHIVE_GAMMA_URL="$url" PMARCHIVE_CLOB_URL="$url" \
PMARCHIVE_FAMILIES=5m,15m,1h,4h PMARCHIVE_AHEAD=1 PMARCHIVE_DISCOVERY_EVERY=30 PMARCHIVE_INTERVAL=1 \
PMARCHIVE_ROTATE_SECS=120 PMARCHIVE_DURATION=$((minutes * 60)) PMARCHIVE_LABEL="$label" \
  "$repo/pipelines/collect.sh" 2> "$out/collect.log"

set +e
"$bin/manifest" verify "$(realpath --relative-to="$repo" "$out")/archive" > "$out/verify.txt"; verify_rc=$?
"$bin/manifest" status "$(realpath --relative-to="$repo" "$out")/archive" --json > "$out/status.json"; status_rc=$?
# Paths relative to the repository in the artefacts (they must make sense in any clone).
rel="$(realpath --relative-to="$repo" "$out")"
mapfile -t raw < <(find "$rel/archive" -path '*stream=books*' -name '*.jsonl.gz' | sort)
"$bin/pm-normalize" "${raw[@]}" -o "$rel/normalized/orderbook_snapshots.jsonl.gz" \
  --manifest "data/manifests/orderbook_normalization_sample_manifest.json" 2> "$out/normalized/normalize.log"; norm_rc=$?
"$bin/pm-normalize" --check "$rel/normalized/orderbook_snapshots.jsonl.gz" > "$out/normalized/check.json"; check_rc=$?
set -e
runs=("$out"/archive/manifests/run-*.json)
cp "${runs[0]}" "$repo/data/manifests/orderbook_collector_sample_manifest.json"

files=$(find "$out/archive" -name '*.jsonl.gz' | wc -l)
gz=$(find "$out/archive" -name '*.jsonl.gz' -exec cat {} + | wc -c)
rawb=$(find "$out/archive" -name '*.jsonl.gz' -exec zcat {} + | wc -c)
gzip_ok=yes; while IFS= read -r f; do gzip -t "$f" || gzip_ok=no; done < <(find "$out/archive" -name '*.jsonl.gz')
cat > "$out/README.md" <<EOF
# Collector sample run — LOOPBACK REPLAY, NOT LIVE DATA

**Every file under this directory comes from a run against the loopback test venue
(\`examples/loopback_venue\`, 127.0.0.1), which serves real recorded Polymarket responses and records
derived from them (tests/common/venue.rs says which is which). It shows that the chain works and what
its output looks like; it says nothing about the live venue's behaviour.** The live sample of roadmap
checkpoint 4 must come from a networked VPS.

- command: \`scripts/sample_run_loopback.sh --minutes $minutes\` (started $started)
- chain: pipelines/collect.sh with families 5m,15m,1h,4h, 1 s interval, 120 s rotation (short, to
  show rotation), discovery every 30 s; log: \`collect.log\`
- archive: \`archive/\` — $files sealed files, $gz bytes gzip, $rawb bytes raw (ratio $(awk -v a="$rawb" -v b="$gz" 'BEGIN{printf "%.1f", (b>0?a/b:0)}')x); \`gzip -t\` on every file: $gzip_ok
- run manifest: \`archive/manifests/\` (copied to \`data/manifests/orderbook_collector_sample_manifest.json\`)
- \`manifest verify\`: exit $verify_rc (\`verify.txt\`); \`manifest status --json\`: exit $status_rc (\`status.json\`;
  it goes stale minutes after the run ends, by design)
- normalized: \`normalized/orderbook_snapshots.jsonl.gz\` (pm-normalize exit $norm_rc, \`normalized/normalize.log\`),
  manifest \`data/manifests/orderbook_normalization_sample_manifest.json\`; \`pm-normalize --check\`: exit $check_rc
  (\`normalized/check.json\`)
EOF
echo "sample_run_loopback.sh: done → $out (verify $verify_rc, normalize $norm_rc, check $check_rc)" >&2
