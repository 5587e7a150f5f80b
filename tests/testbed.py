"""labhop's test bed: a private sshd on loopback that logs in as the test user `lhtest`.

`scripts/testbed-setup` prepares lhtest (Jupyter in ~/jvenv, ~/emptyvenv, a conda stand-in in
~/miniforge3, ~/proj, the password PASSWORD). This module starts and stops sshd instances for
that user (key-only ones, and a password-only one that asks at every login, answered by an
`Askpass` that counts the prompts), writes the matching client ssh_config, and inspects
lhtest's processes and the machine's listening sockets. The pytest fixtures
(tests/conftest.py) and `python -m tests.testbed demo` both use it. Everything needs root:
sshd must switch to lhtest, and the helpers kill lhtest's processes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The remote users of the test bed (scripts/testbed-setup makes each alike). `scripts/dev
# test` runs the end-to-end tests in two pytest-xdist workers, each with a user of its own
# (its own sshd, processes, state and Slurm jobs), so that one worker's cleanup can never
# touch the other's servers. Outside xdist, or with LABHOP_TEST_USER, one user.
TEST_USERS = ("lhtest", "lhtest2")


def _worker_user() -> str:
    chosen = os.environ.get("LABHOP_TEST_USER")
    if chosen:
        return chosen
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw") or 0)
    if index >= len(TEST_USERS):
        raise RuntimeError(f"the test bed has {len(TEST_USERS)} users: run at most "
                           f"-n {len(TEST_USERS)} (xdist worker {worker})")
    return TEST_USERS[index]


USER = _worker_user()
HOME = Path("/home") / USER
SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
DEFAULT_ALIAS = "gpubox"
DEFAULT_PASSWORD_ALIAS = "pwbox"  # noqa: S105 -- a host alias, not a password
# lhtest's login password; scripts/testbed-setup sets the same (TEST_PASSWORD there).
PASSWORD = "lhtest-testbed-pw"  # noqa: S105 -- the throwaway test user's, public on purpose
START_TIMEOUT = 20.0
# Host aliases in the client config are the base alias plus one of these suffixes.
ALIAS_VARIANTS = ("", "jumped", "wrongkey", "badhostkey", "down")

# Server settings shared by every instance; start_sshd adds the per-instance paths and port.
# sshd keeps the FIRST value it reads for a keyword, so overrides replace entries here rather
# than being appended after them.
BASE_SSHD_OPTIONS: tuple[tuple[str, str], ...] = (
    ("ListenAddress", "127.0.0.1"),
    ("UsePAM", "no"),
    ("StrictModes", "no"),
    ("PasswordAuthentication", "no"),
    ("KbdInteractiveAuthentication", "no"),
    ("PubkeyAuthentication", "yes"),
    ("AllowUsers", USER),
    ("AllowTcpForwarding", "yes"),
    ("AllowStreamLocalForwarding", "yes"),
    ("PermitRootLogin", "no"),
    ("LogLevel", "VERBOSE"),
    # Tests open many connections at once (master, forwards, parallel commands).
    ("MaxSessions", "50"),
    ("MaxStartups", "50"),
    # Like most servers: sshd never probes an idle client, so a vanished client goes unnoticed.
    ("ClientAliveInterval", "0"),
)

# The password-only host (start_password_sshd), a stand-in for a host with 2FA: PAM asks for
# the password through keyboard-interactive, the only method sshd accepts, so every new
# connection prompts exactly once, and a key can never get in.
PASSWORD_SSHD_OPTIONS: Mapping[str, str] = {
    "UsePAM": "yes",
    "KbdInteractiveAuthentication": "yes",
    "PasswordAuthentication": "no",
    "PubkeyAuthentication": "no",
    "AuthenticationMethods": "keyboard-interactive",
}

_TCP_LISTEN = "0A"  # socket state code for LISTEN in /proc/net/tcp*


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing_prerequisites() -> list[str]:
    """What stops the test bed from working on this machine; empty when it is ready."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root")
    if not SSHD.is_file():
        problems.append(f"{SSHD} is missing")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        problems.append(f"user {USER} does not exist")
    if not (HOME / "jvenv/bin/jupyter-lab").is_file():
        problems.append(f"{HOME}/jvenv/bin/jupyter-lab is missing")
    return problems


