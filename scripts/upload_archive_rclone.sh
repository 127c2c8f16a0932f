#!/usr/bin/env bash
# upload_archive_rclone.sh - offload sealed archive files to a remote (Google Drive) with rclone,
# verify every upload by hash, record it in <root>/manifests/uploads.jsonl, and delete local files only
# after proof. The usage text below is the spec.
set -euo pipefail
# C locale (EPOCHREALTIME with a '.'), UTC for our timestamps and rclone's log lines.
export LC_ALL=C TZ=UTC

PROG=upload_archive_rclone
VERSION=0.1.0

usage() {
    cat <<'EOF'
upload_archive_rclone.sh - offload sealed archive files with rclone, verified, recorded, pruned.

USAGE:
    upload_archive_rclone.sh [OPTIONS]

Uploads every SEALED archive file under ROOT (never a *.partial) to REMOTE, keeping the hive layout
(venue=/stream=/date=/hour=/<host>-<run_id>-<n>.jsonl.gz and its *.jsonl.gz.unreadable-tail), with
`rclone copy --immutable --checksum` (never sync). After the copy every file is verified against the
remote's hash (md5 if the remote has it, else sha256, else size only) and one `pmarchive.upload/1`
record per file is appended to ROOT/manifests/uploads.jsonl. A file that already has a verified upload
record with the same sha256 is neither uploaded nor recorded again. At the end, the manifests
(manifests/*.json and *.jsonl: run manifests, uploads.jsonl, recovered-files.jsonl) are copied to
REMOTE/manifests/ WITHOUT --immutable (they change); dot files (lock, journal, temp files) are not.

Local check (every run, before anything is uploaded or deleted): each candidate's sha256 must equal
the sha256 its run manifest (ROOT/manifests/run-*.json, streams.<s>.files[].sha256 or tail_sha256)
recorded at sealing. A file that differs (rotted on disk), that two manifests list with different
hashes, or that no manifest lists (adopt it: manifest unlisted ROOT | manifest build --root ROOT) is
neither uploaded nor deleted: it gets an upload record with verified:false and "skipped" (once per
path, sha256 and reason) and the run exits 1.

Re-verification: files already verified on the remote and still present locally are re-checked
against the remote's current hashes (one listing, no download) when the last complete re-check is
older than --reverify-every (default 1d; state in ROOT/manifests/.upload-reverify) or with --reverify.
A remote copy that no longer matches gets an upload record verified:false ("check":"reverify"), the
run exits 1, and the local file is never deleted while its remote copy is bad. Repair (default on):
a remote copy that differs from a local file that matches its manifest is renamed on the remote to
<path>.corrupt-<UTC time> (kept, labelled, never deleted) and the file is uploaded again with
--immutable; the new upload record names the renamed copy in "quarantined_as". With --no-repair the
bad copy stays, --immutable refuses to overwrite it (rclone exit 6) and every run exits 1 until the
operator acts (docs/GOOGLE_DRIVE_OFFLOAD.md).

Local retention (off by default): a local file is deleted only when it is verified by hash (or by size
with --allow-size-only-delete), its mtime is older than --retention-days, AND a fresh remote check made
by this run still matches. The local_delete record is appended and fsynced BEFORE the unlink.

The archive's JSON (run manifests, uploads.jsonl, rclone's feature list) and its layout are read and
written by the `manifest` tool (`manifest offload files|expected|check|state|append|hash-type`); this
script keeps rclone, the lock and retention, and parses no JSON. `manifest` is taken from
PMARCHIVE_BIN_DIR, else ../bin beside this script (the installed layout), else the newer of
../target/release and ../target/debug (a checkout), else PATH.

OPTIONS (environment variable in brackets):
    --root DIR              archive root [PMARCHIVE_ROOT] (default /var/lib/pm-archive/archive)
    --remote REMOTE         rclone destination, e.g. gdrive:pm-archive [PMARCHIVE_REMOTE]
                            (default gdrive:pm-archive)
    --retention-days N|keep delete local files verified on the remote and older than N days (mtime);
                            0 = as soon as verified; keep = never delete [PMARCHIVE_RETENTION_DAYS]
                            (default keep)
    --min-age DUR           skip sealed files modified less than DUR ago: N, Ns, Nm, Nh or Nd
                            [PMARCHIVE_MIN_AGE] (default 15m)
    --bwlimit RATE          rclone --bwlimit, e.g. 4M or off [PMARCHIVE_BWLIMIT] (default 4M)
    --tpslimit N            rclone --tpslimit, 0 = off [PMARCHIVE_TPSLIMIT] (default 8)
    --transfers N           rclone --transfers [PMARCHIVE_TRANSFERS] (default 2)
    --rclone-config FILE    rclone config file (exported as RCLONE_CONFIG) [RCLONE_CONFIG]
    --rclone BIN            rclone executable [PMARCHIVE_RCLONE] (default rclone)
    --allow-size-only-delete
                            allow retention to delete files verified by size only (remotes without
                            hashes, e.g. webdav) [PMARCHIVE_ALLOW_SIZE_ONLY_DELETE=1]
    --reverify              re-check every verified, still-local file on the remote in this run
    --reverify-every DUR    re-check them when the last complete re-check is older than DUR (N, Ns,
                            Nm, Nh, Nd; 0 = every run) [PMARCHIVE_REVERIFY_EVERY] (default 1d)
    --no-repair             do not rename a bad remote copy aside and re-upload [PMARCHIVE_REPAIR=0]
    --no-manifests          do not copy manifests/ to the remote
    --dry-run               show what would be uploaded and deleted; upload nothing, append nothing,
                            delete nothing (only read-only rclone commands run)
    -h, --help              print this help
    -V, --version           print the version

EXIT STATUS:
    0  every eligible file is uploaded and verified (or nothing to do)
    1  reported failure: a verification or re-verification mismatch (recorded verified:false), a local
       file that differs from its manifest or is in no manifest, an rclone error, or another run
       holds the lock (ROOT/manifests/.upload.lock)
    2  bad arguments or a fatal error (missing tool, missing root, unusable remote)

FILES:
    ROOT/manifests/uploads.jsonl      upload and local_delete records (pmarchive.upload/1, append-only)
    ROOT/manifests/.upload.lock       flock(1) lock: two runs never overlap
    ROOT/manifests/.upload-inflight   files an unfinished run was uploading; a remote copy of one of
                                      them that does not match is a torn upload and is replaced
    ROOT/manifests/.upload-reverify   epoch seconds of the last complete re-verification
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { say "error: $*"; exit 2; }
usage_err() { say "$*"; say "try --help"; exit 2; }

# ---------------------------------------------------------------- configuration
ROOT=${PMARCHIVE_ROOT:-/var/lib/pm-archive/archive}
REMOTE=${PMARCHIVE_REMOTE:-gdrive:pm-archive}
RETENTION=${PMARCHIVE_RETENTION_DAYS:-keep}
MIN_AGE=${PMARCHIVE_MIN_AGE:-15m}
BWLIMIT=${PMARCHIVE_BWLIMIT:-4M}
TPSLIMIT=${PMARCHIVE_TPSLIMIT:-8}
TRANSFERS=${PMARCHIVE_TRANSFERS:-2}
RCLONE=${PMARCHIVE_RCLONE:-rclone}
ALLOW_SIZE_DELETE=${PMARCHIVE_ALLOW_SIZE_ONLY_DELETE:-0}
REVERIFY_EVERY=${PMARCHIVE_REVERIFY_EVERY:-1d}
REPAIR=${PMARCHIVE_REPAIR:-1}
REVERIFY=0
DRY_RUN=0
MANIFESTS=1

need_value() { [[ $# -ge 2 ]] || usage_err "missing value for $1"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) need_value "$@"; ROOT=$2; shift 2 ;;
        --remote) need_value "$@"; REMOTE=$2; shift 2 ;;
        --retention-days) need_value "$@"; RETENTION=$2; shift 2 ;;
        --min-age) need_value "$@"; MIN_AGE=$2; shift 2 ;;
        --bwlimit) need_value "$@"; BWLIMIT=$2; shift 2 ;;
        --tpslimit) need_value "$@"; TPSLIMIT=$2; shift 2 ;;
        --transfers) need_value "$@"; TRANSFERS=$2; shift 2 ;;
        --rclone-config) need_value "$@"; export RCLONE_CONFIG=$2; shift 2 ;;
        --rclone) need_value "$@"; RCLONE=$2; shift 2 ;;
        --allow-size-only-delete) ALLOW_SIZE_DELETE=1; shift ;;
        --reverify) REVERIFY=1; shift ;;
        --reverify-every) need_value "$@"; REVERIFY_EVERY=$2; shift 2 ;;
        --no-repair) REPAIR=0; shift ;;
        --no-manifests) MANIFESTS=0; shift ;;
        --dry-run|-n) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -V|--version) echo "$PROG $VERSION"; exit 0 ;;
        --*=*) usage_err "write '${1%%=*} ${1#*=}' (with a space), not '$1'" ;;
        *) usage_err "unknown argument '$1'" ;;
    esac
done

# Durations for --min-age: N (seconds), Ns, Nm, Nh, Nd.
parse_duration() {
    local v=$1
    [[ $v =~ ^([0-9]+)([smhd]?)$ ]] || return 1
    local n=$((10#${BASH_REMATCH[1]}))
    case "${BASH_REMATCH[2]}" in
        ''|s) echo "$n" ;;
        m) echo $((n * 60)) ;;
        h) echo $((n * 3600)) ;;
        d) echo $((n * 86400)) ;;
    esac
}
MIN_AGE_S=$(parse_duration "$MIN_AGE") || usage_err "bad --min-age '$MIN_AGE' (want N, Ns, Nm, Nh or Nd)"
REVERIFY_EVERY_S=$(parse_duration "$REVERIFY_EVERY") \
    || usage_err "bad --reverify-every '$REVERIFY_EVERY' (want N, Ns, Nm, Nh or Nd)"
case "$RETENTION" in
    keep|'') RETENTION=keep ;;
    *) [[ $RETENTION =~ ^[0-9]+$ ]] || usage_err "bad --retention-days '$RETENTION' (want N or keep)" ;;
esac
[[ $TPSLIMIT =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage_err "bad --tpslimit '$TPSLIMIT'"
[[ $TRANSFERS =~ ^[1-9][0-9]*$ ]] || usage_err "bad --transfers '$TRANSFERS'"
[[ $BWLIMIT =~ ^[A-Za-z0-9.:,\ _-]+$ ]] || usage_err "bad --bwlimit '$BWLIMIT'"
[[ -n $REMOTE && $REMOTE != *$'\n'* && $REMOTE != *$'\t'* && $REMOTE != *'"'* && $REMOTE != *"\\"* ]] \
    || usage_err "bad --remote '$REMOTE'"
case "$ALLOW_SIZE_DELETE" in 1|true|yes) ALLOW_SIZE_DELETE=1 ;; *) ALLOW_SIZE_DELETE=0 ;; esac
case "$REPAIR" in 0|false|no) REPAIR=0 ;; *) REPAIR=1 ;; esac

for tool in "$RCLONE" flock md5sum sha256sum sort xargs sync; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH (rclone: apt-get install rclone)"
done
# The manifest tool (see the usage text): the archive's JSON and layout are its business.
find_manifest() {
    local self base rel dbg
    self=$(readlink -f -- "${BASH_SOURCE[0]}" 2>/dev/null || printf '%s' "${BASH_SOURCE[0]}")
    base=$(cd -- "$(dirname -- "$self")/.." && pwd)
    if [[ -n ${PMARCHIVE_BIN_DIR:-} ]]; then
        printf '%s\n' "$PMARCHIVE_BIN_DIR/manifest"
    elif [[ -x $base/bin/manifest ]]; then
        printf '%s\n' "$base/bin/manifest"
    else
        rel=$base/target/release/manifest dbg=$base/target/debug/manifest
        if [[ -x $rel && ( ! -x $dbg || $rel -nt $dbg ) ]]; then printf '%s\n' "$rel"
        elif [[ -x $dbg ]]; then printf '%s\n' "$dbg"
        else command -v manifest || printf '%s\n' manifest; fi
    fi
}
MANIFEST=$(find_manifest)
[[ -x $MANIFEST ]] || die "the manifest tool was not found ($MANIFEST; set PMARCHIVE_BIN_DIR or install: scripts/install.sh)"
[[ -d $ROOT ]] || die "archive root '$ROOT' is not a directory"
ROOT=$(cd "$ROOT" && pwd -P)
MDIR=$ROOT/manifests
UPLOADS=$MDIR/uploads.jsonl
LOCK=$MDIR/.upload.lock
INFLIGHT=$MDIR/.upload-inflight
REVERIFY_STATE=$MDIR/.upload-reverify

# The remote path of a file relative to the remote root ("gdrive:" + "a/b" has no slash in between).
rjoin() {
    case "$REMOTE" in
        *:|*/) printf '%s%s' "$REMOTE" "$1" ;;
        *) printf '%s/%s' "$REMOTE" "$1" ;;
    esac
}
# ---------------------------------------------------------------- lock
# fd 9 stays open for the whole run (and is inherited by rclone, so an orphaned rclone keeps the lock).
if [[ $DRY_RUN == 1 ]]; then
    # A dry run creates nothing: it only locks when the lock file already exists.
    if [[ -f $LOCK ]]; then
        exec 9<"$LOCK"
        flock -n 9 || { say "another upload run holds the lock $LOCK; not running"; exit 1; }
    fi
