#!/usr/bin/env bash
# discover.sh — one discovery pass (roadmap checkpoint 3) turned into the roadmap's artefacts:
#
#   <out>/polymarket_btc_markets_latest.json     JSON array of market records (pmarchive.market/1)
#   <out>/polymarket_btc_markets_manifest.json   run info, counts, files with bytes + sha256
#   <out>/polymarket_btc_markets.md              human-readable table
#   <out>/raw/gamma_<run_id>.jsonl.gz            the raw Gamma replies (pmarchive.raw/1), kept verbatim
#
# Usage: pipelines/discover.sh [--out-dir DIR] [--gamma-url URL] [--bin-dir DIR] [-- PM_MARKETS_ARGS...]
#   --out-dir DIR     default: <repo>/data/discovery
#   --gamma-url URL   default: https://gamma-api.polymarket.com (a 127.0.0.1/localhost URL marks the
#                     artefacts as a LOOPBACK replay, never as live data)
#   --bin-dir DIR     where pm-markets and manifest (its run id: manifest run-id) are
#                     (default: <repo>/target/release, else PATH)
#   after --           extra pm-markets options, e.g. -- --families 5m,15m --ahead 2
# Needs: jq, gzip, sha256sum. Exit status: pm-markets' (0 ok, 1 some window failed), 2 bad usage,
#   124 the pass took over 10 minutes, 143 stopped by SIGTERM/SIGINT (nothing written).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
out="$repo/data/discovery"; gamma="https://gamma-api.polymarket.com"; bin_dir="$repo/target/release"
extra=()
die2() { printf 'discover.sh: %s\n' "$*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    --out-dir) [ $# -ge 2 ] || die2 "--out-dir needs a value"; out="$2"; shift 2 ;;
    --gamma-url) [ $# -ge 2 ] || die2 "--gamma-url needs a value"; gamma="$2"; shift 2 ;;
    --bin-dir) [ $# -ge 2 ] || die2 "--bin-dir needs a value"; bin_dir="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) die2 "unknown argument '$1' (see --help)" ;;
  esac
done
for t in jq gzip sha256sum; do command -v "$t" >/dev/null || die2 "$t is required"; done
if [ -x "$bin_dir/pm-markets" ]; then pm_markets="$bin_dir/pm-markets"
elif command -v pm-markets >/dev/null; then pm_markets="$(command -v pm-markets)"
else die2 "pm-markets not found (build with: cargo build --release)"; fi
if [ -x "$bin_dir/manifest" ]; then manifest="$bin_dir/manifest"
elif command -v manifest >/dev/null; then manifest="$(command -v manifest)"
else die2 "manifest not found (build with: cargo build --release)"; fi

run_kind=live
case "$gamma" in http://127.0.0.1*|https://127.0.0.1*|http://localhost*|https://localhost*|http://\[::1\]*) run_kind=loopback ;; esac
run_id="${PMARCHIVE_RUN_ID:-}"
[ -n "$run_id" ] || run_id="$("$manifest" run-id)" || die2 "$manifest run-id failed"
mkdir -p "$out/raw"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

# pm-markets runs as a child this script waits for (a wait that a signal interrupts): SIGTERM/SIGINT
# stop it and end the script (exit 143, nothing written); a pass is bounded to 10 minutes (exit 124).
rc=0
PMARCHIVE_RUN_ID="$run_id" timeout -k 5 600 "$pm_markets" --once --gamma-url "$gamma" --raw-out "$tmp/raw.jsonl" \
  "${extra[@]}" > "$tmp/markets.jsonl" 2> "$tmp/stderr" &
pid=$!
stopped=""
trap 'stopped=1; kill -TERM "$pid" 2>/dev/null' TERM INT HUP
while :; do
  rc=0; wait "$pid" || rc=$?
  kill -0 "$pid" 2>/dev/null || break
done
cat "$tmp/stderr" >&2
if [ -n "$stopped" ]; then printf 'discover.sh: stopped by a signal; nothing written\n' >&2; exit 143; fi
[ "$rc" -le 1 ] || exit "$rc"
summary="$(grep -E '^pm-markets: [0-9]+ windows' "$tmp/stderr" | tail -n 1 | sed 's/^pm-markets: //')"

touch "$tmp/raw.jsonl"
gzip -c "$tmp/raw.jsonl" > "$tmp/raw.jsonl.gz"
jq -s '.' "$tmp/markets.jsonl" > "$tmp/latest.json"
raw_rel="raw/gamma_${run_id}.jsonl.gz"
mv "$tmp/raw.jsonl.gz" "$out/$raw_rel"
mv "$tmp/latest.json" "$out/polymarket_btc_markets_latest.json"

files_json() {
  for f in "$@"; do
    jq -n --arg path "$f" --argjson bytes "$(stat -c %s "$out/$f")" --arg sha256 "$(sha256sum "$out/$f" | cut -d' ' -f1)" \
      '{path:$path, bytes:$bytes, sha256:$sha256}'
  done | jq -s '.'
}
now="$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)"
jq -n --arg run_id "$run_id" --arg host "$(hostname)" --arg at "$now" --arg gamma "$gamma" --arg kind "$run_kind" \
  --arg version "$("$pm_markets" --version | cut -d' ' -f2)" --argjson rc "$rc" --arg summary "$summary" \
  --argjson args "$(printf '%s\n' "${extra[@]}" | jq -R . | jq -s 'map(select(. != ""))')" \
  --argjson files "$(files_json polymarket_btc_markets_latest.json "$raw_rel")" \
  --slurpfile markets "$out/polymarket_btc_markets_latest.json" \
  '{schema:"pmarchive.discovery-manifest/1", run_id:$run_id, host:$host, generated_at_utc:$at,
    run_kind:$kind, note:(if $kind=="loopback" then "LOOPBACK REPLAY of recorded responses on 127.0.0.1 — not live data" else "live run against the venue" end),
    tool:"pm-markets", tool_version:$version, gamma_url:$gamma, extra_args:$args, exit_code:$rc, summary:$summary,
    markets:($markets[0]|length), by_family:($markets[0]|group_by(.family)|map({key:(.[0].family // "unknown"), value:length})|from_entries),
    files:$files}' > "$tmp/manifest.json"
mv "$tmp/manifest.json" "$out/polymarket_btc_markets_manifest.json"

{
  echo "# Polymarket BTC up/down markets — discovery pass $run_id"
  echo
  if [ "$run_kind" = loopback ]; then
    echo "> **LOOPBACK REPLAY OF RECORDED RESPONSES (127.0.0.1) — NOT LIVE DATA.** Token ids and windows"
    echo "> below come from the test venue, which derives records from real recorded Gamma replies."
    echo
  fi
  echo "- generated: $now by pm-markets $("$pm_markets" --version | cut -d' ' -f2) against \`$gamma\`"
  echo "- result: ${summary:-n/a} (exit $rc)"
  echo "- raw Gamma replies: \`$raw_rel\`; manifest: \`polymarket_btc_markets_manifest.json\`"
  echo
  echo "| family | slug | window (UTC) | status | Up token | Down token | condition id |"
  echo "|---|---|---|---|---|---|---|"
  jq -r '.[] | "| \(.family // "?") | `\(.slug)` | \(.window_start_utc) → \(.window_end_utc) | \(.status) | `\(.tokens[0].token_id)` | `\(.tokens[1].token_id)` | `\(.condition_id)` |"' \
    "$out/polymarket_btc_markets_latest.json"
} > "$tmp/report.md"
mv "$tmp/report.md" "$out/polymarket_btc_markets.md"
printf 'discover.sh: %s markets → %s (%s)\n' "$(jq length "$out/polymarket_btc_markets_latest.json")" "$out" "$run_kind" >&2
exit "$rc"