def password_login_problems() -> list[str]:
    """What stops the password-only host from working; empty when it is ready."""
    problems = missing_prerequisites()
    if problems:
        return problems
    if not _shadow_hash(USER).startswith("$"):
        problems.append(f"{USER} has no password (scripts/testbed-setup sets one)")
    if not Path("/etc/pam.d/sshd").is_file():
        problems.append("/etc/pam.d/sshd is missing (sshd with UsePAM=yes needs it)")
    return problems


def _shadow_hash(user: str) -> str:
    for line in Path("/etc/shadow").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == user:
            return rest.split(":", 1)[0]
    return ""


@dataclass(frozen=True)
class Askpass:
    """An SSH_ASKPASS program that answers every prompt with PASSWORD and counts the prompts.

    Give ssh (or labhop) `env()`: with SSH_ASKPASS_REQUIRE=force, OpenSSH asks this program
    for every password and keyboard-interactive prompt, with or without a terminal. Each
    call appends its prompt ($1, newlines flattened to spaces) as one line to `log`.
    """

    script: Path
    log: Path

    @classmethod
    def create(cls, directory: Path, password: str = PASSWORD) -> Askpass:
        """Write the program and an empty log into `directory` (created if missing)."""
        directory.mkdir(parents=True, exist_ok=True)
        askpass = cls(directory / "askpass", directory / "askpass.log")
        if askpass.script.exists():
            raise FileExistsError(f"{askpass.script} exists; use a fresh directory")
        askpass.log.write_text("")
        log = shlex.quote(str(askpass.log))
        askpass.script.write_text(
            "#!/bin/sh\n"
            "# labhop test bed: record the prompt on one line, then answer it.\n"
            f"""printf '%s\\n' "$(printf '%s' "$1" | tr '\\n' ' ')" >>{log}\n"""
            f"printf '%s\\n' {shlex.quote(password)}\n"
        )
        askpass.script.chmod(0o755)
        return askpass

    def env(self) -> dict[str, str]:
        """Environment variables that make ssh ask this program, terminal or not."""
        return {"SSH_ASKPASS": str(self.script), "SSH_ASKPASS_REQUIRE": "force"}

    def prompts(self) -> list[str]:
        """The prompt texts so far, oldest first, e.g. "(lhtest@127.0.0.1) Password: "."""
        return self.log.read_text().splitlines()

    def count(self) -> int:
        """How many times ssh has asked so far."""
        return len(self.prompts())


