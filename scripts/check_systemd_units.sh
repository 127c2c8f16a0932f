#!/usr/bin/env bash
# check_systemd_units.sh - offline checks of the repository's systemd units (CI gate).
set -euo pipefail

PROG=check_systemd_units

usage() {
    cat <<'USAGE'
check_systemd_units.sh - verify systemd units offline; any warning is a failure.

USAGE:
    check_systemd_units.sh [--bin-dir DIR] [--stub-missing] [UNIT...]

UNIT defaults to every unit file in the repository's systemd/ directory. For each unit:

  1. The unit is rendered into a temp dir (with every other unit of its source directory, so that a
     timer finds its service), with paths under /opt/pm-archive/ in Exec*= lines rewritten to the
     checkout: /opt/pm-archive/<rel> -> <repo>/<rel> if that exists, else a binary of the same name in
     --bin-dir DIR, or in the release/ or debug/ directory of $CARGO_TARGET_DIR (default <repo>/target).
     A path found nowhere fails the check (build first: cargo build --release), unless --stub-missing
     substitutes a stub executable.
  2. `systemd-analyze verify --man=no` runs on it. ANY output (stdout or stderr) fails: systemd reports
     unknown keys, bad values and inline comments only as warnings with exit 0.
  3. Services only: `systemd-analyze security --offline=true --threshold=MAX`. MAX is taken from a line
     `# pm-archive-security-max: N` in the unit, else 2.0 (the collector's target).

EXIT STATUS: 0 all units pass; 1 a check failed; 2 bad arguments or systemd-analyze missing.
USAGE
}

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
STUB=0
BIN_DIR=
UNITS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --stub-missing) STUB=1; shift ;;
        --bin-dir) [[ $# -ge 2 && -d $2 ]] || { say "--bin-dir needs an existing directory"; exit 2; }
                   BIN_DIR=$2; shift 2 ;;
        -*) say "unknown option '$1'"; exit 2 ;;
        *) UNITS+=("$1"); shift ;;
    esac
done
command -v systemd-analyze >/dev/null 2>&1 || { say "systemd-analyze not found (apt-get install systemd)"; exit 2; }
if ((${#UNITS[@]} == 0)); then
    shopt -s nullglob
    UNITS=("$REPO"/systemd/*.{service,timer,socket,path,target,mount})
    shopt -u nullglob
    ((${#UNITS[@]} > 0)) || { say "no units in $REPO/systemd"; exit 2; }
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/check-units.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Checkout equivalent of a deployment path under /opt/pm-archive/.
resolve() {
    local rel=${1#/opt/pm-archive/} base=${1##*/} c target=${CARGO_TARGET_DIR:-$REPO/target}
    for c in "$REPO/$rel" ${BIN_DIR:+"$BIN_DIR/$base"} "$target/release/$base" "$target/debug/$base"; do
        [[ -f $c && -x $c ]] && { printf '%s' "$c"; return 0; }
    done
    if [[ $STUB == 1 ]]; then
        mkdir -p "$TMP/stubs"
        printf '#!/bin/sh\nexit 0\n' >"$TMP/stubs/$base" && chmod +x "$TMP/stubs/$base"
        printf '%s' "$TMP/stubs/$base"; return 0
    fi
    return 1
}

# render SRC DST: copy a unit, rewriting /opt/pm-archive/... tokens on Exec*= lines.
render() {
    local src=$1 dst=$2 line out tok p
    : >"$dst"
    while IFS= read -r line || [[ -n $line ]]; do
        if [[ $line =~ ^[[:space:]]*Exec[A-Za-z]*= ]]; then
            out=$line
            while IFS= read -r tok; do
                p=$(resolve "$tok") || { say "$src: $tok has no counterpart in the checkout (build first: cargo build --release; or --stub-missing)"; return 1; }
                out=${out//"$tok"/"$p"}
            done < <(grep -o '/opt/pm-archive/[^[:space:]'"'"'";|&]*' <<<"$line" | sort -u)
            line=$out
        fi
        printf '%s\n' "$line" >>"$dst"
    done <"$src"
}

fail=0
for unit in "${UNITS[@]}"; do
    [[ -f $unit ]] || { say "no such unit file: $unit"; fail=1; continue; }
    name=$(basename "$unit")
    work="$TMP/$name.d"
    mkdir -p "$work"
    # Siblings first (so a timer finds its service), then the unit itself.
    for sib in "$(dirname "$unit")"/*.{service,timer,socket,path,target,mount}; do
        [[ -f $sib && $(basename "$sib") != "$name" ]] || continue
        render "$sib" "$work/$(basename "$sib")" 2>/dev/null || cp "$sib" "$work/$(basename "$sib")"
    done
    render "$unit" "$work/$name" || { fail=1; continue; }

    out=$(cd "$work" && systemd-analyze verify --man=no "./$name" 2>&1) && rc=0 || rc=$?
    if [[ $rc != 0 || -n $out ]]; then
        say "FAIL verify $name (exit $rc):"; printf '%s\n' "$out" >&2; fail=1
    else
        say "ok   verify $name"
    fi

    if [[ $name == *.service ]]; then
        max=$(sed -n 's/^#[[:space:]]*pm-archive-security-max:[[:space:]]*\([0-9.]*\).*/\1/p' "$unit" | head -n 1)
        max=${max:-2.0}
        # --threshold is on the internal 0..100 scale (the printed exposure times 10).
        thr=$(awk -v m="$max" 'BEGIN { printf "%d", m * 10 + 0.5 }')
        sec=$(cd "$work" && systemd-analyze security --offline=true --threshold="$thr" --no-pager "./$name" 2>&1) && rc=0 || rc=$?
        score=$(grep -o 'Overall exposure level for [^:]*: [0-9.]* [A-Z]*' <<<"$sec" | sed 's/.*: //' || true)
        [[ -n $score ]] || { say "FAIL security $name: no score"; printf '%s\n' "$sec" >&2; fail=1; continue; }
        if [[ $rc != 0 ]]; then
            say "FAIL security $name: exposure ${score:-?} above the maximum $max"
            grep -E '^✗' <<<"$sec" >&2 || printf '%s\n' "$sec" >&2
            fail=1
        else
            say "ok   security $name: exposure $score (max $max)"
        fi
    fi
done
exit $fail
