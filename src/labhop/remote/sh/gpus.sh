# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
find_smi() {
    command -v nvidia-smi 2>/dev/null && return 0
    # Containers and WSL keep it off the usual PATH.
    for p in /usr/bin/nvidia-smi /usr/local/nvidia/bin/nvidia-smi /usr/lib/wsl/lib/nvidia-smi; do
        [ -x "$p" ] && { printf '%s\n' "$p"; return 0; }
    done
    return 1
}
smi() {
    if command -v timeout >/dev/null 2>&1; then
        timeout "$smi_timeout" "$smi_path" "$@" </dev/null
    else
        "$smi_path" "$@" </dev/null
    fi
}
server_id_of() {
    tr '\0' '\n' < "/proc/$1/environ" 2>/dev/null | sed -n 's/^LABHOP_SERVER_ID=//p' | head -n 1
}
# One `labhop:KEY=` line per line of $2, empty ones too: a process name that holds a
# line break comes back whole (see parse_processes).
each() { printf '%s\n' "$2" | while IFS= read -r line; do out "$1" "$line"; done; }
main() {
    out user "$(id -un)"
    smi_path=$(find_smi) || { out nvidia-smi missing; exit 0; }
    gpus=$(smi "--query-gpu=$gpu_fields" --format=csv,noheader,nounits 2>&1)
    status=$?
    if [ "$status" -ne 0 ]; then
        out nvidia-smi failed
        out status "$status"
        out message "$(printf '%s\n' "$gpus" | grep -v '^[[:space:]]*$' | head -n 1)"
        exit 0
    fi
    out nvidia-smi ok
    each gpu "$gpus"
    apps=$(smi "--query-compute-apps=$app_fields" --format=csv,noheader,nounits 2>/dev/null)
    each app "$apps"
    # Who runs each GPU process, and which labhop server it belongs to: kernels carry
    # their server's id in the environment (readable for our own processes only).
    for pid in $(printf '%s\n' "$apps" | cut -d, -f2 | sort -u); do
        case $pid in ""|*[!0-9]*) continue ;; esac
        user=$(stat -c %U "/proc/$pid" 2>/dev/null) || user=$(ps -o user= -p "$pid" 2>/dev/null)
        [ -n "$user" ] && out owner "$pid $user"
        sid=
        [ -r "/proc/$pid/environ" ] && sid=$(server_id_of "$pid")
        [ -n "$sid" ] && out sid "$pid $sid"
    done
    for d in "$(state_root)"/*; do
        [ -f "$d/id" ] && out server "$(read_file "$d/id") ${d##*/}"
    done
    exit 0
}