@dataclass(frozen=True, eq=False)
class Sshd:
    """A running sshd for lhtest and the client ssh_config that reaches it."""

    workdir: Path
    port: int
    host_alias: str
    process: subprocess.Popen[bytes]
    # Bound but never listening, so connecting to the "-down" alias is refused, and no other
    # program can take the port while this sshd runs.
    down_socket: socket.socket

    @property
    def config(self) -> Path:
        """The client ssh_config, for `ssh -F`."""
        return self.workdir / "ssh_config"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    def alias(self, variant: str = "") -> str:
        """The client alias for a variant: "" (the host), jumped, wrongkey, badhostkey, down."""
        if variant not in ALIAS_VARIANTS:
            raise ValueError(f"unknown alias variant {variant!r}; known: {ALIAS_VARIANTS}")
        return f"{self.host_alias}-{variant}" if variant else self.host_alias

    def ssh_argv(self, *args: str) -> list[str]:
        return ["ssh", "-F", str(self.config), *args]

    def run(
        self,
        *ssh_args: str,
        stdin_text: str | None = None,
        timeout: float = 30,
        env: Mapping[str, str] | None = None,
        no_terminal: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run `ssh -F <config> ARGS` to completion, capturing text output.

        `env` adds to this process's environment (e.g. `Askpass.env()`); `no_terminal`
        starts ssh in a new session, without a controlling terminal, as labhop's tests start
        labhop (tests/labhop_cli.py), so it can never prompt on a tty.
        """
        return subprocess.run(
            self.ssh_argv(*ssh_args),
            input=stdin_text,
            stdin=subprocess.DEVNULL if stdin_text is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=None if env is None else {**os.environ, **env},
            start_new_session=no_terminal,
        )

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5) -> None:
        """Stop this sshd by the PID it was started with: SIGTERM, then SIGKILL."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.down_socket.close()

    def __enter__(self) -> Sshd:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_sshd(
    workdir: Path,
    *,
    host_alias: str = DEFAULT_ALIAS,
    sshd_options: Mapping[str, str] | None = None,
) -> Sshd:
    """Start an sshd for lhtest on a free loopback port, with keys and configs in `workdir`.

    `workdir` must be empty of an earlier sshd: give each instance its own directory.
    `sshd_options` replace or add server settings, e.g. {"AllowStreamLocalForwarding": "no"};
    `host_alias` names this instance's aliases in its client config ("nostream",
    "nostream-jumped", ...), so a second sshd can be told apart in logs and messages.
    """
    return _launch(
        workdir,
        host_alias,
        sshd_options or {},
        write_client_files=_write_client_files,
        wait_until_ready=_wait_until_ready,
    )


def start_password_sshd(
    workdir: Path,
    *,
    host_alias: str = DEFAULT_PASSWORD_ALIAS,
    sshd_options: Mapping[str, str] | None = None,
) -> Sshd:
    """Start an sshd for lhtest that asks for PASSWORD at every login and accepts no key.

    A stand-in for a host with 2FA: each new TCP connection prompts exactly once (through
    PAM keyboard-interactive), while a ControlMaster client (`ssh -S socket`) rides an
    authenticated master and asks nothing. Its client config (`.config`) has only the
    `host_alias` block, with strict host-key checking, no BatchMode and no keys offered, so ssh
    must ask: pass `Askpass.env()` to answer. `sshd_options` are applied over
    PASSWORD_SSHD_OPTIONS. `workdir` must be fresh, as for start_sshd.
    """
    return _launch(
        workdir,
        host_alias,
        {**PASSWORD_SSHD_OPTIONS, **(sshd_options or {})},
        write_client_files=_write_password_client_files,
        wait_until_ready=_wait_until_password_ready,
    )


def _launch(
    workdir: Path,
    host_alias: str,
    sshd_options: Mapping[str, str],
    *,
    write_client_files: Callable[[Path, str, int, int], None],
    wait_until_ready: Callable[[Sshd, float], None],
) -> Sshd:
    if (workdir / "sshd_config").exists():
        raise FileExistsError(f"{workdir} already holds an sshd; use a fresh directory")
    workdir.mkdir(parents=True, exist_ok=True)
    _generate_keys(workdir)
    port = free_port()
    down_socket = _reserve_refusing_port()
    (workdir / "sshd_config").write_text(_server_config(workdir, port, sshd_options))
    write_client_files(workdir, host_alias, port, down_socket.getsockname()[1])
    # sshd refuses to start without its privilege-separation directory.
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    with (workdir / "sshd.log").open("wb") as log:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(workdir / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            # Out of the terminal's process group: a Ctrl+C meant for labhop (in the demo, or
            # on pytest) must not kill the "remote" machine before labhop has cleaned up there.
            start_new_session=True,
        )
    sshd = Sshd(workdir, port, host_alias, process, down_socket)
    try:
        wait_until_ready(sshd, START_TIMEOUT)
    except BaseException:
        sshd.stop()
        raise
    return sshd


def _generate_keys(workdir: Path) -> None:
    # The "other" host key only feeds known_hosts_bad, to provoke a host-key mismatch.
    for name in ("ssh_host_ed25519_key", "id_ed25519", "id_wrong", "other_host_key"):
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"testbed-{name}"]
        subprocess.run([*argv, "-f", str(workdir / name)], stdin=subprocess.DEVNULL, check=True)
    (workdir / "authorized_keys").write_text((workdir / "id_ed25519.pub").read_text())


def _reserve_refusing_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _server_config(workdir: Path, port: int, overrides: Mapping[str, str]) -> str:
    options = [
        *BASE_SSHD_OPTIONS,
        ("Port", str(port)),
        ("HostKey", str(workdir / "ssh_host_ed25519_key")),
        ("PidFile", str(workdir / "sshd.pid")),
        # sshd reads AuthorizedKeysFile as the logging-in user, and lhtest cannot traverse
        # root's private temp dirs (pytest's are 0700). AuthorizedKeysCommand runs as root,
        # so the file can stay in `workdir` without opening any directory up.
        ("AuthorizedKeysFile", "none"),
        ("AuthorizedKeysCommand", f"/bin/cat {workdir / 'authorized_keys'}"),
        ("AuthorizedKeysCommandUser", "root"),
    ]
    return "".join(f"{key} {value}\n" for key, value in _merge_options(options, overrides))


