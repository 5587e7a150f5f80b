# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# The PATH the browser is to open ($open_path, as labhop.opening normalized it: relative
# to the server root, absolute, or ~/...). Checked before anything is created or started,
# so a typo leaves nothing behind. Prints where it is relative to the root (open_path;
# "." for the root itself) and whether it is a folder or a file (open_kind), which the
# app's URL needs. $1 is the state directory of the server already running under this
# name (the root it recorded is the one that counts), or "" for the --dir of a new one.
open_in() {
    [ -n "$open_path" ] || return 0
    if [ -n "$1" ] && load "$1/root"; then
        op_root=$got
    elif [ -n "$root_dir" ]; then
        remote_path "$root_dir"; op_root=$resolved
    else
        op_root=$HOME
    fi
    # A missing root is prepare_jupyter's to report (its own message, the same status).
    [ -d "$op_root" ] || return 0
    # The x keeps a newline that ends the folder's name (pwd adds one more).
    op_real_root=$(cd -- "$op_root" && pwd -P && printf x) || return 0
    op_real_root=${op_real_root%x}; op_real_root=${op_real_root%"$nl"}
    while :; do
        case $op_root in /) break ;; */) op_root=${op_root%/} ;; *) break ;; esac
    done
    # How it was typed: absolute (~ included), relative, or leading with `..` (which
    # labhop.opening leaves only at the start, of the path or after ~/).
    # shellcheck disable=SC2088  # a literal ~ as the user typed it, expanded here
    case $open_path in
        ..|../*) op_form=up ;;
        "~/.."|"~/../"*) op_form=absup ;;
        /*|"~"|"~/"*) op_form=abs ;;
        *) op_form=rel ;;
    esac
    case $op_form in
        abs*) remote_path "$open_path"; op_target=$resolved ;;
        *) op_target=$op_real_root/$open_path ;;
    esac
    if [ -d "$op_target" ]; then op_kind=dir
    elif [ -e "$op_target" ]; then op_kind='file'
    elif [ "$op_form" = rel ] || [ "$op_form" = up ]; then
        fail "$exit_root_dir_missing" "no such file or folder on $fail_host: $open_path (relative to the server root $op_real_root)"
    else
        fail "$exit_root_dir_missing" "no such file or folder on $fail_host: $open_path"
    fi
    # --dir is a boundary: where the path really leads, through every symlink (the root
    # is a real path too), must be inside the root, whatever its spelling.
    if [ "$op_kind" = dir ]; then op_real=$(cd -P -- "$op_target" && pwd -P && printf x)
    else op_real=$(real_file "$op_target" && printf x); fi || op_real=x
    op_real=${op_real%x}; op_real=${op_real%"$nl"}
    open_under "$op_real_root" "$op_real" \
        || fail "$exit_root_dir_missing" "$open_path is outside the server root $op_real_root on $fail_host; PATH must be inside --dir"
    # The URL names it as typed where that is inside the root (the browser shows what the
    # user asked for); a path that leads up and back in is named by where it leads.
    case $op_form in
        rel) op_rel=$open_path ;;
        abs) open_under "$op_root" "$op_target" || open_under "$op_real_root" "$op_target" \
                || open_under "$op_real_root" "$op_real" ;;
    esac
    out open_path "$op_rel"
    out open_kind "$op_kind"
}
# The real path of file $1: the folder it is in through symlinks, and the file itself
# followed when it is a symlink (to a file elsewhere), at most 40 links deep.
real_file() {
    rf_path=$1 rf_n=0
    while [ -L "$rf_path" ]; do
        [ "$rf_n" -lt 40 ] || return 1
        rf_link=$(readlink -- "$rf_path" && printf x) || return 1
        rf_link=${rf_link%x}; rf_link=${rf_link%"$nl"}
        case $rf_link in /*) rf_path=$rf_link ;; *) rf_path=${rf_path%/*}/$rf_link ;; esac
        rf_n=$((rf_n + 1))
    done
    rf_dir=$(cd -P -- "${rf_path%/*}/" && pwd -P && printf x) || return 1
    rf_dir=${rf_dir%x}; rf_dir=${rf_dir%"$nl"}
    printf '%s/%s' "${rf_dir%/}" "${rf_path##*/}"
}
# Sets $op_rel to path $2 relative to the folder $1 ("." for $1 itself); false when $2
# is not inside $1.
open_under() {
    case $1 in /) op_under=/ ;; *) op_under=$1/ ;; esac
    case $2 in
        "$1") op_rel=. ;;
        "$op_under"*) op_rel=${2#"$op_under"} ;;
        *) return 1 ;;
    esac
}
