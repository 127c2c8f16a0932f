#!/usr/bin/env bash
# uninstall.sh: remove pm-archive's code and units, keeping data and config. Usage text = spec.

USAGE='uninstall.sh: stop pm-archive and remove its code and systemd units

Usage:
  sudo /opt/pm-archive/scripts/uninstall.sh
  scripts/uninstall.sh --root DIR
  scripts/uninstall.sh --help

What it does:
  - stops and disables every unit install.sh installed (systemctl disable --now), taken
    from /opt/pm-archive/installed-units.txt (or, if that is gone, the units in systemd/
    beside this script and the known unit names);
  - removes those unit files from /etc/systemd/system and runs systemctl daemon-reload;
  - removes /opt/pm-archive (binaries, pipelines, scripts, shipped defaults, docs).
It NEVER deletes:
  - the archive and all collected data:   /var/lib/pm-archive
  - your configuration:                   /etc/pm-archive
  - the system user pm-archive (it owns the data), nor drop-ins in <unit>.d/ directories.
It prints where they remain and how you could remove them yourself.

Options:
  --root DIR   act on the staging directory DIR (made by install.sh --root DIR) instead
               of /; systemctl is not run, its steps are printed as "dry-run: would ...".

Exit status: 0 done (also when nothing was installed); 2 bad arguments, not root without
--root, or a failed step.'

PROG=uninstall.sh
KNOWN_UNITS="polymarket-orderbook-collector.service pm-archive-health.service pm-archive-health.timer pm-archive-upload.service pm-archive-upload.timer"
ROOT=""
DRY=0

log() { printf '%s\n' "$*"; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 2
}
T() { printf '%s%s' "$ROOT" "$1"; }

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
        *) die "unknown argument '$1' (see --help)" ;;
        esac
        shift
    done
    if [ -n "$ROOT" ]; then
        ROOT=$(cd -- "$ROOT" 2>/dev/null && pwd) || die "--root $ROOT is not a directory"
        [ "$ROOT" != / ] || die "--root / is a real uninstall: run without --root"
        DRY=1
    elif [ "$(id -u)" -ne 0 ]; then
        die "needs root: run it with sudo (or use --root DIR on a staging directory)"
    fi
}

# The units to remove, one per line, each a plain file name.
unit_list() {
    local list f here
    list=$(T /opt/pm-archive/installed-units.txt)
    {
        [ -f "$list" ] && cat -- "$list"
        here=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
        for f in "$here"/../systemd/*.service "$here"/../systemd/*.timer; do
            [ -f "$f" ] && basename -- "$f"
        done
        # shellcheck disable=SC2086  # KNOWN_UNITS is a space-separated list: one unit a line
        printf '%s\n' $KNOWN_UNITS
    } | grep -E '^[A-Za-z0-9@._-]+\.(service|timer|path|socket|target)$' | sort -u
}

main() {
    local u t removed=0 systemd_up=0
    parse_args "$@"
    if [ "$DRY" -eq 1 ]; then
        log "pm-archive uninstall in staging root $ROOT (no system changes)"
    else
        log "pm-archive uninstall"
        [ -d /run/systemd/system ] && systemd_up=1
    fi
    for u in $(unit_list); do
        t=$(T "/etc/systemd/system/$u")
        [ -e "$t" ] || continue
        if [ "$DRY" -eq 1 ]; then
            log "  dry-run: would run systemctl disable --now $u"
        elif [ "$systemd_up" -eq 1 ]; then
            systemctl disable --now "$u" >/dev/null 2>&1 || log "  warning: systemctl disable --now $u failed (continuing)"
            log "  stopped and disabled $u"
        fi
        rm -f -- "$t" || die "cannot remove $t"
        log "  removed /etc/systemd/system/$u"
        removed=$((removed + 1))
        [ -d "$t.d" ] && log "  kept your drop-ins in /etc/systemd/system/$u.d/"
    done
    if [ "$removed" -gt 0 ]; then
        if [ "$DRY" -eq 1 ]; then
            log "  dry-run: would run systemctl daemon-reload"
        elif [ "$systemd_up" -eq 1 ]; then
            systemctl daemon-reload || log "  warning: systemctl daemon-reload failed"
            log "  ran systemctl daemon-reload"
        fi
    else
        log "  no pm-archive units installed"
    fi
    t=$(T /opt/pm-archive)
    if [ -d "$t" ]; then
        # A fixed path under the (validated) root, never a value from a setting.
        rm -rf -- "${t:?}" || die "cannot remove $t"
        log "  removed /opt/pm-archive"
    else
        log "  /opt/pm-archive not present"
    fi
    log ""
    log "Kept (never deleted by this script):"
    [ -d "$(T /var/lib/pm-archive)" ] && log "  archived data:  $(T /var/lib/pm-archive)  (upload or copy it before deleting it)"
    [ -d "$(T /etc/pm-archive)" ] && log "  configuration:  $(T /etc/pm-archive)"
    log "  system user pm-archive (owns the data)"
    log "To remove them too, by hand and only when the data is safe elsewhere:"
    log "  sudo rm -r /var/lib/pm-archive /etc/pm-archive && sudo userdel pm-archive"
}

main "$@"