def _merge_options(
    options: Sequence[tuple[str, str]], overrides: Mapping[str, str]
) -> list[tuple[str, str]]:
    """Replace options by keyword (case-insensitive, as sshd reads them); append new ones."""
    by_key = {key.lower(): (key, value) for key, value in overrides.items()}
    merged = [by_key.pop(key.lower(), (key, value)) for key, value in options]
    return merged + list(by_key.values())


def _write_client_files(workdir: Path, alias: str, port: int, down_port: int) -> None:
    host_key = (workdir / "ssh_host_ed25519_key.pub").read_text().strip()
    other_key = (workdir / "other_host_key.pub").read_text().strip()
    (workdir / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    (workdir / "known_hosts_bad").write_text(f"[127.0.0.1]:{port} {other_key}\n")
    good_key, known_hosts = workdir / "id_ed25519", workdir / "known_hosts"
    blocks = [
        _client_host_block(alias, port, good_key, known_hosts),
        # Same target; the two-hop test reaches it with `-J <alias>`.
        _client_host_block(f"{alias}-jumped", port, good_key, known_hosts),
        _client_host_block(f"{alias}-wrongkey", port, workdir / "id_wrong", known_hosts),
        _client_host_block(f"{alias}-badhostkey", port, good_key, workdir / "known_hosts_bad"),
        _client_host_block(f"{alias}-down", down_port, good_key, known_hosts),
    ]
    (workdir / "ssh_config").write_text("\n".join(blocks))


def _client_host_block(name: str, port: int, identity: Path, known_hosts: Path) -> str:
    return (
        f"Host {name}\n"
        f"    HostName 127.0.0.1\n"
        f"    Port {port}\n"
        f"    User {USER}\n"
        f'    IdentityFile "{identity}"\n'
        f"    IdentitiesOnly yes\n"
        f'    UserKnownHostsFile "{known_hosts}"\n'
        f"    StrictHostKeyChecking yes\n"
        f"    BatchMode yes\n"
        f"    ConnectTimeout 10\n"
    )


def _write_password_client_files(workdir: Path, alias: str, port: int, _down_port: int) -> None:
    host_key = (workdir / "ssh_host_ed25519_key.pub").read_text().strip()
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    (workdir / "ssh_config").write_text(
        f"Host {alias}\n"
        f"    HostName 127.0.0.1\n"
        f"    Port {port}\n"
        f"    User {USER}\n"
        # No key is offered and BatchMode stays off: the password prompt is the only way in.
        f"    PubkeyAuthentication no\n"
        f'    UserKnownHostsFile "{known_hosts}"\n'
        # Strict, so the only prompt ssh ever shows is the password one, never a host key's.
        f"    StrictHostKeyChecking yes\n"
        f"    ConnectTimeout 10\n"
    )


def _wait_until_password_ready(sshd: Sshd, timeout: float) -> None:
    """Wait until a login answered by an askpass works (the probe's prompts go to workdir)."""
    askpass = Askpass.create(sshd.workdir / "probe-askpass")
    _wait_until_ready(
        sshd,
        timeout,
        env=askpass.env(),
        hint=f"is {USER}'s password {PASSWORD!r}? scripts/testbed-setup sets it",
    )


def _wait_until_ready(
    sshd: Sshd, timeout: float, *, env: Mapping[str, str] | None = None, hint: str = ""
) -> None:
    """Wait until a real login works: sshd listening is not enough to prove the keys fit."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if sshd.process.poll() is not None:
            raise RuntimeError(
                f"sshd exited with {sshd.process.returncode} while starting; "
                f"{sshd.log_path}:\n{sshd.log_tail()}"
            )
        remaining = max(deadline - time.monotonic(), 1)
        try:
            probe = sshd.run(
                sshd.alias(),
                "true",
                timeout=min(remaining, 10),
                env=env,
                no_terminal=env is not None,
            )
        except subprocess.TimeoutExpired:
            last_error = "ssh probe timed out"
            continue
        if probe.returncode == 0:
            return
        last_error = probe.stderr.strip()
        time.sleep(0.1)
    raise RuntimeError(
        f"sshd on port {sshd.port} did not accept `ssh {sshd.alias()} true` within {timeout:g}s "
        f"(last ssh error: {last_error!r}){f'; {hint}' if hint else ''}; "
        f"{sshd.log_path}:\n{sshd.log_tail()}"
    )


# --- processes and sockets, read from /proc ------------------------------------------------


@dataclass(frozen=True)
class _ProcInfo:
    pid: int
    real_uid: int
    zombie: bool
    cmdline: str


def _processes() -> Iterator[_ProcInfo]:
    """Every process on the machine; those that vanish while being read are skipped."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            raw_cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        cmdline = raw_cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        yield _ProcInfo(
            pid=int(entry.name),
            real_uid=int(fields["Uid"].split()[0]),
            zombie=fields["State"].strip().startswith("Z"),
            # Kernel threads and exiting processes have an empty cmdline; show their name.
            cmdline=cmdline or f"[{fields['Name'].strip()}]",
        )


