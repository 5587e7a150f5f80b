# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# A server on this host (see status.sh): is it alive, is its socket there.
status_fields() {
    pid=$(read_file "$state/pid")
    if is_ours "$pid" "$(read_file "$state/id")" "$state"; then out alive 1; else out alive 0; fi
    load "$state/endpoint" || got=
    case $got in
        unix:*) if [ -S "${got#unix:}" ]; then out listening 1; else out listening 0; fi ;;
    esac
}
