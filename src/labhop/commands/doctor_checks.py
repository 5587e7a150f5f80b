"""The checks of `labhop doctor`: each a small pure function that returns a `Check`.

Passed, failed (with what to do), or not checked (an earlier check it needs failed, or it
was not asked for). They take what ssh or a remote script printed; `commands.doctor`
runs them in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from labhop import gpus, model
from labhop.errors import ExitStatus, LabhopError
from labhop.remote import compose, protocol
from labhop.ssh.target import Resolved

# The checks, in the order they run and print: name (for --json) -> label (for people).
LABELS: dict[str, str] = {
    "ssh": "ssh client",
    "ssh-config": "ssh config",
    "login": "login",
    "shell": "login shell",
    "env": "environment",
    "jupyter": "Jupyter",
    "unix-socket": "Unix socket",
    "setsid": "setsid",
    "state-dir": "state directory",
    "gpus": "GPUs",
    "slurm": "Slurm",
}


JUPYTER_PACKAGES = ("jupyter_server", "jupyterlab", "notebook")


@dataclass(frozen=True)
class Check:
    """One line of the report. `ok` is None when the check did not run."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""
    # What this failure exits with, when it is the first one.
    status: ExitStatus = ExitStatus.OK

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def failed(name: str, detail: str, fix: str, status: ExitStatus) -> Check:
    return Check(name, False, detail, fix, status)


def skipped(name: str, why: str) -> Check:
    return Check(name, None, why)


@dataclass(frozen=True)
class Report:
    host: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok is not False for check in self.checks)

    @property
    def exit_status(self) -> ExitStatus:
        """The status of the first failure; OK when nothing failed."""
        return next((check.status for check in self.checks if check.ok is False),
                    ExitStatus.OK)

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "ok": self.ok, "exit": int(self.exit_status),
                "checks": [check.as_json() for check in self.checks]}


# Pure pieces
def split_advice(message: str) -> tuple[str, str]:
    """labhop's error lines say what happened, then '; ' and what to do: split there."""
    what, sep, advice = message.rpartition("; ")
    return (what, advice) if sep and what else (message, "")


def from_error(name: str, exc: LabhopError) -> Check:
    what, advice = split_advice(str(exc))
    return failed(name, what, advice or "run again with --debug to see what ssh said",
                  exc.status)


def ssh_client_check(path: str | None, version: str) -> Check:
    if path is None:
        return failed("ssh", "no `ssh` on PATH",
                      "install the OpenSSH client (Debian/Ubuntu: apt install "
                      "openssh-client; macOS and Windows 10+ have it built in)",
                      ExitStatus.SSH_MISSING)
    return passed("ssh", f"{version or 'version unknown'} ({path})")


def config_check(resolved: Resolved, *, multiplex: bool, user_path: str, user_master: bool,
                 labhop_master: bool) -> Check:
    """How ssh reaches the host (`ssh -G`), and which master labhop would use."""
    settings = resolved.settings
    parts = [f"{resolved.user}@{resolved.hostname} port {resolved.port}"]
    jump = settings.get("proxyjump", "")
    command = settings.get("proxycommand", "")
    if jump and jump.lower() != "none":
        parts.append(f"through jump host {jump}")
    elif command and command.lower() != "none":
        parts.append(f"through ProxyCommand {command}")
    else:
        parts.append("no jump host")
    if not multiplex:
        parts.append("no shared connection (each step logs in itself)")
    elif user_master:
        parts.append(f"your master at {user_path} is open: labhop rides it")
    elif labhop_master:
        parts.append("labhop's own master is open: reused")
    elif user_path:
        parts.append(f"no master runs at your ControlPath {user_path}: labhop opens "
                     "its own and closes it when done")
    else:
        parts.append("no master open: labhop opens one and closes it when done")
    return passed("ssh-config", "; ".join(parts))


def login_check(user: str, host: str, seconds: float, how: str) -> Check:
    return passed("login", f"logged in to {host} as {user} in {seconds:.1f} s ({how})")


def login_route(shell: str) -> str:
    """How the login bootstrap (compose.REMOTE_LOGIN_BOOTSTRAP) runs labhop's scripts."""
    name = shell.rsplit("/", 1)[-1]
    if not shell:
        return "$SHELL is not set, so no login files are read (plain /bin/sh)"
    if name in compose.LOGIN_SHELLS:
        return f"{shell}, run as a login shell ({name} -l)"
    return (f"{shell} does not take `-l -c`, so its login files are not read "
            "(plain /bin/sh)")


def shell_check(output: protocol.ScriptOutput) -> Check:
    return passed("shell", f"{login_route(output.get('shell'))}; PATH={output.get('path')}")