def user_processes(user: str = USER) -> list[tuple[int, str]]:
    """(pid, cmdline) of each live process whose real uid is `user`'s.

    Zombies are left out: they have already exited, cannot be killed, and only wait for a
    parent to reap them (this machine's PID 1 may never do so).
    """
    uid = pwd.getpwnam(user).pw_uid
    return [(p.pid, p.cmdline) for p in _processes() if p.real_uid == uid and not p.zombie]


def kill_user_processes(user: str = USER, timeout: float = 5) -> list[tuple[int, str]]:
    """SIGKILL every process of `user`, by PID, until none is left; returns those killed.

    Repeats because a dying parent (an sshd session, a Jupyter server) can start children
    between the listing and the kill.
    """
    killed: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while remaining := user_processes(user):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of {user} survived SIGKILL: {remaining}")
        for pid, cmdline in remaining:
            killed.setdefault(pid, cmdline)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return sorted(killed.items())


def processes_with_in_cmdline(text: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of every process whose command line contains `text` (e.g. a secret)."""
    return [(p.pid, p.cmdline) for p in _processes() if text in p.cmdline]


def reset_remote_state(user: str = USER) -> None:
    """Delete what labhop leaves on the remote for `user`: its state dir and runtime dirs.

    Only paths owned by `user` are removed, so nothing of root's or another user's under
    /tmp can be hit by the glob.
    """
    account = pwd.getpwnam(user)
    tmp = Path("/tmp")  # noqa: S108 -- labhop's node-local runtime dir on the remote is /tmp/labhop-<uid>
    candidates = [
        Path(account.pw_dir) / ".local/state/labhop",
        *tmp.glob("labhop-*"),
        *Path(f"/run/user/{account.pw_uid}").glob("labhop*"),
    ]
    for path in candidates:
        if _owned_by(path, account.pw_uid):
            _remove(path)


def _owned_by(path: Path, uid: int) -> bool:
    try:
        return path.lstat().st_uid == uid
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    # rmtree refuses symlinks; a symlink owned by the user is removed itself, never followed.
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on `port`, e.g. {"127.0.0.1"}."""
    addresses = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address_hex, port_hex = fields[1].split(":")
            if fields[3] == _TCP_LISTEN and int(port_hex, 16) == port:
                addresses.add(_decode_proc_address(address_hex))
    return addresses


def _decode_proc_address(address_hex: str) -> str:
    # The kernel prints the address as 32-bit words in host byte order; packing each word
    # natively restores the bytes as they lie in memory, which is network order.
    words = [int(address_hex[i : i + 8], 16) for i in range(0, len(address_hex), 8)]
    packed = struct.pack(f"={len(words)}I", *words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed)


# --- Slurm: the one-node cluster of scripts/slurm-setup ----------------------------------------

# Node states (sinfo %T) in which the node takes jobs; a suffix such as "*" (not responding) or
# "~" (powered down) means it does not.
SLURM_READY_STATES = frozenset({"idle", "mixed", "allocated", "completing", "planned"})
SLURM_COMMAND_TIMEOUT = 15.0
SLURM_DRAIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class SlurmCluster:
    """The one-node Slurm cluster on this machine, reached through a loopback sshd.

    The sshd is the login node: run sbatch/squeue/scancel as lhtest with
    `cluster.login.run(cluster.login.alias(), "sbatch ...")`. Jobs run as lhtest on `node`
    (this machine), in partition `debug` (the default) or `gpu` (one fake GPU: gres gpu:1).
    """

    login: Sshd
    node: str
    partitions: tuple[str, ...] = ("debug", "gpu")


def slurm_node_name() -> str:
    """The cluster's only node: this machine's short host name, as slurm-setup names it."""
    return socket.gethostname().split(".")[0]


def slurm_ready() -> list[str]:
    """What stops jobs from running on the Slurm test cluster; empty when its node takes jobs."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return ["Slurm is not installed (no sinfo on PATH)"]
    try:
        result = subprocess.run(
            [sinfo, "-h", "-N", "-o", "%N %T"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SLURM_COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [f"sinfo did not answer within {SLURM_COMMAND_TIMEOUT:g}s (is slurmctld up?)"]
    if result.returncode != 0:
        return [f"sinfo failed: {result.stderr.strip() or f'exit status {result.returncode}'}"]
    # One line per node and partition: "vm idle" twice for the debug and gpu partitions.
    states = dict(line.split(maxsplit=1) for line in result.stdout.splitlines() if line.strip())
    if not states:
        return ["sinfo lists no nodes"]
    return [
        f"node {node} is {state}"
        for node, state in sorted(states.items())
        if state not in SLURM_READY_STATES
    ]


def cancel_user_jobs(user: str = USER, timeout: float = SLURM_DRAIN_TIMEOUT) -> list[str]:
    """`scancel -u user`, then wait until squeue lists none of the user's jobs.

    Returns the squeue lines of the jobs that were there ("JOBID STATE"). Does nothing when
    Slurm is not installed; when slurmctld does not answer there are no jobs to cancel
    (kill_user_processes still kills whatever a job left behind).
    """
    scancel, squeue = shutil.which("scancel"), shutil.which("squeue")
    if scancel is None or squeue is None:
        return []
    listing = [squeue, "-h", "-u", user, "-o", "%i %T"]
    try:
        found = _slurm_output(listing)
    except RuntimeError:
        return []
    if not found:
        return []
    _slurm_output([scancel, "-u", user])
    deadline = time.monotonic() + timeout
    while remaining := _slurm_output(listing):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"jobs of {user} still in squeue {timeout:g}s after scancel: {remaining}"
            )
        time.sleep(0.2)
    return found


def _slurm_output(argv: list[str]) -> list[str]:
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SLURM_COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{shlex.join(argv)} timed out") from exc
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed: {result.stderr.strip()}")
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


# --- demo -------------------------------------------------------------------------------------

DEMO_DEFAULT_ARGS = ("gpubox", "--dir", "~/proj")


def demo_config_path() -> Path:
    """Where the demo leaves its ssh config while it runs: one stable path, so the commands
    it prints for a second terminal are the same at every run."""
    return Path.home() / ".cache" / "labhop-demo" / "ssh_config"


# The stand-in host's other aliases (see _write_client_files) for the demo's banner: the
# labhop command ("" for `labhop HOST`), its arguments after `-F CONFIG` ({alias} is the
# host's own alias) and what it shows. Each failure is labhop's one line and its
# documented exit status (README, Exit status).
DEMO_ALIAS_TRIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("", ("{alias}-wrongkey",),
     "{alias}-wrongkey offers a key the host does not accept: exit 12 (authentication refused)"),
    ("", ("{alias}-badhostkey",),
     "{alias}-badhostkey's known_hosts holds another key for the host: exit 13 (host key "
     "unknown or changed)"),
    ("", ("{alias}-down",),
     "{alias}-down is a port where nothing listens: exit 11 (cannot connect)"),
    ("ls", ("-J", "{alias}", "{alias}-jumped"),
     "{alias}-jumped is the same host, reached through {alias} as a jump host (-J): `ls` "
     "lists the demo's server"),
)
# lhtest's environments (scripts/testbed-setup) for --env, their --name, and what labhop
# does with each. A name of its own each, so that none attaches to a server another started.
DEMO_ENV_TRIES: tuple[tuple[str, str, str], ...] = (
    ("venv:~/jvenv", "jvenv", "a venv with Jupyter: it starts"),
    ("conda:jl", "jl", "a conda env with Jupyter (~/miniforge3 holds a stand-in for conda): "
     "it starts"),
    ("conda:bare", "bare", "a conda env without Jupyter: exit 21 (jupyter not found)"),
    ("venv:~/emptyvenv", "emptyvenv", "a venv without Jupyter: exit 21 (jupyter not found)"),
    ("conda:nosuch", "nosuch", "a conda env that does not exist: exit 20 (environment not "
     "found)"),
)


def demo_command(config: Path, *args: str, command: str = "") -> str:
    """`labhop [COMMAND] -F CONFIG ARGS` for the demo host, ready to paste: labhop's path in
    full, so that it works from any directory, and -F after the command's name (a
    subcommand takes its options after its name); with sudo for a demo run through it."""
    sudo = ["sudo"] if os.environ.get("SUDO_USER") else []
    labhop = str(Path(sys.executable).parent / "labhop")
    return shlex.join([*sudo, labhop, *([command] if command else []), "-F", str(config),
                       *args])


def demo_commands(config: Path, alias: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """What the banner offers for a second terminal, by section: its heading, then each
    command with what it shows."""
    def fill(text: str) -> str:
        return text.replace("{alias}", alias)

    basics = [("", demo_command(config, alias, command=name))
              for name in ("ls", "logs", "gpus", "stop")]
    aliases = [(fill(what), demo_command(config, *map(fill, args), command=command))
               for command, args, what in DEMO_ALIAS_TRIES]
    envs = [(what, demo_command(config, alias, "--env", env, "--name", name))
            for env, name, what in DEMO_ENV_TRIES]
    return [
        ("While it runs, try from a second terminal (the stand-in host has no GPU, so `gpus` "
         "says so):", basics),
        ("The same host under other names (in that -F file), to see labhop fail as it would "
         "on a real one: one line that says what to do, and a distinct exit status:", aliases),
        (f"{USER}'s environments there (--env), each a server of its own (Ctrl+C stops one "
         "that started):", envs),
    ]


def demo_banner_tries(config: Path, alias: str) -> str:
    """The sections of demo_commands as the banner prints them: each command indented by
    four spaces on a line of its own (nothing else on it, so it pastes as it is), under
    what it shows."""
    lines: list[str] = []
    for heading, tries in demo_commands(config, alias):
        lines += ["", heading]
        for what, command in tries:
            lines += [f"  {what}"] if what else []
            lines.append(f"    {command}")
    return "\n".join(lines[1:])


def demo(labhop_args: Sequence[str]) -> int:
    """Run labhop in the foreground against a throwaway sshd; returns labhop's exit status."""
    problems = missing_prerequisites()
    if problems:
        print(
            f"demo: test bed not ready ({'; '.join(problems)}); run `sudo scripts/dev setup`"
            " and run the demo as root",
            file=sys.stderr,
        )
        return 1
    args = list(labhop_args) or list(DEMO_DEFAULT_ARGS)
    stable = demo_config_path()
    with (
        tempfile.TemporaryDirectory(prefix="lhtestbed-demo-") as tmp,
        start_sshd(Path(tmp)) as sshd,
    ):
        # A copy at a stable path; its keys and known_hosts stay in the demo's own directory.
        stable.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(sshd.config, stable)
        tries = demo_banner_tries(stable, sshd.alias())
        print(
            f"This is labhop's test bed. An sshd on 127.0.0.1:{sshd.port} stands in for the GPU "
            f"machine `{sshd.alias()}`: it logs in as the local user {USER}, whose Jupyter lives "
            f"in {HOME}/jvenv (found by login shells through ~/.profile) and whose project is "
            f"{HOME}/proj. The host aliases are in {stable}, which labhop gets with -F; "
            f"the sshd log is {sshd.log_path}. Press Ctrl+C to stop labhop; the sshd stops "
            "with it.\n\n"
            f"{tries}\n",
            flush=True,
        )
        try:
            return _run_in_foreground([sys.executable, "-m", "labhop", "-F", str(stable),
                                       *args])
        finally:
            stable.unlink(missing_ok=True)
            print(f"\ndemo: the stand-in host `{sshd.alias()}` is stopped and {stable} "
                  "removed; `scripts/dev demo` starts them again.", flush=True)


def _run_in_foreground(argv: list[str]) -> int:
    """Run argv on this terminal and leave Ctrl+C to it; we only clean up once it exits."""
    child = subprocess.Popen(argv)
    # Ignore SIGINT only after the child started, so the child keeps the default handling.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] != "demo":
        print("usage: python -m tests.testbed demo [LABHOP_ARGS...]", file=sys.stderr)
        return 2
    return demo(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
