# shellcheck shell=sh
main() {
    state=$(state_root)/$name
    [ -d "$state" ] || { out known 0; exit 0; }
    out known 1
    pid=$(read_file "$state/pid")
    if is_ours "$pid" "$(read_file "$state/id")" "$state"; then out alive 1; else out alive 0; fi
    load "$state/endpoint" || got=
    case $got in
        unix:*) if [ -S "${got#unix:}" ]; then out listening 1; else out listening 0; fi ;;
    esac
    if [ "$with_log" = 1 ]; then log_tail "$state/log"; fi
}