def env_check(env: model.EnvSpec | None, failure: tuple[int, str] | None,
              prefix: str) -> Check:
    """Whether --env activates; `failure` is the check script's (exit, error), if any."""
    if env is None:
        return passed("env", "login PATH (no --env)")
    if failure is not None and failure[0] == protocol.Exit.ENV_NOT_FOUND:
        what, advice = split_advice(failure[1])
        return failed("env", what, advice or f"check --env {env}", ExitStatus.ENV_NOT_FOUND)
    where = f" (prefix {prefix})" if prefix else ""
    return passed("env", f"{env} activates{where}")


def parse_versions(lines: Iterable[str]) -> dict[str, str]:
    """'jupyter_server 2.21.1' / 'notebook' (not installed) -> {name: version or ''}."""
    versions = {}
    for line in lines:
        name, _, version = line.strip().partition(" ")
        if name in JUPYTER_PACKAGES:
            versions[name] = version.strip()
    return versions


def describe_versions(versions: Mapping[str, str]) -> str:
    if not versions:
        return "versions unknown"
    return ", ".join(f"{name} {versions[name]}" if versions.get(name)
                     else f"{name} not installed"
                     for name in JUPYTER_PACKAGES if name in versions)


def jupyter_check(app: str, failure: tuple[int, str] | None, exe: str,
                  versions: Mapping[str, str]) -> Check:
    if failure is not None and failure[0] == protocol.Exit.ENV_NOT_FOUND:
        return skipped("jupyter", "not checked: the environment did not activate")
    if failure is not None:
        what, advice = split_advice(failure[1])
        status = (ExitStatus.JUPYTER_NOT_FOUND if failure[0] == protocol.Exit.JUPYTER_NOT_FOUND
                  else ExitStatus.REMOTE_FAILED)
        return failed("jupyter", what, advice or "see --debug", status)
    return passed("jupyter", f"{exe}: {describe_versions(versions)}")


def socket_check(*, transport: str, versions: Mapping[str, str], jupyter_ok: bool,
                 probe: tuple[bool, str] | None) -> Check:
    """Jupyter can serve on a socket (jupyter_server 1.9+, as flavour.py decides) and
    sshd forwards to one (`probe`: the round trip's outcome; None when not tried)."""
    if probe is not None and not probe[0]:
        return failed("unix-socket", probe[1],
                      "labhop still works: it serves Jupyter on the remote's loopback TCP "
                      "instead; for a socket, the host's admin can set "
                      "AllowStreamLocalForwarding yes in sshd_config",
                      ExitStatus.REMOTE_FAILED)
    if not jupyter_ok:
        what = ("sshd forwards to Unix sockets; " if probe is not None else "")
        return skipped("unix-socket", f"{what}not checked for Jupyter: Jupyter was not found")
    server = versions.get("jupyter_server") or "?"
    if transport != "unix":
        return failed("unix-socket",
                      f"jupyter_server {server} cannot serve on a Unix socket (--sock came "
                      "with 1.9)",
                      "labhop still works over loopback TCP; for a socket: pip install -U "
                      "'jupyter_server>=1.9' in that environment",
                      ExitStatus.REMOTE_FAILED)
    if probe is None:
        return skipped("unix-socket", f"jupyter_server {server} can serve on a socket; "
                                      "sshd's forwarding not checked (no python to listen)")
    return passed("unix-socket", f"jupyter_server {server} serves on sockets, and a byte "
                                 "round trip to a test socket through sshd worked")


def setsid_check(path: str) -> Check:
    if path:
        return passed("setsid", path)
    return failed("setsid", "no setsid on the login PATH",
                  "install util-linux (it has setsid); until then labhop detaches the "
                  "server with nohup", ExitStatus.REMOTE_FAILED)


def state_check(output: protocol.ScriptOutput) -> Check:
    root = output.get("state")
    if output.get("state_ok") == "1":
        note = "" if output.get("state_existed") == "1" else " (created at the first start)"
        return passed("state-dir", f"{root} is writable{note}")
    error = output.get("state_error") or "cannot create files there"
    return failed("state-dir", f"{root}: {error}",
                  f"make {root} writable for you, or set XDG_STATE_HOME in your login "
                  "files to a directory that is", ExitStatus.REMOTE_FAILED)


