# shellcheck shell=sh
# It sources the user's environment (activate scripts, conda.sh, module init files),
# which only exist on the remote: nothing for shellcheck to follow.
# shellcheck disable=SC1090,SC1091
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# Variables set here are read by the other fragments of the same script.
# shellcheck disable=SC2034
find_conda_sh() {
    for root in ${CONDA_EXE:+"$(dirname "$(dirname "$CONDA_EXE")")"} \
            ${MAMBA_ROOT_PREFIX:+"$MAMBA_ROOT_PREFIX"} \
            "$HOME/miniforge3" "$HOME/mambaforge" "$HOME/miniconda3" "$HOME/anaconda3" \
            "$HOME/miniconda" "$HOME/anaconda" "$HOME/.miniforge3" "$HOME/.miniconda3" \
            /opt/conda /opt/miniforge3 /opt/miniconda3 /opt/anaconda3 \
            /usr/local/miniforge3 /usr/local/miniconda3 /usr/local/anaconda3 /usr/share/miniconda; do
        [ -f "$root/etc/profile.d/conda.sh" ] && { printf '%s' "$root/etc/profile.d/conda.sh"; return 0; }
    done
    c=$(command -v conda 2>/dev/null) || return 1
    root=$(dirname "$(dirname "$c")")
    [ -f "$root/etc/profile.d/conda.sh" ] && printf '%s' "$root/etc/profile.d/conda.sh"
}
activate_err() { tail -n 1 "$state/activate.err" 2>/dev/null | tr -d '\r'; }
# The environment's own code (activate scripts, hooks, module files, --env cmd:) runs with
# its stdout on stderr: only this script speaks the `labhop:` protocol on stdout.
activate() {
    : > "$state/activate.err"
    case $env_kind in
        "") env_prefix= ;;
        venv)
            remote_path "$env_value"; p=$resolved
            [ -f "$p/bin/activate" ] || fail "$exit_env_not_found" "no virtualenv at $p on $fail_host (bin/activate is missing); create it with python3 -m venv $p"
            VIRTUAL_ENV_DISABLE_PROMPT=1 . "$p/bin/activate" >&2 2>"$state/activate.err" \
                || fail "$exit_env_not_found" "activating venv $p failed: $(activate_err)"
            env_prefix=$p ;;
        conda|mamba)
            f=$(find_conda_sh) || fail "$exit_env_not_found" "conda not found on $fail_host: no etc/profile.d/conda.sh under \$CONDA_EXE or the usual install roots (~/miniforge3, ~/miniconda3, ~/anaconda3, /opt/conda)"
            . "$f" >&2 2>"$state/activate.err" || fail "$exit_env_not_found" "sourcing $f failed: $(activate_err)"
            conda activate "$env_value" >&2 2>"$state/activate.err" \
                || fail "$exit_env_not_found" "conda environment '$env_value' not found on $fail_host ($(activate_err)); list them with: conda env list"
            env_prefix=${CONDA_PREFIX:-} ;;
        micromamba)
            mm=${MAMBA_EXE:-$(command -v micromamba 2>/dev/null)}
            [ -n "$mm" ] || { [ -x "$HOME/.local/bin/micromamba" ] && mm=$HOME/.local/bin/micromamba; }
            [ -n "$mm" ] || fail "$exit_env_not_found" "micromamba not found on $fail_host (not on the login PATH, no \$MAMBA_EXE)"
            eval "$("$mm" shell hook --shell posix 2>"$state/activate.err")" >&2 \
                || fail "$exit_env_not_found" "micromamba shell hook failed: $(activate_err)"
            micromamba activate "$env_value" >&2 2>"$state/activate.err" \
                || fail "$exit_env_not_found" "micromamba environment '$env_value' not found on $fail_host ($(activate_err))"
            env_prefix=${CONDA_PREFIX:-} ;;
        module)
            if ! command -v module >/dev/null 2>&1; then
                for f in ${MODULESHOME:+"$MODULESHOME/init/sh"} ${LMOD_PKG:+"$LMOD_PKG/init/sh"} \
                        /usr/share/lmod/lmod/init/sh /etc/profile.d/lmod.sh \
                        /usr/share/modules/init/sh /etc/profile.d/modules.sh; do
                    [ -f "$f" ] && . "$f" >/dev/null 2>&1 && break
                done
            fi
            command -v module >/dev/null 2>&1 || fail "$exit_env_not_found" "the module command is not available on $fail_host (no Environment Modules or Lmod found)"
            # Split on commas only: with globbing off, module:'*' stays a literal name.
            old_ifs=$IFS; IFS=,; set -f
            # shellcheck disable=SC2086  # the split is the point
            set -- $env_value; set +f; IFS=$old_ifs
            module load "$@" >&2 2>"$state/activate.err" \
                || fail "$exit_env_not_found" "module load $* failed on $fail_host: $(activate_err)"
            env_prefix= ;;
        cmd)
            # `command`: a failing special builtin in the user's text (dash's `.` of a file
            # that is not there) returns its status instead of ending this script, so its
            # own error text reaches the user.
            command eval "$env_value" >&2 2>"$state/activate.err"
            rc=$?
            if [ "$rc" -ne 0 ]; then
                why=$(activate_err)
                fail "$exit_env_not_found" "the --env command failed on $fail_host: ${why:-it exited with status $rc}"
            fi
            env_prefix= ;;
    esac
}
