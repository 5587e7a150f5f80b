# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
umask 077
proc_dir=/proc
# Where the node-local run directory lives (see run_base); a test points it elsewhere.
run_root=/tmp
# A cd that used $CDPATH would print where it went, into a $(...) that reads a path.
unset CDPATH
nl='
'
# The protocol (see parse_output): `out KEY VALUE` prints `labhop:KEY=VALUE` on a line of
# its own, VALUE escaped so that it is printable ASCII: every byte outside 0x20..0x7e, and
# `%` itself, becomes %XX (two upper-case hex digits). No value can end its line, so none
# can start a `labhop:` line of its own. Values made only of printable ASCII other than `%`
# (listed one by one: a range would follow the locale) need no escaping, and skip od/awk.
# shellcheck disable=SC2016  # an awk program: awk expands its $i, not sh
esc_awk='BEGIN { for (i = 32; i < 127; i++) c[i] = sprintf("%c", i); h = "0123456789ABCDEF" }
{ s = ""
  for (i = 1; i <= NF; i++) {
      b = $i + 0
      if (b >= 32 && b < 127 && b != 37) s = s c[b]
      else s = s "%" substr(h, int(b / 16) + 1, 1) substr(h, b % 16 + 1, 1)
  }
  printf "%s", s }'
safe_chars=' !"#$&'"'"'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghijklmnopqrstuvwxyz{|}~'
out() {
    case ${2-} in
        *[!"$safe_chars"]*)
            printf 'labhop:%s=' "$1"
            printf '%s' "$2" | od -A n -v -t u1 | awk "$esc_awk"
            printf '\n' ;;
        *) printf 'labhop:%s=%s\n' "$1" "${2-}" ;;
    esac
}
# Everything after this line is the raw tail of a log (see parse_output).
log_begin() { printf 'labhop:log-begin\n'; }
fail() {
    code=$1; shift; out error "$*"; out exit "$code"
    # A Slurm job's failure is read from its state by the login node (see job status).
    [ -n "${fail_file:-}" ] && printf '%s\n%s\n' "$code" "$*" > "$fail_file"
    # A launch that fails leaves no half-made state behind (see cleanup_dir in main).
    [ -n "${cleanup_dir:-}" ] && rm -rf "$cleanup_dir"
    [ -n "${cleanup_rundir:-}" ] && rmdir "$cleanup_rundir" 2>/dev/null
    exit "$code"
}
# Slurm's states in which a job still holds (or will hold) its server: squeue.LIVE_STATES,
# assigned in the header as $live_job_states.
live_job_state() { case " $live_job_states " in *" $1 "*) return 0 ;; esac; return 1; }
nap() { sleep 0.2 2>/dev/null || sleep 1; }
state_root() { printf '%s/labhop/servers' "${XDG_STATE_HOME:-$HOME/.local/state}"; }
# Values that must come back exactly (a folder's name may end in a newline, which $(...)
# would strip) are saved with one newline added and loaded into $got without it.
save() { printf '%s\n' "$2" > "$1"; }
load() {
    got=
    [ -f "$1" ] || return 1
    # Builtins only (no process per file): each line joined back with its newline; the
    # last one, which save() ended with the newline it added, needs none.
    ld_sep=''
    ld_line=''
    while IFS= read -r ld_line; do
        got=$got$ld_sep$ld_line
        ld_sep=$nl
        ld_line=
    done < "$1" 2>/dev/null
    [ -n "$ld_line" ] && got=$got$ld_sep$ld_line
    return 0
}
# The fields of /proc/PID/stat after the command name (which may hold spaces and `)`):
# state, ppid, ...; in $stat_rest, without a process.
stat_fields() {
    stat_rest=
    { IFS= read -r stat_rest; } < "$proc_dir/$1/stat" 2>/dev/null || return 1
    stat_rest=${stat_rest##*) }
}
out_file() { load "$2" || got=; out "$1" "$got"; }
# Sets variable $1 (a name of ours) to what file $2 holds without its trailing newlines, as
# `$(cat FILE)` would, but with no process: `ls` reads a dozen files a server.
file_into() {
    load "$2" || got=
    while [ "${got%"$nl"}" != "$got" ]; do got=${got%"$nl"}; done
    eval "$1=\$got"
}
# The numeric owner of $1 (not following a symlink), as `ls -n` shows it.
# shellcheck disable=SC2046  # split into ls's fields on purpose, with globbing off
owner_of() { set -f; set -- $(ls -ldn "$1" 2>/dev/null); set +f; printf '%s' "${3-}"; }
# True when $1 is a directory (not a symlink) that only we can enter: ours, mode 0700,
# no ACL (ls marks one with `+`).
private_dir() {
    [ -d "$1" ] && [ ! -L "$1" ] && [ "$(owner_of "$1")" = "$(id -u)" ] || return 1
    case $(ls -ldn "$1" 2>/dev/null) in "drwx------ "*|"drwx------. "*|"drwx------@ "*) return 0 ;; esac
    return 1
}
# Node-local, private: a socket on a shared home cannot be reached from other nodes, and
# $XDG_RUNTIME_DIR is deleted by logind when the user's last session ends, which would
# take the socket of a server that is meant to outlive this connection with it.
# $run_root/labhop-UID when that is a private directory of ours; when someone else took
# that name first (or it is a symlink, or not private), a fresh directory whose name
# cannot be guessed. Each launch records the one it got (see rundir_of).
run_base() {
    d=$run_root/labhop-$(id -u)
    mkdir -m 700 "$d" 2>/dev/null
    [ -d "$d" ] && [ ! -L "$d" ] && [ "$(owner_of "$d")" = "$(id -u)" ] && chmod 700 "$d" 2>/dev/null
    private_dir "$d" && { printf '%s' "$d"; return 0; }
    d=$(mktemp -d "$run_root/labhop-$(id -u).XXXXXXXX" 2>/dev/null) || {
        d=$run_root/labhop-$(id -u).$(od -A n -N 8 -t x1 /dev/urandom 2>/dev/null | tr -d ' \n')
        mkdir -m 700 "$d" 2>/dev/null || return 1
    }
    private_dir "$d" || return 1
    printf '%s' "$d"
}
# Sets $rundir to the run directory the server of state $1 recorded (launches before
# labhop recorded it used the usual one). Only a directory right under $run_root named
# like ours is believed.
rundir_of() {
    base=$run_root/labhop-$(id -u)
    load "$1/rundir" || got=
    case $got in "$base"|"$base".*) rundir=$got ;; *) rundir=$base ;; esac
    case ${rundir#"$base"} in *"/"*|*"$nl"*) rundir=$base ;; esac
}
# Remove what server $2 (of state $1) left in its run directory: its Jupyter runtime dir
# (cookie secret, connection files), and the directory itself when it was a fallback.
drop_rundir() {
    case $2 in ""|*/*|.|..) return 0 ;; esac
    rundir_of "$1"
    rm -rf "$rundir/$2.rt"
    [ "$rundir" = "$run_root/labhop-$(id -u)" ] || rmdir "$rundir" 2>/dev/null
    return 0
}
# Sets $resolved to path $1 with a leading ~ expanded (a variable, not printed: $(...)
# would strip a newline that ends the name).
expand_path() {
    # shellcheck disable=SC2088  # a literal ~ as the user typed it, expanded here
    case $1 in
        "~") resolved=$HOME ;;
        "~/"*) resolved=$HOME/${1#"~/"} ;;
        *) resolved=$1 ;;
    esac
}
# A path typed as ~/x on the laptop arrives expanded with the laptop's home; if that does
# not exist here, read it relative to this home instead. Sets $resolved.
remote_path() {
    expand_path "$1"
    if [ ! -e "$resolved" ] && [ -n "$local_home" ]; then
        case $resolved in
            "$local_home"/*) alt="$HOME/${resolved#"$local_home"/}"; [ -e "$alt" ] && resolved=$alt ;;
        esac
    fi
}
# True when pid $1 is alive and proven to be the server with id $2 whose state directory
# is $3: its environment holds the id or, where that cannot be read (no /proc: macOS,
# BSD), its start time is the one recorded at launch ($3/start). Without proof, no: a
# PID reused by another process must never be signalled.
is_ours() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    # A killed server whose parent has not reaped it yet is a zombie: dead, not ours.
    if [ -r "$proc_dir/$1/stat" ]; then
        stat_fields "$1" && case $stat_rest in Z*|X*) return 1 ;; esac
    else
        case $(ps -o stat= -p "$1" 2>/dev/null) in *Z*) return 1 ;; esac
    fi
    if [ -r "$proc_dir/$1/environ" ]; then
        io_env=$(tr '\0' '\n' < "$proc_dir/$1/environ" 2>/dev/null)
        case $nl$io_env$nl in *"${nl}LABHOP_SERVER_ID=$2$nl"*) return 0 ;; esac
        return 1
    fi
    [ -n "${3:-}" ] || return 1
    file_into started "$3/start"
    proc_start_into "$1"
    [ -n "$started" ] && [ "$ps_start" = "$started" ]
}
# What file $1 holds (pid, id, jobid, ...), as `cat` would print it into a $(...), read
# with builtins: describing 20 servers must not cost a process per file.
read_file() {
    [ -f "$1" ] || return 1
    rf_sep=
    while IFS= read -r rf_line || [ -n "$rf_line" ]; do
        printf '%s%s' "$rf_sep" "$rf_line"
        rf_sep=$nl
    done < "$1" 2>/dev/null
    return 0
}
# When process $1 started (clock ticks since boot, or ps's start time without /proc):
# a PID plus its start time names one process, even after the PID is reused.
# proc_start_into sets $ps_start to it (with /proc, without a process).
proc_start_into() {
    ps_start=
    if stat_fields "$1"; then
        set -f
        # shellcheck disable=SC2086  # split into stat's fields on purpose
        set -- $stat_rest
        set +f
        # Field 22 of stat, the start time: the 20th after the command name.
        if [ $# -ge 20 ]; then shift 19; ps_start=$1; fi
    elif [ ! -d "$proc_dir" ]; then
        ps_start=$(ps -o lstart= -p "$1" 2>/dev/null | tr -s ' ' '_')
    fi
}
proc_start() { proc_start_into "$1"; printf '%s' "$ps_start"; }
# Sessions: each labhop attached to the server of state $1 holds an owner session (see
# owner.sh), recorded in $1/owners/SESSION as "PID START" and the name of the browser token
# it gave out (in $1/tokens, see remote/server_config.py), its client in SESSION.client.
# A PID counts only while the process that started then still runs.
live_pid() {
    [ -n "${1:-}" ] && [ -n "${2:-}" ] || return 1
    proc_start_into "$1"
    [ "$ps_start" = "$2" ]
}
# Sets $sess_pid, $sess_start and $sess_token from session record $1.
read_session() {
    sess_pid='' sess_start='' sess_token=''
    { IFS=' ' read -r sess_pid sess_start; IFS= read -r sess_token; } < "$1" 2>/dev/null
    case $sess_token in *[!0-9a-f]*) sess_token='' ;; esac
}
# Remove session record $1 (of state $2) and the browser token it gave out.
drop_session() {
    read_session "$1"
    [ -n "$sess_token" ] && rm -f "$2/tokens/$sess_token"
    rm -f "$1" "$1.client"
}
# Sets $oc_clients to the clients of the live sessions of state $1, one per line; false
# when none. Records of sessions that are gone (their labhop died with no word) are removed
# with their tokens: a token is good only while its labhop holds the port it went out on.
owner_clients() {
    oc_clients='' oc_found=1
    for oc_file in "$1"/owners/*; do
        case $oc_file in *.client|*/\*) continue ;; esac
        read_session "$oc_file"
        if live_pid "$sess_pid" "$sess_start"; then
            load "$oc_file.client" || got='?'
            oc_clients=$oc_clients${oc_clients:+$nl}$got
            oc_found=0
        else
            drop_session "$oc_file" "$1"
        fi
    done
    if legacy_owner "$1"; then oc_clients=$oc_clients${oc_clients:+$nl}'an older labhop'; oc_found=0; fi
    return "$oc_found"
}
# The live owner session of labhop 0.2, which kept one in $1/owner ("PID START"), in $lo_pid.
legacy_owner() {
    file_into lo_owner "$1/owner"
    lo_pid=${lo_owner%% *}
    [ "$lo_pid" != "$lo_owner" ] && live_pid "$lo_pid" "${lo_owner#* }"
}
# End session $2's earlier owner session on state $1 (the same labhop reconnected after a
# network drop: its old sshd never learns that the connection died, so it would stay on
# this host for hours). Another labhop's session is never touched.
end_session() {
    [ -f "$1/owners/$2" ] || return 0
    read_session "$1/owners/$2"
    if live_pid "$sess_pid" "$sess_start" && [ "$sess_pid" != "$$" ]; then
        kill -TERM "$sess_pid" 2>/dev/null
    fi
    drop_session "$1/owners/$2" "$1"
}
# End every owner session of state $1 (its server is being stopped).
end_owners() {
    for eo_file in "$1"/owners/*; do
        case $eo_file in *.client|*/\*) continue ;; esac
        read_session "$eo_file"
        live_pid "$sess_pid" "$sess_start" && kill -TERM "$sess_pid" 2>/dev/null
        drop_session "$eo_file" "$1"
    done
    legacy_owner "$1" && kill -TERM "$lo_pid" 2>/dev/null
    return 0
}
# TCP servers choose their own port (port 0: nothing to race for, and no port on any
# command line). The port Jupyter (PID $1, runtime dir $2) took, from its runtime file, or,
# where an older server writes 0 there, from its one listening socket; in $tcp_port.
server_port() {
    tcp_port=
    for sp_file in "$2/jpserver-$1.json" "$2/nbserver-$1.json"; do
        [ -f "$sp_file" ] || continue
        # json.dump(indent=2) writes each key on a line of its own; a value (a folder's
        # name) cannot forge such a line: its quotes are escaped.
        tcp_port=$(sed -n 's/^ *"port": *\([0-9][0-9]*\),\{0,1\}$/\1/p' "$sp_file" 2>/dev/null)
        case $tcp_port in ''|*[!0-9]*) tcp_port= ;; esac
        break
    done
    [ -n "$tcp_port" ] && [ "$tcp_port" != 0 ] && return 0
    tcp_port=$(pid_listen_ports "$1")
    case $tcp_port in ''|*[!0-9]*) tcp_port=; return 1 ;; esac
}
# The inodes of the sockets PID $1 holds, one per line.
pid_socket_inodes() {
    # shellcheck disable=SC2012  # fd names are numbers; ls -l shows each one's target
    ls -l "$proc_dir/$1/fd/" 2>/dev/null | sed -n 's/.*socket:\[\([0-9][0-9]*\)\]$/\1/p'
}
# Listening TCP sockets in /proc/net/tcp{,6}: "HEXPORT INODE" per line.
tcp_listeners() {
    # shellcheck disable=SC2016  # an awk program
    awk '$4 == "0A" { n = split($2, a, ":"); print a[n], $10 }' \
        "$proc_dir/net/tcp" "$proc_dir/net/tcp6" 2>/dev/null
}
# The port(s) PID $1 listens on, in decimal, one per line.
pid_listen_ports() {
    if [ -r "$proc_dir/net/tcp" ]; then
        plp_inodes=$nl$(pid_socket_inodes "$1")$nl
        tcp_listeners | while read -r plp_hex plp_inode; do
            case $plp_inodes in *"$nl$plp_inode$nl"*) printf '%d\n' "0x$plp_hex" ;; esac
        done | sort -u
    else
        lsof -nP -a -p "$1" -iTCP -sTCP:LISTEN -Fn 2>/dev/null | sed -n 's/^n.*:\([0-9][0-9]*\)$/\1/p' | sort -u
    fi
}
# Whether every socket that listens on TCP port $2 belongs to PID $1 (and there is one):
# 0 yes, 1 none listens yet, 2 another process listens there too.
port_is_pids() {
    if [ -r "$proc_dir/net/tcp" ]; then
        pip_hex=$(printf '%04X' "$2")
        pip_inodes=$nl$(pid_socket_inodes "$1")$nl
        pip_mine=0 pip_other=0
        pip_lines=$(tcp_listeners)
        while read -r pip_port pip_inode; do
            [ "$pip_port" = "$pip_hex" ] || continue
            case $pip_inodes in
                *"$nl$pip_inode$nl"*) pip_mine=1 ;;
                *) pip_other=1 ;;
            esac
        done <<EOF_LISTENERS