else
    mkdir -p "$MDIR"
    exec 9>>"$LOCK"
    flock -n 9 || { say "another upload run holds the lock $LOCK; not running"; exit 1; }
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pm-upload.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

START_S=$(date +%s)
say "start root=$ROOT remote=$REMOTE retention_days=$RETENTION min_age=$MIN_AGE bwlimit=$BWLIMIT tpslimit=$TPSLIMIT transfers=$TRANSFERS dry_run=$DRY_RUN"
say "rclone: $("$RCLONE" version 2>&1 | head -n 1)"

RC_FLAGS=(--log-level INFO --stats 0 --tpslimit "$TPSLIMIT" --bwlimit "$BWLIMIT" --transfers "$TRANSFERS"
    --drive-stop-on-upload-limit)

# ---------------------------------------------------------------- remote hash type
features=$("$RCLONE" backend features "$REMOTE" 2>"$TMP/features.err") \
    || { cat "$TMP/features.err" >&2; die "cannot use remote '$REMOTE' (rclone backend features failed)"; }
HASH=$(printf '%s' "$features" | "$MANIFEST" offload hash-type) \
    || die "cannot read the features of remote '$REMOTE' (rclone backend features: not the expected JSON)"
if [[ $HASH == md5 ]]; then
    LSF_HASH=(--hash MD5)
