# shellcheck shell=bash
# read_env_file.sh — sourced (never run) by pipelines/collect.sh and scripts/run_polymarket_collector_cycle.sh.
#
# pm_read_env_file FILE
#   Reads FILE as DATA with the rules of systemd's EnvironmentFile= (systemd.exec(5); the parser is
#   systemd's src/basic/env-file.c) and exports every KEY=VALUE it assigns; a value in the file wins over
#   the calling environment, as it does under systemd. Nothing in the file is ever run or expanded:
#   `$(…)`, backticks and `$VAR` stay literal text.
#   - Empty lines and lines whose first non-blank character is '#' or ';' are comments.
#   - KEY=VALUE; blanks around KEY and around an unquoted VALUE are dropped. A '#' inside a value is
#     part of the value: `PMARCHIVE_LABEL=vps-fra1 soak #1` is the label "vps-fra1 soak #1".
#   - Unquoted: a backslash keeps the next character ("\\" is one backslash); backslash-newline joins
#     the next line. Quotes after the first character of the value are kept as they are.
#   - '…' keeps everything up to the next ' verbatim (newlines included); "…" does too, except that
#     \" \\ \` \$ are unescaped, backslash-newline is dropped, and any other \x stays \x.
#   - A line without '=' is ignored; so is a key that is not a valid variable name (systemd ignores it
#     with a warning: so do we, on stderr).
#   Returns 0, or 2 with one line on stderr when FILE cannot be read.
pm_read_env_file() {
  local file=$1 content
  if [ -d "$file" ] || ! content=$(cat -- "$file" 2>/dev/null && printf x); then
    printf '%s: cannot read env file %s\n' "${PM_ENV_PROG:-read_env_file}" "$file" >&2
    return 2
  fi
  content=${content%x}
  local LC_ALL=C
  local n=${#content} i=0 c state=pre_key key="" value="" kws=-1 vws=-1
  _pm_env_push() {
    [ "$kws" -lt 0 ] || key=${key:0:kws}
    if [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
      export "$key=$value"
    else
      printf '%s: %s: ignoring invalid assignment to "%s" (as systemd does)\n' \
        "${PM_ENV_PROG:-read_env_file}" "$file" "$key" >&2
    fi
    key="" value="" kws=-1 vws=-1
  }
  while [ "$i" -lt "$n" ]; do
    c=${content:i:1}
    i=$((i + 1))
    case $state in
      pre_key)
        case $c in
          '#' | ';') state=comment ;;
          ' ' | $'\t' | $'\n' | $'\r') ;;
          *) state=key key=$c kws=-1 ;;
        esac ;;
      key)
        case $c in
          $'\n' | $'\r') state=pre_key key="" ;;
          '=') state=pre_value vws=-1 ;;
          ' ' | $'\t')
            [ "$kws" -ge 0 ] || kws=${#key}
            key+=$c ;;
          *) kws=-1 key+=$c ;;
        esac ;;
      pre_value)
        case $c in
          $'\n' | $'\r') state=pre_key; _pm_env_push ;;
          "'") state=squote ;;
          '"') state=dquote ;;
          "\\") state=value_escape ;;
          ' ' | $'\t') ;;
          *) state=value value+=$c ;;
        esac ;;
      value)
        case $c in
          $'\n' | $'\r')
            state=pre_key
            [ "$vws" -lt 0 ] || value=${value:0:vws}
            _pm_env_push ;;
          "\\") state=value_escape vws=-1 ;;
          ' ' | $'\t')
            [ "$vws" -ge 0 ] || vws=${#value}
            value+=$c ;;
          *) vws=-1 value+=$c ;;
        esac ;;
      value_escape)
        state=value
        case $c in $'\n' | $'\r') ;; *) value+=$c ;; esac ;;
      squote)
        if [ "$c" = "'" ]; then state=pre_value; else value+=$c; fi ;;
      dquote)
        case $c in
          '"') state=pre_value ;;
          "\\") state=dquote_escape ;;
          *) value+=$c ;;
        esac ;;
      dquote_escape)
        state=dquote
        case $c in
          '"' | "\\" | '`' | '$') value+=$c ;;
          $'\n') ;;
          *) value+="\\$c" ;;
        esac ;;
      comment)
        case $c in $'\n' | $'\r') state=pre_key ;; esac ;;
    esac
  done
  case $state in
    value)
      [ "$vws" -lt 0 ] || value=${value:0:vws}
      _pm_env_push ;;
    pre_value | value_escape | squote | dquote | dquote_escape) _pm_env_push ;;
  esac
  unset -f _pm_env_push
  return 0
}
