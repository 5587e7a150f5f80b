# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
sweep() {
    # Kernels and their children carry the server id in their environment; end any
    # that outlived the server (a kernel's own children are not covered by Jupyter).
    for d in "$proc_dir"/[0-9]*; do
        p=${d#"$proc_dir"/}
        [ "$p" = "$$" ] && continue
        [ -r "$d/environ" ] || continue
        tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qx "LABHOP_SERVER_ID=$id" \
            && kill "-$1" "$p" 2>/dev/null && out swept "$p"
    done
}
wait_gone() {
    n=0
    while is_ours "$pid" "$id" "$state"; do
        [ "$n" -ge "$1" ] && return 1
        nap; n=$((n + 1))
    done
    return 0
}
main() {
    state=$(state_root)/$name
    # Another backend's server is that backend's to stop (its own stop script).
    if [ ! -d "$state" ] || [ "$(entry_kind "$state")" != host ]; then out known 0; exit 0; fi
    id=$(read_file "$state/id")
    if [ -n "$expect_id" ]; then
        # Only the launch with this id may be stopped; it may still be activating.
        [ "$id" = "$expect_id" ] || { out known 0; exit 0; }
        n=0
        while [ -d "$state" ] && [ ! -s "$state/pid" ] && [ "$n" -lt 150 ]; do nap; n=$((n + 1)); done
        [ -d "$state" ] || { out known 0; exit 0; }
    fi
    out known 1
    pid=$(read_file "$state/pid")
    if is_ours "$pid" "$id" "$state"; then
        out was_running 1
        # SIGTERM is Jupyter's own clean shutdown (kernels shut down, files removed); a
        # SIGTERM can be lost while Jupyter writes to its log, so SIGKILL if it hangs.
        kill -TERM "$pid" 2>/dev/null && out signal TERM
        if ! wait_gone "$term_ticks"; then
            kill -KILL "$pid" 2>/dev/null && out signal KILL
            wait_gone 25
        fi
    else
        out was_running 0
    fi
    if [ -r "$proc_dir/self/environ" ] && [ -n "$id" ]; then
        sweep TERM
        nap
        sweep KILL
    fi
    end_owners "$state"
    # The socket path the launch recorded, never a guess: it may be in a fallback dir.
    load "$state/endpoint" || got=
    case $got in unix:*) rm -f "${got#unix:}" ;; esac
    drop_rundir "$state" "$id"
    rm -rf "$state"
    out stopped 1
}