elif [[ $HASH == sha256 ]]; then
    LSF_HASH=(--hash SHA256)
else
    HASH=size; LSF_HASH=()
    say "warning: remote '$REMOTE' has neither md5 nor sha256: verification falls back to size (recorded verified_by \"size\"); retention will not delete such files without --allow-size-only-delete"
fi
say "remote verification: $HASH"

# ---------------------------------------------------------------- candidates
NOW_S=$(date +%s)
CUTOFF_S=$((NOW_S - MIN_AGE_S))
declare -A SIZE MTIME
CANDS=()
n_partial=0; n_young=0; n_unknown=0
# Every file outside manifests/, classified by the layout (manifest offload files): sorted by path.
rc=0
"$MANIFEST" offload files "$ROOT" >"$TMP/files.tsv" || rc=$?
((rc <= 1)) || die "cannot list the archive root '$ROOT' (manifest offload files exit $rc)"
((rc == 0)) || say "warning: some directories under $ROOT could not be read (see above); their files wait for the next run"
while IFS=$'\t' read -r class mt sz rel; do
    case $class in
        partial) n_partial=$((n_partial + 1)) ;;
        archive)
            if ((mt > CUTOFF_S)); then
                n_young=$((n_young + 1))
            else
                CANDS+=("$rel"); SIZE[$rel]=$sz; MTIME[$rel]=$mt
            fi ;;
        dot) n_unknown=$((n_unknown + 1)) ;; # the rotators' lock files, temp files; never uploaded
        *) n_unknown=$((n_unknown + 1)); say "warning: not an archive file name, skipped: $rel" ;;
    esac