$pip_lines
EOF_LISTENERS
        [ "$pip_other" = 1 ] && return 2
        [ "$pip_mine" = 1 ] && return 0
        return 1
    fi
    # No /proc (macOS, BSD): lsof shows our own processes' sockets.
    pip_pids=$(lsof -nP -iTCP:"$2" -sTCP:LISTEN -Fp 2>/dev/null | sed -n 's/^p//p' | sort -u)
    [ -z "$pip_pids" ] && return 1
    [ "$pip_pids" = "$1" ] && return 0
    return 2
}
# Wait up to $3 s for TCP server PID $1 (runtime dir $2) to listen on a port of its own;
# sets $tcp_port. 0: it does; 1: it died first; 2: another process listens on that port too;
# 3: it did not listen in time.
await_own_port() {
    aop_n=0 aop_max=$(( $3 * 5 ))
    while [ "$aop_n" -le "$aop_max" ]; do
        kill -0 "$1" 2>/dev/null || return 1
        if server_port "$1" "$2"; then
            aop_rc=0; port_is_pids "$1" "$tcp_port" || aop_rc=$?
            [ "$aop_rc" = 1 ] || return "$aop_rc"
        fi
        nap; aop_n=$((aop_n + 1))
    done
    return 3
}
# The backend that runs the server of state entry $1, as its launch wrote it ("host" for
# entries of labhop 0.1, which wrote none). Scripts that read every backend's entries hold
# each known backend's `alive_KIND`, `where_KIND` and `describe_KIND` (remote/compose.py composes
# them in, and lists their kinds in `$kinds`).
entry_kind() { file_into k "$1/backend"; printf '%s' "${k:-host}"; }
known_kind() { case " $kinds " in *" $1 "*) return 0 ;; esac; return 1; }
# Refuse to replace entry $1 when a live server of another backend than $2 holds it.
refuse_other_kind() {
    k=$(entry_kind "$1")
    [ "$k" = "$2" ] && return 0
    # A backend this labhop does not know (a newer labhop's) may be alive: keep out.
    known_kind "$k" || fail "$exit_state_unusable" "'$name' belongs to a labhop backend this version does not know ($k); pick another --name"
    if "alive_$k" "$1"; then
        fail "$exit_state_unusable" "'$name' already runs $("where_$k" "$1"); use labhop attach for it, or pick another --name"
    fi
}
log_tail() { log_begin; tail -n "$log_lines" "$1" 2>/dev/null; }
