"""Pure and local parts of the connection layer: what differs per operating system, the
argv of each transport, and the lock that decides who closes a shared master."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from labhop import oscompat
from labhop.errors import MasterBusyError
from labhop.ssh import connection, control, locks
from labhop.ssh.target import Target, parse_ssh_g
from labhop.ssh.transport import DirectTransport, MuxTransport

RESOLVED = parse_ssh_g("host gamer\nuser me\nhostname 10.0.0.7\nport 22\n")
TARGET = Target("gamer", jump="bastion")


# -- oscompat, for both sides ------------------------------------------------------------
def test_windows_has_no_multiplexing_no_hangup_and_its_own_process_groups() -> None:
    assert not oscompat.supports_multiplexing("win32")
    assert signal.SIGHUP not in oscompat.stop_signals("win32")
    assert signal.SIGINT in oscompat.stop_signals("win32")
    assert "creationflags" in oscompat.detached_kwargs("win32")
    assert oscompat.runtime_base("win32", {"XDG_RUNTIME_DIR": "/run/user/1"}) is None
    assert oscompat.has_display("win32", {})


@pytest.mark.parametrize("system", ["linux", "darwin"])
def test_posix_multiplexes_stops_on_hangup_and_detaches_with_setsid(system: str) -> None:
    assert oscompat.supports_multiplexing(system)
    assert oscompat.stop_signals(system) == [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    assert oscompat.detached_kwargs(system) == {"start_new_session": True}


def test_a_display_is_needed_only_off_macos_and_windows() -> None:
    assert oscompat.has_display("darwin", {})
    assert not oscompat.has_display("linux", {})
    assert oscompat.has_display("linux", {"WAYLAND_DISPLAY": "wayland-0"})


def test_runtime_base_is_the_absolute_xdg_runtime_dir_only() -> None:
    assert oscompat.runtime_base("linux", {"XDG_RUNTIME_DIR": "/run/user/1000"}) == Path(
        "/run/user/1000")
    assert oscompat.runtime_base("linux", {"XDG_RUNTIME_DIR": "relative"}) is None
    assert oscompat.runtime_base("linux", {}) is None


def test_control_paths_leave_room_for_ssh_s_temporary_name() -> None:
    # Linux binds 107 bytes, macOS 103; ssh first binds PATH plus 17 characters.
    assert oscompat.control_path_fits("/" + "x" * 89, "linux")
    assert not oscompat.control_path_fits("/" + "x" * 90, "linux")
    assert not oscompat.control_path_fits("/" + "x" * 86, "darwin")
    assert oscompat.control_path_fits("/" + "x" * 85, "darwin")


# -- transports ---------------------------------------------------------------------------
def test_mux_steps_never_prompt_and_keep_the_pass_through_options(tmp_path: Path) -> None:
    mux = MuxTransport(TARGET, RESOLVED, "ssh", tmp_path, control_path="/r/labhop/abc")
    steps = mux.step_argv("-T")
    assert steps[:3] == ["ssh", "-S", "/r/labhop/abc"]
    assert "BatchMode=yes" in steps and "-J" in steps and steps[-2:] == ["--", "gamer"]


def test_a_direct_transport_never_multiplexes_nor_backgrounds(tmp_path: Path) -> None:
    direct = DirectTransport(TARGET, RESOLVED, "ssh", tmp_path)
    for argv in (direct.tunnel_argv("127.0.0.1:9000:/tmp/s.sock"), direct.step_argv("-T")):
        assert "-M" not in argv and "-O" not in argv and "-f" not in argv
        assert "ControlPath=none" in argv and "ControlMaster=no" in argv
        assert "StrictHostKeyChecking=no" not in " ".join(argv)
        assert argv[-2:] == ["--", "gamer"]
    assert "-N" in direct.tunnel_argv("127.0.0.1:9000:/tmp/s.sock")


def test_the_connection_key_is_the_ssh_g_result() -> None:
    same = parse_ssh_g("host gamer\nuser me\nhostname 10.0.0.7\nport 22\n")
    other = parse_ssh_g("host gamer\nuser you\nhostname 10.0.0.7\nport 22\n")
    assert RESOLVED.key() == same.key() != other.key()
    assert len(RESOLVED.key()) == 16


# -- who closes a shared master -------------------------------------------------------------
def share(tmp_path: Path) -> int:
    fd = os.open(tmp_path / "m.users", os.O_RDWR | os.O_CREAT, 0o600)
    assert locks.lock(fd, exclusive=False)
    return fd


def release(tmp_path: Path, fd: int) -> None:
    locks.release_master(fd, ssh="ssh", control_path=str(tmp_path / "m"), host="gamer",
                              create_lock=str(tmp_path / "m.lock"),
                              users_lock=str(tmp_path / "m.users"))


def test_only_the_last_user_of_a_master_closes_it(tmp_path: Path) -> None:
    # No socket here, so "closing" shows only as the removal of its log.
    (tmp_path / "m.log").write_text("")
    first, second = share(tmp_path), share(tmp_path)
    release(tmp_path, first)
    assert (tmp_path / "m.log").exists()
    release(tmp_path, second)
    assert not (tmp_path / "m.log").exists()


def test_a_master_opened_with_persist_is_left_to_controlpersist(tmp_path: Path) -> None:
    (tmp_path / "m.log").write_text("")
    (tmp_path / "m.persist").write_text("3600\n")
    with socket.socket(socket.AF_UNIX) as standing_in:  # the master's control socket
        standing_in.bind(str(tmp_path / "m"))
        release(tmp_path, share(tmp_path))
    assert (tmp_path / "m.log").exists()


def test_a_persist_master_that_already_ended_leaves_no_record(tmp_path: Path) -> None:
    (tmp_path / "m.log").write_text("")
    (tmp_path / "m.persist").write_text("3600\n")
    release(tmp_path, share(tmp_path))
    assert not (tmp_path / "m.log").exists() and not (tmp_path / "m.persist").exists()


def test_the_shared_directory_is_private_and_never_someone_else_s(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    assert connection._private_dir(mine)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700
    mine.chmod(0o755)
    assert connection._private_dir(mine)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700
    link = tmp_path / "link"
    link.symlink_to(mine)
    assert not connection._private_dir(link)
    if os.getuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        assert not connection._private_dir(theirs)


@pytest.mark.parametrize("case", ["writable by others", "a symlink", "someone else's"])
def test_a_runtime_dir_that_is_not_ours_alone_is_passed_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """$XDG_RUNTIME_DIR is checked like every directory labhop uses: owner and mode. When it
    fails, the masters go to the cache directory instead, as without a runtime dir."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    if case == "writable by others":
        runtime.chmod(0o777)
    elif case == "a symlink":
        real = tmp_path / "real"
        runtime.rename(real)
        runtime.symlink_to(real)
    elif os.getuid() == 0:
        os.chown(runtime, 65534, 65534)
    else:
        pytest.skip("needs root to give a directory to another user")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    # Short: a ControlPath under it must fit in a socket address.
    cache = Path(tempfile.mkdtemp(prefix="lhc-"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    try:
        assert connection.shared_dir() == cache / "labhop" / "ssh"
        assert not (runtime / "labhop").exists()
    finally:
        shutil.rmtree(cache)


def test_a_private_runtime_dir_holds_the_masters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert connection.shared_dir() == runtime / "labhop"


# -- a master that does not answer: busy, never dead ------------------------------------------
def test_a_master_that_does_not_answer_is_busy_not_dead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A neighbour's flood can leave the master without a descriptor for `ssh -O check`,
    which then hangs: that is MasterBusyError (a state to wait out), and for a command that
    only asks whether there is a master at all, a live one; never a traceback."""
    hanging = tmp_path / "ssh"
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    hanging.chmod(0o755)
    socket_path = tmp_path / "cm"
    socket_path.write_text("")  # stands for the control socket: the path exists
    monkeypatch.setattr(control, "CONTROL_TIMEOUT_S", 1)
    check = control.control_argv(str(hanging), socket_path, "check", "gamer")
    with pytest.raises(MasterBusyError, match="did not answer `ssh -O check` within 1 s"):
        control.master_pid(check)
    assert control.master_alive(str(hanging), socket_path, "gamer") is True
    # A command about to use it asks with busy_is_alive=False: one line, not a hang.
    with pytest.raises(MasterBusyError):
        control.master_alive(str(hanging), socket_path, "gamer", busy_is_alive=False)
    # Cancelling a forward over it gives up quietly: the forward ends with the master.
    control.cancel_forward(ssh=str(hanging), control_path=str(socket_path),
                           spec="127.0.0.1:9999:/x", host="gamer")