done <"$TMP/files.tsv"
if ((${#CANDS[@]} > 0)); then mapfile -t CANDS < <(printf '%s\n' "${CANDS[@]}" | LC_ALL=C sort); fi

# sha256 of every candidate (sealed files never change; a changed hash is a new file version).
declare -A SHA MD5
if ((${#CANDS[@]} > 0)); then
    while read -r h p; do SHA[$p]=$h; done < <(cd "$ROOT" && printf '%s\0' "${CANDS[@]}" | xargs -0 sha256sum --)
    # A file that vanished or could not be read since the listing is left for the next run.
    kept=()
    for rel in "${CANDS[@]}"; do
        if [[ -n ${SHA[$rel]:-} ]]; then kept+=("$rel"); else say "warning: could not hash $rel; skipped"; fi
    done
    CANDS=("${kept[@]}")
fi

# ---------------------------------------------------------------- previous records
# Latest upload record per (local_path, sha256) (manifest offload state): STATE = "verified verified_by",
# LAST_SKIP = its "skipped" reason ("-" for none), REC_MD5 = the md5 of the latest verified record (the
# local md5 of that very content, so a re-check needs no re-hash). Lines that are not records are
# counted on stderr by manifest.
declare -A STATE LAST_SKIP REC_MD5
if [[ -f $UPLOADS ]]; then
    "$MANIFEST" offload state "$ROOT" >"$TMP/state.tsv" || die "cannot read $UPLOADS (manifest offload state failed)"
    while IFS=$'\t' read -r p s v by sk m; do
        STATE["$p|$s"]="$v $by"; LAST_SKIP["$p|$s"]=$sk
        if [[ $v == true && $m != - ]]; then REC_MD5["$p|$s"]=$m; fi
    done <"$TMP/state.tsv"
fi

# remote_list FILE OUT: "size<TAB>hash<TAB>path" for the listed files that exist on the remote.
# Returns 1 (and logs) when the remote could not be listed; a missing remote root is an empty listing.
remote_list() {
    local list=$1 out=$2 rc=0
    "$RCLONE" lsf -R --files-only --files-from-raw "$list" --format shp --separator '|' \
        "${LSF_HASH[@]}" --tpslimit "$TPSLIMIT" "$REMOTE" >"$out" 2>"$TMP/lsf.err" || rc=$?
    if ((rc == 3)); then : >"$out"; return 0; fi
    if ((rc != 0)); then
        cat "$TMP/lsf.err" >&2; say "rclone lsf failed (exit $rc)"; return 1
    fi
    return 0
}
declare -A R_SIZE R_HASH
load_listing() {
    local s h p
    while IFS='|' read -r s h p; do R_SIZE[$p]=$s; R_HASH[$p]=$h; done <"$1"
}

# check REL -> sets V_OK (true/false), V_BY (md5/sha256/size, empty = none), V_RMD5 (md5, empty = none)
check() {
    local rel=$1 rs=${R_SIZE[$1]:-} rh=${R_HASH[$1]:-}
    V_OK=false; V_BY=; V_RMD5=
    [[ -n $rs ]] || return 0
    V_BY=$HASH
    case "$HASH" in
        md5)
            V_RMD5=$rh
            [[ -n $rh && $rh == "${MD5[$rel]}" && $rs == "${SIZE[$rel]}" ]] && V_OK=true ;;
        sha256)
            [[ -n $rh && $rh == "${SHA[$rel]}" && $rs == "${SIZE[$rel]}" ]] && V_OK=true ;;
        size)
            [[ $rs == "${SIZE[$rel]}" ]] && V_OK=true ;;
    esac
    return 0
}

# Records are collected in PENDING as tab-separated lines (columns: manifest --help, "offload append")
# and appended by flush_records in one write + one fsync by `manifest offload append` (which stamps
# them, closes a torn last line first and makes a new file's directory entry durable).
PENDING=()
flush_records() {
    ((${#PENDING[@]} > 0)) || return 0
    printf '%s\n' "${PENDING[@]}" | "$MANIFEST" offload append "$ROOT" \
        || { say "could not append ${#PENDING[@]} record(s) to $UPLOADS; stopping (nothing is deleted unrecorded)"; exit 1; }
    PENDING=()
}
# upload_record REL RCLONE_EXIT [CHECK [QUARANTINED_AS]]: the verification result of check().
upload_record() {
    local rel=$1 t=$'\t'
    PENDING+=("upload$t$rel$t${SIZE[$rel]}$t${SHA[$rel]}$t${MD5[$rel]:-}$t$REMOTE$t$V_RMD5$t$V_OK$t$V_BY$t$2$t$t$t${3:-}$t${4:-}")
}
md5_of() { # fills MD5[] for the given relative paths
    (($# > 0)) || return 0
    local h p
    while read -r h p; do MD5[$p]=$h; done < <(cd "$ROOT" && printf '%s\0' "$@" | xargs -0 md5sum --)
}

failed=0; n_uploaded=0; n_verified=0; n_mismatch=0; n_deleted=0; copy_rc=0
n_local_bad=0; n_unlisted=0; n_reverified=0; n_revoked=0; n_quarantined=0; reverify_ran=0
declare -A FRESH_OK QUAR

# ---------------------------------------------------------------- local check against the run manifests
# Each candidate's sha256 against the one its run manifest recorded at sealing (manifest offload check:
# ok, unlisted, manifest_mismatch with the recorded sha256, manifest_conflict). A manifest from which no
# entry can be read is reported by manifest, and the files only it lists count as unlisted: the safe
# side (kept locally, not uploaded).
# skip_record REL REASON MANIFEST_SHA: an upload record for a file that was NOT uploaded because its
# local bytes cannot be trusted (verified:false, rclone_exit null, "skipped" says why).
skip_record() {
    local t=$'\t' ms=$3
    [[ $ms != - ]] || ms=
    PENDING+=("upload$t$1$t${SIZE[$1]}$t${SHA[$1]}$t$t$REMOTE$t${t}false$t$t$t$2$t$ms$t$t")
}
if ((${#CANDS[@]} > 0)); then
    for rel in "${CANDS[@]}"; do printf '%s  %s\n' "${SHA[$rel]}" "$rel"; done >"$TMP/local.sha"
    "$MANIFEST" offload check "$ROOT" <"$TMP/local.sha" >"$TMP/local.check" \
        || die "cannot check local files against the run manifests (manifest offload check failed)"
    kept=()
    while IFS=$'\t' read -r why rel ms; do
        case $why in
            ok) kept+=("$rel"); continue ;;
            unlisted) n_unlisted=$((n_unlisted + 1))
                msg="is listed in no run manifest; not uploaded (adopt it while no collector runs: manifest unlisted ROOT | manifest build --root ROOT)" ;;
            manifest_conflict) n_local_bad=$((n_local_bad + 1))
                msg="is listed by run manifests with different sha256; not uploaded, not deleted" ;;
            *) n_local_bad=$((n_local_bad + 1))
                msg="has sha256 ${SHA[$rel]} but its run manifest recorded $ms at sealing (changed on disk); not uploaded, not deleted" ;;
        esac
        failed=1
        say "LOCAL CHECK FAILED: $rel $msg"
        # Recorded once per path, sha256 and reason (the timer would otherwise append it every 30 minutes).
        if [[ $DRY_RUN == 0 && ${LAST_SKIP["$rel|${SHA[$rel]}"]:-} != "$why" ]]; then skip_record "$rel" "$why" "$ms"; fi
    done <"$TMP/local.check"
    CANDS=("${kept[@]}")
fi
[[ $DRY_RUN == 1 ]] || flush_records

# ---------------------------------------------------------------- classify
TO_UPLOAD=(); VERIFIED_OLD=()
for rel in "${CANDS[@]}"; do
    st=${STATE["$rel|${SHA[$rel]}"]:-}
    if [[ $st == "true "* ]]; then VERIFIED_OLD+=("$rel"); else TO_UPLOAD+=("$rel"); fi
done

declare -A INFLIGHT_SET
if [[ -f $INFLIGHT ]]; then
    while IFS= read -r p; do [[ -n $p ]] && INFLIGHT_SET[$p]=1; done <"$INFLIGHT"
    say "found ${#INFLIGHT_SET[@]} path(s) in $INFLIGHT: a previous run did not finish"
fi

# ---------------------------------------------------------------- re-verification
# Verified files still present locally are listed on the remote again (hashes come with the listing:
# no download) when the last complete re-check is older than --reverify-every, or with --reverify.
# Cost: about one listing per hour directory on Drive, hence daily by default, not every timer run.
reverify_due=$REVERIFY
if ((reverify_due == 0)); then
    last=0
    if [[ -f $REVERIFY_STATE ]]; then read -r last <"$REVERIFY_STATE" || true; fi
    [[ $last =~ ^[0-9]+$ ]] || last=0
    ((NOW_S - last < REVERIFY_EVERY_S)) || reverify_due=1
fi
if ((reverify_due == 1)); then
    listed=1
    if ((${#VERIFIED_OLD[@]} > 0)); then
        say "re-verifying ${#VERIFIED_OLD[@]} verified file(s) still present locally against the remote ($HASH)"
        need=()
        for rel in "${VERIFIED_OLD[@]}"; do
            MD5[$rel]=${REC_MD5["$rel|${SHA[$rel]}"]:-}
            [[ -n ${MD5[$rel]} ]] || need+=("$rel")
        done
        md5_of "${need[@]}"
        printf '%s\n' "${VERIFIED_OLD[@]}" >"$TMP/reverify.list"
        R_SIZE=(); R_HASH=()
        remote_list "$TMP/reverify.list" "$TMP/reverify.lsf" || listed=0
        if ((listed == 1)); then
            load_listing "$TMP/reverify.lsf"
            still=()
            for rel in "${VERIFIED_OLD[@]}"; do
                check "$rel"
                if [[ $V_OK == true ]]; then
                    FRESH_OK[$rel]=1; still+=("$rel"); n_reverified=$((n_reverified + 1)); continue
                fi
                failed=1; n_revoked=$((n_revoked + 1)); n_mismatch=$((n_mismatch + 1))
                say "RE-VERIFICATION FAILED: $(rjoin "$rel") no longer matches the local file (remote ${R_SIZE[$rel]:-missing} bytes ${R_HASH[$rel]:-}, local ${SIZE[$rel]} bytes md5 ${MD5[$rel]}); recorded verified:false, local file kept"
                if [[ $DRY_RUN == 0 ]]; then
                    upload_record "$rel" 0 reverify
                    STATE["$rel|${SHA[$rel]}"]="false ${V_BY:--}"
                fi
                # Uploaded again below (after the bad copy is renamed aside, unless --no-repair).
                TO_UPLOAD+=("$rel")
            done
            VERIFIED_OLD=("${still[@]}")
        else
            failed=1; say "re-verification could not list the remote; retried next run"
        fi
    fi
    if ((listed == 1)); then
        reverify_ran=1
        if [[ $DRY_RUN == 0 ]]; then
            flush_records
            printf '%s\n' "$NOW_S" >"$REVERIFY_STATE.tmp" && mv "$REVERIFY_STATE.tmp" "$REVERIFY_STATE"
        fi
    fi
fi

# ---------------------------------------------------------------- upload
if ((${#TO_UPLOAD[@]} > 0)); then
    md5_of "${TO_UPLOAD[@]}"
    printf '%s\n' "${TO_UPLOAD[@]}" >"$TMP/upload.list"
    # Files that may already have a remote copy: our own unfinished uploads (inflight journal) and files
    # with an earlier, unverified record. A remote copy that differs is, for an inflight file, a torn
    # upload (rclone writes local, sftp and webdav in place; --immutable would refuse to replace it):
    # removed. Otherwise it is a bad copy of a file whose local bytes match its run manifest: renamed
    # aside to <path>.corrupt-<time> (kept as evidence, never deleted) unless --no-repair.
    pre=()
    for rel in "${TO_UPLOAD[@]}"; do
        if [[ -n ${INFLIGHT_SET[$rel]:-} || -n ${STATE["$rel|${SHA[$rel]}"]:-} ]]; then pre+=("$rel"); fi
    done
    if ((${#pre[@]} > 0)); then
        printf '%s\n' "${pre[@]}" >"$TMP/pre.list"
        R_SIZE=(); R_HASH=()
        if remote_list "$TMP/pre.list" "$TMP/pre.lsf"; then
            load_listing "$TMP/pre.lsf"
            for rel in "${pre[@]}"; do
                check "$rel"
                [[ -n ${R_SIZE[$rel]:-} && $V_OK == false ]] || continue
                rs=${R_SIZE[$rel]}; rh=${R_HASH[$rel]:-}
                if [[ -n ${INFLIGHT_SET[$rel]:-} ]]; then
                    if [[ $DRY_RUN == 1 ]]; then
                        say "dry-run: would remove the torn remote copy of $rel left by an interrupted run"
                    else
                        say "removing torn remote copy of $rel left by an interrupted run (remote $rs bytes, local ${SIZE[$rel]})"
                        "$RCLONE" deletefile "$(rjoin "$rel")" || say "warning: could not remove $(rjoin "$rel")"
                    fi
                    continue
                fi
                # A missing remote hash proves nothing: only a size or hash difference counts.
                if [[ $rs == "${SIZE[$rel]}" && ( $HASH == size || -z $rh ) ]]; then continue; fi
                if [[ $REPAIR == 0 ]]; then
                    say "remote copy of $rel differs (remote $rs bytes ${rh:-no-hash}) and --no-repair is set: --immutable will refuse to replace it (rclone exit 6)"
                    continue
                fi
                printf -v qs '%(%Y%m%dT%H%M%SZ)T' "${EPOCHREALTIME%.*}"
                q="$rel.corrupt-$qs"
                if [[ $DRY_RUN == 1 ]]; then
                    say "dry-run: would rename the bad remote copy of $rel to $q and upload it again"
                elif "$RCLONE" moveto "$(rjoin "$rel")" "$(rjoin "$q")" --tpslimit "$TPSLIMIT"; then
                    QUAR[$rel]=$q; n_quarantined=$((n_quarantined + 1))
                    say "QUARANTINED the bad remote copy of $rel (remote $rs bytes ${rh:-no-hash}) as $q (kept); uploading the local file again"
                else
                    failed=1; say "could not rename the bad remote copy $(rjoin "$rel") aside; --immutable will refuse to replace it"
                fi
            done
        fi
    fi
    if [[ $DRY_RUN == 1 ]]; then
        for rel in "${TO_UPLOAD[@]}"; do say "dry-run: would upload $rel (${SIZE[$rel]} bytes) to $(rjoin "$rel")"; done
    else
        # Journal first (fsynced), so that the next run knows which remote files may be torn.
        { [[ -f $INFLIGHT ]] && cat "$INFLIGHT"; cat "$TMP/upload.list"; } | sort -u >"$TMP/inflight.new"
        cp "$TMP/inflight.new" "$INFLIGHT.tmp" && sync "$INFLIGHT.tmp" && mv "$INFLIGHT.tmp" "$INFLIGHT"
        say "uploading ${#TO_UPLOAD[@]} file(s)"
        "$RCLONE" copy "$ROOT" "$REMOTE" --files-from-raw "$TMP/upload.list" --no-traverse \
            --immutable --checksum "${RC_FLAGS[@]}" || copy_rc=$?
        case $copy_rc in
            0) ;;
            6) say "rclone copy exit 6: a remote file exists and differs (immutable); see verification below" ;;
            7) say "rclone copy exit 7: fatal error, e.g. Google Drive's daily upload limit; the rest is retried next run" ;;
            *) say "rclone copy exit $copy_rc" ;;
        esac
        ((copy_rc == 0)) || failed=1
        # Verify what is on the remote now, file by file, and record it.
        listed=1
        remote_list "$TMP/upload.list" "$TMP/upload.lsf" || listed=0
        ((listed == 0)) || load_listing "$TMP/upload.lsf"
        for rel in "${TO_UPLOAD[@]}"; do
            if ((listed == 1)); then check "$rel"; else V_OK=false; V_BY=; V_RMD5=; fi
            upload_record "$rel" "$copy_rc" "" "${QUAR[$rel]:-}"
            if [[ $V_OK == true ]]; then
                n_verified=$((n_verified + 1)); FRESH_OK[$rel]=1
            else
                failed=1
                if [[ -n ${R_SIZE[$rel]:-} ]]; then
                    n_mismatch=$((n_mismatch + 1))
                    say "VERIFICATION FAILED: $(rjoin "$rel") does not match the local file (remote ${R_SIZE[$rel]} bytes ${R_HASH[$rel]:-no-hash}, local ${SIZE[$rel]} bytes md5 ${MD5[$rel]}); recorded verified:false"
                else
                    say "not on the remote after copy: $rel; recorded verified:false"
                fi
            fi
        done
        flush_records
        n_uploaded=${#TO_UPLOAD[@]}
        # Every file of the journal now has a record: the journal is done.
        rm -f "$INFLIGHT"
    fi
elif [[ -f $INFLIGHT && $DRY_RUN == 0 ]]; then
    rm -f "$INFLIGHT"
fi

# ---------------------------------------------------------------- retention
n_kept_size=0
if [[ $RETENTION != keep ]]; then
    RET_CUTOFF=$((NOW_S - RETENTION * 86400))
    DUE=()
    for rel in "${CANDS[@]}"; do
        ((MTIME[$rel] <= RET_CUTOFF)) || continue
        if [[ -n ${FRESH_OK[$rel]:-} ]]; then
            by=$HASH
        else
            st=${STATE["$rel|${SHA[$rel]}"]:-}
            [[ $st == "true "* ]] || continue
            by=${st#true }
        fi
        if [[ $by == size && $ALLOW_SIZE_DELETE != 1 ]]; then
            n_kept_size=$((n_kept_size + 1)); continue
        fi
        DUE+=("$rel")
    done
    if ((n_kept_size > 0)); then
        say "kept $n_kept_size file(s) past retention that are verified by size only (pass --allow-size-only-delete to delete them)"
    fi
    if ((${#DUE[@]} > 0)); then
        # Fresh proof: re-list the remote now for files not verified by this very run.
        recheck=()
        for rel in "${DUE[@]}"; do [[ -n ${FRESH_OK[$rel]:-} ]] || recheck+=("$rel"); done
        listed=1
        if ((${#recheck[@]} > 0)); then
            md5_of "${recheck[@]}"
            printf '%s\n' "${recheck[@]}" >"$TMP/recheck.list"
            R_SIZE=(); R_HASH=()
            remote_list "$TMP/recheck.list" "$TMP/recheck.lsf" || listed=0
            ((listed == 0)) || load_listing "$TMP/recheck.lsf"
        fi
        DELETE=()
        for rel in "${DUE[@]}"; do
            if [[ -z ${FRESH_OK[$rel]:-} ]]; then
                if ((listed == 0)); then failed=1; say "cannot re-verify $rel; kept"; continue; fi
                check "$rel"
                if [[ $V_OK != true || ( $V_BY == size && $ALLOW_SIZE_DELETE != 1 ) ]]; then
                    failed=1; n_mismatch=$((n_mismatch + 1))
                    if [[ $DRY_RUN == 1 ]]; then
                        say "dry-run: re-verification of $rel FAILED; would record verified:false and keep it"
                    else
                        upload_record "$rel" 0 retention
                        say "RE-VERIFICATION FAILED before deletion: $(rjoin "$rel") no longer matches (remote ${R_SIZE[$rel]:-missing} bytes ${R_HASH[$rel]:-}); recorded verified:false, local file kept"
                    fi
                    continue
                fi
            fi
            reason="retention: older than $RETENTION day(s), verified on the remote by $HASH in this run"
            if [[ $DRY_RUN == 1 ]]; then
                say "dry-run: would delete local $rel ($reason)"
                continue
            fi
            PENDING+=("local_delete"$'\t'"$rel"$'\t'"${SIZE[$rel]}"$'\t'"${SHA[$rel]}"$'\t'"$REMOTE"$'\t'"$reason")
            DELETE+=("$rel")
        done
        # Records first (appended and fsynced), then the unlinks: a crash in between leaves records for
        # files that still exist, which is harmless; an unrecorded deletion cannot happen.
        flush_records
        if ((${#DELETE[@]} > 0)); then
            (cd "$ROOT" && printf '%s\0' "${DELETE[@]}" | xargs -0 rm -f --)
            n_deleted=${#DELETE[@]}
        fi
    fi
fi

# ---------------------------------------------------------------- manifests
man_rc=0
if [[ $MANIFESTS == 1 && -d $MDIR ]]; then
    if [[ $DRY_RUN == 1 ]]; then
        say "dry-run: would copy manifests/*.json and manifests/*.jsonl to $(rjoin manifests) (without --immutable)"
    else
        # Every manifest (run-*.json, uploads.jsonl, recovered-files.jsonl, ...); never dot files (the
        # lock, the inflight journal, the re-verify state, temp files of atomic writes) or subdirectories.
        "$RCLONE" copy "$MDIR" "$(rjoin manifests)" --max-depth 1 --filter '- .*' --filter '+ *.json' \
            --filter '+ *.jsonl' --filter '- *' --checksum "${RC_FLAGS[@]}" || man_rc=$?
        if ((man_rc != 0)); then failed=1; say "copying manifests failed (rclone exit $man_rc)"; fi
    fi
fi

say "summary dry_run=$DRY_RUN candidates=${#CANDS[@]} already_verified=${#VERIFIED_OLD[@]} uploaded=$n_uploaded verified=$n_verified mismatched=$n_mismatch deleted=$n_deleted kept_size_only=$n_kept_size skipped_partial=$n_partial skipped_young=$n_young skipped_unknown=$n_unknown copy_exit=$copy_rc manifests_exit=$man_rc verify_by=$HASH local_mismatch=$n_local_bad unlisted=$n_unlisted reverify=$reverify_ran reverified=$n_reverified revoked=$n_revoked quarantined=$n_quarantined elapsed_s=$(($(date +%s) - START_S))"
if ((failed != 0)); then
    say "FAILED: see the messages above; nothing unverified was deleted"
    exit 1
fi
exit 0