def gpu_check(report: gpus.GpuReport, host: str, wanted: str = "") -> Check:
    """The host's GPUs. Without `wanted` (--gpus, or the host's `gpus` in config.toml) a
    host without one is a note, not a failure: `labhop HOST` starts there all the same, and
    doctor's exit status says whether it would. With it, the GPUs asked for must be there."""
    problem = gpus.problem(report, host)
    if problem is None:
        count = len(report.gpus)
        detail = f"{count} GPU{'s' if count != 1 else ''}: {gpus.describe_gpus(report.gpus)}"
        if wanted:
            try:
                gpus.choose(gpus.parse_gpu_selection(wanted), report, host, wanted)
            except LabhopError as exc:
                return failed("gpus", str(exc), "pick GPUs the host has (see labhop gpus "
                              f"{host})", ExitStatus.NO_GPUS)
        return passed("gpus", detail)
    if not wanted or gpus.parse_gpu_selection(wanted).kind == "none":
        return passed("gpus", f"none: {problem}; fine for work without a GPU (--gpus "
                              "would make it a failure)")
    if report.smi == "missing":
        fix = ("install the NVIDIA driver (it brings nvidia-smi), or put nvidia-smi on the "
               "login PATH (e.g. a module load in your login files); on a host without "
               "GPUs this line is expected")
    elif report.smi == "failed" and "no devices were found" not in report.message.lower():
        fix = ("the driver does not answer: run nvidia-smi on the host; reloading the "
               "driver (often a reboot) or reinstalling it is the usual cure")
    else:
        fix = ("check that the GPUs are visible to this host (a container needs them "
               "passed through) and that the driver is loaded")
    return failed("gpus", problem, fix, ExitStatus.NO_GPUS)


def partitions_of(args: Sequence[str]) -> tuple[str, ...]:
    """The partitions sbatch arguments ask for (-p X, -pX, --partition[=]X; the last one
    counts, as for sbatch); () for the cluster's default."""
    found = ""
    items = list(args)
    for index, arg in enumerate(items):
        if arg in ("-p", "--partition"):
            found = items[index + 1] if index + 1 < len(items) else ""
        elif arg.startswith("--partition="):
            found = arg.partition("=")[2]
        elif arg.startswith("-p") and not arg.startswith("--"):
            found = arg[2:]
    return tuple(part.strip() for part in found.split(",") if part.strip())


def parse_sinfo(lines: Iterable[str]) -> tuple[dict[str, str], str]:
    """`sinfo -a -h -o '%P %a'` -> ({partition: availability}, the default partition)."""
    partitions: dict[str, str] = {}
    default = ""
    for line in lines:
        name, _, available = line.strip().partition(" ")
        if not name:
            continue
        if name.endswith("*"):
            name = name[:-1]
            default = default or name
        partitions.setdefault(name, available.strip())
    return partitions, default


def slurm_check(output: protocol.ScriptOutput, wanted: Sequence[str]) -> Check:
    found = dict(item.partition(" ")[::2] for item in output.multi.get("command", []))
    missing = [name for name in ("sbatch", "squeue", "scancel") if not found.get(name)]
    fix_path = ("Slurm's commands must be on the login node's login PATH: load its module "
                "in your login files, or use a cluster login node as HOST")
    if missing:
        return failed("slurm", f"not on the login PATH: {', '.join(missing)}", fix_path,
                      ExitStatus.SLURM_REFUSED)
    commands = "sbatch, squeue, scancel found"
    if not found.get("sinfo"):
        return passed("slurm", f"{commands}; no sinfo, so the partition was not checked")
    if output.get("sinfo_rc") != "0":
        return failed("slurm", f"sinfo failed: {output.get('sinfo_error') or 'no message'}",
                      "Slurm's controller did not answer; retry later, or ask the "
                      "cluster's admins", ExitStatus.SLURM_REFUSED)
    partitions, default = parse_sinfo(output.multi.get("sinfo", []))
    known = ", ".join(f"{name} (default)" if name == default else name
                      for name in partitions) or "none"
    unknown = [name for name in wanted if name not in partitions]
    if unknown:
        return failed("slurm", f"no partition {', '.join(repr(p) for p in unknown)}; "
                               f"the partitions: {known}",
                      "pick one of those with -p/--partition in --slurm",
                      ExitStatus.SLURM_REFUSED)
    if not wanted and not default:
        return failed("slurm", f"no -p in --slurm and the cluster has no default "
                               f"partition; the partitions: {known}",
                      "name one with -p/--partition in --slurm", ExitStatus.SLURM_REFUSED)
    chosen = list(wanted) or [default]
    down = [name for name in chosen if partitions.get(name, "up") != "up"]
    if down:
        return failed("slurm", f"partition {', '.join(down)} is "
                               f"{partitions[down[0]] or 'not up'}",
                      f"wait until it is up, or pick another of: {known}",
                      ExitStatus.SLURM_REFUSED)
    which = ("partition " + ", ".join(wanted)) if wanted else f"default partition {default}"
    return passed("slurm", f"{commands}; {which} is up")


def script_error(output: protocol.ScriptOutput, host: str) -> tuple[int, str] | None:
    """The (exit, error) a script's `fail` printed, if it did; the error names `host` as
    the user typed it (see protocol.HOST_PLACEHOLDER), as every other error does."""
    code = output.get("exit")
    if not code:
        return None
    error = output.get("error").replace(protocol.HOST_PLACEHOLDER, host)
    return (int(code) if code.isdigit() else 1), error
