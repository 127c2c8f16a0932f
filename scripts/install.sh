#!/usr/bin/env bash
# install.sh: install (or upgrade) pm-archive on a Debian VPS. The usage text is the spec.

USAGE='install.sh: install or upgrade pm-archive under systemd (idempotent)

Usage:
  sudo scripts/install.sh [--bin-dir DIR]
  scripts/install.sh --root DIR [--bin-dir DIR]
  scripts/install.sh --help

Options:
  --bin-dir DIR  copy prebuilt binaries from DIR (e.g. target/release after `cargo build
                 --release` as your own user). Without it the script runs
                 `cargo build --release --locked` in the source tree first.
  --root DIR     install into the staging directory DIR instead of / (for tests and
                 for inspecting what would be installed). Nothing outside DIR changes:
                 no user is created, no ownership is changed, systemctl is not run;
                 those steps are printed as "dry-run: would ...".

What it does (every step is skipped when already in place, and says "unchanged"):
  - system user and group pm-archive (no login, home /var/lib/pm-archive);
  - /opt/pm-archive/bin       the binaries: pm-markets pm-books jsonl-rotate manifest
                              pm-normalize pm-probe pm-stream pm-rebuild
  - /opt/pm-archive/pipelines pipelines/* of the source tree (collect.sh)
  - /opt/pm-archive/scripts   scripts/*.sh (the cycle script, uninstall.sh, uploader ...)
  - /opt/pm-archive/config    pristine copies of config/* (the shipped defaults)
  - /opt/pm-archive/docs      docs/*.md
  - /etc/systemd/system       every unit in systemd/ (*.service *.timer *.path *.socket)
  - /etc/pm-archive/<name>.env from each config/<name>.example.env (a ".vps" suffix is
                              dropped, and polymarket_collector becomes collector.env; a
                              <name>.example.env that has a .vps variant is skipped);
                              an existing file you edited is never overwritten: the new
                              default is written beside it as <name>.env.new; a file you
                              never edited is updated to the new default;
  - /var/lib/pm-archive/archive  the archive (owned by pm-archive, mode 0750), and
    /var/lib/pm-archive/rclone   (mode 0700) when the uploader unit is present;
  - `systemctl daemon-reload` when a unit changed.
It never enables, starts or restarts a unit; it prints the commands to do so.

Exit status: 0 done (also when nothing changed); 2 bad arguments, missing source files or
binaries, not root without --root, or a failed step.'

PROG=install.sh
USER_NAME=pm-archive
BINARIES="pm-markets pm-books jsonl-rotate manifest pm-normalize pm-probe pm-stream pm-rebuild pm-trades pm-tradeset"
CHANGED=0
UNCHANGED=0
UNITS_CHANGED=0
CODE_CHANGED=0
ROOT=""
DRY=0

log() { printf '%s\n' "$*"; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 2
}

# Path inside the target (the staging root or /).
T() { printf '%s%s' "$ROOT" "$1"; }

changed() {
    CHANGED=$((CHANGED + 1))
    log "  $1 $2"
}
unchanged() {
    UNCHANGED=$((UNCHANGED + 1))
    log "  unchanged $1"
}
dry() { log "  dry-run: would $*"; }

# Maps config/<x>.example.env to the name under /etc/pm-archive.
env_target_name() {
    local b=${1%.example.env}
    b=${b%.vps}
    case $b in polymarket_collector) b=collector ;; esac
    printf '%s.env' "$b"
}

# chown that only acts for a real install.
own() {
    [ "$DRY" -eq 1 ] && return 0
    chown "$1" "$2" || die "chown $1 $2 failed"
}

# ensure_dir PATH MODE OWNER:GROUP
ensure_dir() {
    local p=$1 mode=$2 owner=$3 t
    t=$(T "$p")
    if [ ! -d "$t" ]; then
        mkdir -p -- "$t" || die "cannot create $t"
        chmod "$mode" "$t" || die "chmod $t failed"
        own "$owner" "$t"
        changed created "$p/"
        return
    fi
    if [ "$(stat -c %a "$t")" != "${mode#0}" ] ||
        { [ "$DRY" -eq 0 ] && [ "$(stat -c %U:%G "$t")" != "$owner" ]; }; then
        chmod "$mode" "$t" || die "chmod $t failed"
        own "$owner" "$t"
        changed "fixed mode/owner of" "$p/"
        return
    fi
    unchanged "$p/"
}

# same_file SRC DEST MODE: true when DEST has SRC's bytes and the mode.
same_file() {
    [ -f "$2" ] && cmp -s -- "$1" "$2" && [ "$(stat -c %a "$2")" = "${3#0}" ]
}

# put_file SRC DEST MODE OWNER:GROUP: atomic copy (temp file + rename, so a running
# binary or script is replaced, never rewritten in place). Returns 0 if it changed.
put_file() {
    local src=$1 p=$2 mode=$3 owner=$4 t verb=installed
    t=$(T "$p")
    if same_file "$src" "$t" "$mode" &&
        { [ "$DRY" -eq 1 ] || [ "$(stat -c %U:%G "$t")" = "$owner" ]; }; then
        unchanged "$p"
        return 1
    fi
    [ -e "$t" ] && verb=updated
    cp -- "$src" "$t.tmp.$$" || die "cannot write $t.tmp.$$"
    chmod "$mode" "$t.tmp.$$" || die "chmod $t.tmp.$$ failed"
    own "$owner" "$t.tmp.$$"
    mv -f -- "$t.tmp.$$" "$t" || die "cannot rename $t.tmp.$$ to $t"
    changed "$verb" "$p"
    return 0
}

# put_config SRC DEST PRISTINE: installs an operator-editable config file.
put_config() {
    local src=$1 p=$2 pristine=$3 t
    t=$(T "$p")
    if [ ! -e "$t" ]; then
        put_file "$src" "$p" 0640 "root:$USER_NAME" || true
        return
    fi
    if cmp -s -- "$src" "$t"; then
        unchanged "$p"
        if [ -e "$t.new" ] && cmp -s -- "$src" "$t.new"; then
            rm -f -- "$t.new"
            changed "removed (identical to $p)" "$p.new"
        fi
        return
    fi
    if [ -f "$pristine" ] && cmp -s -- "$pristine" "$t"; then
        # Still the previously shipped default: the operator never edited it.
        put_file "$src" "$p" 0640 "root:$USER_NAME" || true
        log "    (you had not edited it, so it now has the new defaults)"
        return
    fi
    log "  kept $p (edited by you; not overwritten)"
    UNCHANGED=$((UNCHANGED + 1))
    if [ -f "$pristine" ] && cmp -s -- "$pristine" "$src"; then
        # The shipped defaults did not change since the last install: nothing to merge.
        return
    fi
    if put_file "$src" "$p.new" 0640 "root:$USER_NAME"; then
        log "    new defaults are in $p.new: compare with  diff $p $p.new  and merge by hand"
    fi
}

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
        -h | --help)
            printf '%s\n' "$USAGE"
            exit 0
            ;;
        --root)
            [ $# -ge 2 ] && [ -n "$2" ] || die "--root needs a directory"
            ROOT=$2
            shift
            ;;
        --root=*) ROOT=${1#--root=} ;;
        --bin-dir)
            [ $# -ge 2 ] && [ -n "$2" ] || die "--bin-dir needs a directory"
            BIN_DIR=$2
            shift
            ;;
        --bin-dir=*) BIN_DIR=${1#--bin-dir=} ;;
        *) die "unknown argument '$1' (see --help)" ;;
        esac
        shift
    done
}

preflight() {
    local b
    if [ -n "$ROOT" ]; then
        mkdir -p -- "$ROOT" || die "cannot create staging root $ROOT"
        ROOT=$(cd -- "$ROOT" && pwd) || die "bad staging root"
        [ "$ROOT" != / ] || die "--root / is a real install: run without --root"
        DRY=1
    elif [ "$(id -u)" -ne 0 ]; then
        die "a real install needs root: run it with sudo (or use --root DIR to stage it)"
    fi
    [ -f "$SRC/systemd/polymarket-orderbook-collector.service" ] || die "$SRC does not look like the pm-archive source tree (systemd/ missing)"
    [ -f "$SRC/config/polymarket_collector.vps.example.env" ] || die "config/polymarket_collector.vps.example.env missing in $SRC"
    [ -x "$SRC/scripts/run_polymarket_collector_cycle.sh" ] || die "scripts/run_polymarket_collector_cycle.sh missing in $SRC"
    [ -x "$SRC/pipelines/collect.sh" ] || die "pipelines/collect.sh missing or not executable in $SRC"
    if [ -z "${BIN_DIR:-}" ]; then
        command -v cargo >/dev/null 2>&1 ||
            die "cargo not found. Build first as your own user (cargo build --release) and run: sudo scripts/install.sh --bin-dir target/release"
        log "building: cargo build --release --locked (in $SRC)"
        (cd -- "$SRC" && cargo build --release --locked) || die "cargo build failed"
        BIN_DIR=$SRC/target/release
    fi
    BIN_DIR=$(cd -- "$BIN_DIR" 2>/dev/null && pwd) || die "--bin-dir $BIN_DIR is not a directory"
    for b in $BINARIES; do
        [ -x "$BIN_DIR/$b" ] || die "binary $BIN_DIR/$b missing or not executable"
    done
}

ensure_user() {
    local cmd="useradd --system --user-group --home-dir /var/lib/pm-archive --no-create-home --shell /usr/sbin/nologin --comment 'pm-archive collector' $USER_NAME"
    if [ "$DRY" -eq 1 ]; then
        dry "ensure system user $USER_NAME exists ($cmd)"
        return
    fi
    if getent passwd "$USER_NAME" >/dev/null; then
        unchanged "user $USER_NAME"
        return
    fi
    useradd --system --user-group --home-dir /var/lib/pm-archive --no-create-home \
        --shell /usr/sbin/nologin --comment 'pm-archive collector' "$USER_NAME" ||
        die "useradd $USER_NAME failed"
    changed created "system user $USER_NAME"
}

install_code() {
    local f b mode
    for b in $BINARIES; do
        put_file "$BIN_DIR/$b" "/opt/pm-archive/bin/$b" 0755 root:root && CODE_CHANGED=1
    done
    for f in "$SRC"/pipelines/*; do
        [ -f "$f" ] || continue
        mode=0644
        [ -x "$f" ] && mode=0755
        put_file "$f" "/opt/pm-archive/pipelines/$(basename -- "$f")" "$mode" root:root && CODE_CHANGED=1
    done
    for f in "$SRC"/scripts/*.sh; do
        [ -f "$f" ] || continue
        put_file "$f" "/opt/pm-archive/scripts/$(basename -- "$f")" 0755 root:root && CODE_CHANGED=1
    done
    for f in "$SRC"/docs/*.md; do
        [ -f "$f" ] || continue
        put_file "$f" "/opt/pm-archive/docs/$(basename -- "$f")" 0644 root:root
    done
}

install_config() {
    local f name pristine
    # Live configs first: put_config compares with the previously shipped pristine copy.
    for f in "$SRC"/config/*.example.env; do
        [ -f "$f" ] || continue
        # <x>.example.env beside a <x>.vps.example.env is the development example (repo
        # paths); only the .vps variant becomes the live config. Both are kept in
        # /opt/pm-archive/config for reference.
        case $f in *.vps.example.env) ;; *) [ -f "${f%.example.env}.vps.example.env" ] && continue ;; esac
        name=$(env_target_name "$(basename -- "$f")")
        pristine=$(T "/opt/pm-archive/config/$(basename -- "$f")")
        put_config "$f" "/etc/pm-archive/$name" "$pristine"
    done
    for f in "$SRC"/config/*; do
        [ -f "$f" ] || continue
        put_file "$f" "/opt/pm-archive/config/$(basename -- "$f")" 0644 root:root
    done
}

install_units() {
    local f list
    list=$(mktemp) || die "mktemp failed"
    for f in "$SRC"/systemd/*; do
        [ -f "$f" ] || continue
        case $f in *.service | *.timer | *.path | *.socket | *.target) ;; *) continue ;; esac
        put_file "$f" "/etc/systemd/system/$(basename -- "$f")" 0644 root:root && UNITS_CHANGED=1
        basename -- "$f" >>"$list"
    done
    # The list uninstall.sh uses to know which units are ours.
    sort -o "$list" "$list"
    put_file "$list" /opt/pm-archive/installed-units.txt 0644 root:root
    rm -f -- "$list"
    if [ "$UNITS_CHANGED" -eq 0 ]; then
        log "  unchanged units: no daemon-reload needed"
    elif [ "$DRY" -eq 1 ]; then
        dry "run systemctl daemon-reload"
    elif [ -d /run/systemd/system ]; then
        systemctl daemon-reload || die "systemctl daemon-reload failed"
        log "  ran systemctl daemon-reload"
    else
        log "  warning: systemd is not running here; run systemctl daemon-reload on the target"
    fi
}

next_steps() {
    local active=0
    if [ "$DRY" -eq 0 ] && [ -d /run/systemd/system ] &&
        systemctl is-active --quiet polymarket-orderbook-collector.service; then
        active=1
    fi
    log ""
    if [ "$CHANGED" -eq 0 ]; then
        log "summary: 0 changed, $UNCHANGED unchanged: nothing changed"
    else
        log "summary: $CHANGED changed, $UNCHANGED unchanged"
    fi
    [ "$DRY" -eq 1 ] && log "(staged under $ROOT; the real system was not touched)"
    if [ "$active" -eq 1 ] && [ "$CODE_CHANGED$UNITS_CHANGED" != 00 ]; then
        log ""
        log "The collector is running the old version. Restart it (it seals its files on stop):"
        log "  sudo systemctl restart polymarket-orderbook-collector"
    fi
    log ""
    log "Next steps:"
    log "  1. review the settings:   sudoedit /etc/pm-archive/collector.env"
    log "  2. start at boot and now: sudo systemctl enable --now polymarket-orderbook-collector"
    log "  3. optional health check: sudo systemctl enable --now pm-archive-health.timer"
    log "  4. watch the logs:        journalctl -u polymarket-orderbook-collector -f"
    log "  5. check the archive:     sudo -u pm-archive /opt/pm-archive/bin/manifest status /var/lib/pm-archive/archive"
    if [ -f "$SRC/systemd/pm-archive-upload.service" ]; then
        log "  6. offload to Google Drive (optional; docs/GOOGLE_DRIVE_OFFLOAD.md):"
        log "     a. create the rclone remote as pm-archive: /opt/pm-archive/config/rclone.example.md"
        log "        (config file /var/lib/pm-archive/rclone/rclone.conf)"
        log "     b. set PMARCHIVE_REMOTE (and later PMARCHIVE_RETENTION_DAYS): sudoedit /etc/pm-archive/uploader.env"
        log "     c. try it:  sudo -u pm-archive env RCLONE_CONFIG=/var/lib/pm-archive/rclone/rclone.conf \\"
        log "                 /opt/pm-archive/scripts/upload_archive_rclone.sh --dry-run"
        log "     d. enable:  sudo systemctl enable --now pm-archive-upload.timer"
        log "                 (journalctl -u pm-archive-upload; records in <archive>/manifests/uploads.jsonl)"
    fi
    log "  Guide: /opt/pm-archive/docs/VPS_DEPLOYMENT.md"
}

main() {
    SRC=$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/.." && pwd)
    parse_args "$@"
    preflight
    umask 022
    if [ "$DRY" -eq 1 ]; then
        log "pm-archive install from $SRC into staging root $ROOT (no system changes)"
    else
        log "pm-archive install from $SRC"
    fi
    log "binaries from $BIN_DIR"
    ensure_user
    ensure_dir /opt/pm-archive 0755 root:root
    ensure_dir /opt/pm-archive/bin 0755 root:root
    ensure_dir /opt/pm-archive/pipelines 0755 root:root
    ensure_dir /opt/pm-archive/scripts 0755 root:root
    ensure_dir /opt/pm-archive/config 0755 root:root
    ensure_dir /opt/pm-archive/docs 0755 root:root
    ensure_dir /etc/pm-archive 0750 "root:$USER_NAME"
    ensure_dir /etc/systemd/system 0755 root:root
    ensure_dir /var/lib/pm-archive 0750 "$USER_NAME:$USER_NAME"
    ensure_dir /var/lib/pm-archive/archive 0750 "$USER_NAME:$USER_NAME"
    if [ -f "$SRC/systemd/pm-archive-upload.service" ]; then
        # The uploader's ReadWritePaths= and rclone.conf (OAuth token refreshes) live here;
        # a ReadWritePaths= directory must exist or the unit fails to start.
        ensure_dir /var/lib/pm-archive/rclone 0700 "$USER_NAME:$USER_NAME"
    fi
    install_code
    install_config
    install_units
    next_steps
}

main "$@"
