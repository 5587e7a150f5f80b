"""Servers that outlive their connection but not their owner: --keep, ls, attach, stop,
logs, kill -9 of labhop, idle timeout. Real CLI, real sshd, real Jupyter."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import time
import urllib.error

import pytest

from labhop.ssh.ports import preferred_port
from tests import jupyter_api
from tests.labhop_cli import LabhopProcess, Result, run_labhop
from tests.test_start_e2e import STATE, URL, start, wait_until_no_user_processes
from tests.testbed import HOME, Sshd, processes_with_in_cmdline, user_processes

pytestmark = pytest.mark.e2e


def labhop(sshd: Sshd, *args: str, timeout: float = 60) -> Result:
    return run_labhop(args[0], "-F", str(sshd.config), *args[1:], timeout=timeout)


def listed(sshd: Sshd) -> list[dict[str, object]]:
    result = labhop(sshd, "ls", "gpubox", "--json")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def start_kept(sshd: Sshd, name: str, *args: str) -> str:
    """Start a server with --keep, leave it with Ctrl+C; returns its token."""
    with start(sshd, "gpubox", "--name", name, "--keep", *args) as run:
        url = run.wait_for(URL, timeout=90)
        run.interrupt()
        assert run.wait(30) == 0, run.output
        hint = run.output.split("reattach with: ", 1)[1].splitlines()[0]
        assert shlex.split(hint) == ["labhop", "attach", "-F", str(sshd.config), "gpubox",
                                     name]
    return url["token"]


def test_keep_then_ls_logs_attach_and_stop(sshd: Sshd) -> None:
    token = start_kept(sshd, "proj", "--dir", "~/proj", "--env", "venv:~/jvenv")

    table = labhop(sshd, "ls", "gpubox")
    assert table.rc == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "APP", "ENV", "ROOT", "STARTED", "AGE", "STATE", "PID",
                              "KERNELS"]
    assert row.split()[:4] == ["proj", "lab", "venv:~/jvenv", str(HOME / "proj")]
    assert "kept" in row

    [entry] = listed(sshd)
    assert entry["name"] == "proj"
    assert entry["state"] == "kept"
    assert entry["kernels"] == 0
    assert isinstance(entry["pid"], int)  # the same type as in the events
    assert entry["pid"] in {pid for pid, _ in user_processes()}

    logs = labhop(sshd, "logs", "gpubox", "proj", "-n", "50")
    assert logs.rc == 0
    assert "Jupyter Server" in logs.stdout and "is running at" in logs.stdout

    with LabhopProcess.start("attach", "-F", str(sshd.config), "gpubox", "proj",
                             "--no-browser") as attached:
        url = attached.wait_for(URL, timeout=60)
        assert url["token"] != token  # this labhop's own (see test_neighbour_e2e)
        base = f"http://127.0.0.1:{url['port']}"
        output, _ = jupyter_api.execute(base, url["token"], "print('attached', 1 + 1)")
        assert output.strip() == "attached 2"
        assert listed(sshd)[0]["state"] == "attached"
        attached.interrupt()
        assert attached.wait(30) == 0, attached.output
        assert "keeps running" in attached.output

    [entry] = listed(sshd)
    assert entry["kernels"] == 1
    stopped = labhop(sshd, "stop", "gpubox", "proj")
    assert stopped.rc == 0, stopped.stderr
    assert f"stopped 'proj' on gpubox (pid {entry['pid']}, 1 kernel)" in stopped.stderr
    assert wait_until_no_user_processes() == []
    assert listed(sshd) == []


def test_two_servers_names_and_stop_all(sshd: Sshd) -> None:
    start_kept(sshd, "one", "--dir", "~/proj")
    start_kept(sshd, "two")
    assert sorted(str(e["name"]) for e in listed(sshd)) == ["one", "two"]
    roots = {str(e["name"]): e["root_dir"] for e in listed(sshd)}
    assert roots == {"one": str(HOME / "proj"), "two": str(HOME)}

    unnamed = labhop(sshd, "attach", "gpubox", "--no-browser")
    assert unnamed.rc == 27
    assert "2 servers are running on gpubox (one, two); name the one you mean" in unnamed.stderr

    missing = labhop(sshd, "attach", "gpubox", "three", "--no-browser")
    assert missing.rc == 27
    assert "no server named 'three' is running on gpubox (running: one, two)" in missing.stderr
    assert "Traceback" not in missing.stderr

    stopped = labhop(sshd, "stop", "gpubox", "--all")
    assert stopped.rc == 0, stopped.stderr
    assert "stopped 'one'" in stopped.stderr and "stopped 'two'" in stopped.stderr
    assert listed(sshd) == []
    assert wait_until_no_user_processes() == []


def test_a_stale_entry_is_cleaned_and_never_listed(sshd: Sshd) -> None:
    start_kept(sshd, "proj")
    pid = int((STATE / "proj" / "pid").read_text())
    # The host "rebooted": the server is gone without any cleanup.
    os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    result = labhop(sshd, "ls", "gpubox")
    assert result.rc == 0
    assert "cleaned up 1 entry of servers that had exited: proj" in result.stderr
    assert "no labhop servers are running on gpubox" in result.stderr
    assert not (STATE / "proj").exists()


def test_kill_9_keeps_the_server_for_attach_until_its_idle_timeout(sshd: Sshd) -> None:
    config = str(sshd.config)
    with start(sshd, "gpubox", "--name", "proj", "--idle-timeout", "20s") as run:
        url = run.wait_for(URL, timeout=90)
        base = f"http://127.0.0.1:{url['port']}"
        jupyter_api.execute(base, url["token"], "x = 41")
        run.kill()
        run.wait(10)

    # Nothing of the killed labhop lingers on the laptop: its detached ssh master and
    # helpers all named this test's ssh config on their command lines.
    deadline = time.monotonic() + 60
    while processes_with_in_cmdline(config) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_with_in_cmdline(config) == []

    [entry] = listed(sshd)
    assert entry["state"] == "owner gone"

    with LabhopProcess.start("attach", "-F", config, "gpubox", "--no-browser") as attached:
        again = attached.wait_for(URL, timeout=60)
        base = f"http://127.0.0.1:{again['port']}"
        # The killed labhop's token went with its session.
        with pytest.raises(urllib.error.HTTPError) as refused:
            jupyter_api.api_status(base, url["token"])
        assert refused.value.code == 403
        [kernel] = jupyter_api.list_kernels(base, again["token"])
        output, _ = jupyter_api.execute(base, again["token"], "x + 1", kernel_id=kernel["id"])
        assert output.strip() == "42"
        attached.interrupt()
        assert attached.wait(30) == 0

    # No client and an idle kernel: the kernel is culled after 20 s, then the server stops
    # itself (Jupyter checks that once a minute).
    deadline = time.monotonic() + 150
    while listed(sshd) and time.monotonic() < deadline:
        time.sleep(5)
    assert listed(sshd) == []
    assert wait_until_no_user_processes() == []


def test_start_and_ctrl_c_twenty_times_leaves_nothing(sshd: Sshd) -> None:
    for cycle in range(20):
        with start(sshd, "gpubox", "--name", "proj") as run:
            run.wait_for(URL, timeout=90)
            run.interrupt()
            assert run.wait(30) == 0, f"cycle {cycle}: {run.output}"
        assert wait_until_no_user_processes() == [], f"cycle {cycle}"


def test_each_server_keeps_its_own_port_and_attach_tries_the_recorded_one(
        sshd: Sshd) -> None:
    """The URL of a server stays put: its port comes from (host, name), is recorded in its
    state, and an attach tries it first; a taken one moves, with a line saying so."""
    start_kept(sshd, "one")
    start_kept(sshd, "two")
    recorded = {str(entry["name"]): entry for entry in listed(sshd)}
    records = {name: json.loads((STATE / name / "launch.json").read_text())["port"]
               for name in ("one", "two")}
    assert records == {"one": preferred_port("gpubox", "one"),
                       "two": preferred_port("gpubox", "two")}
    assert records["one"] != records["two"] and set(recorded) == {"one", "two"}
    for name in ("one", "two"):
        with LabhopProcess.start("attach", "-F", str(sshd.config), "gpubox", name,
                                 "--no-browser") as attached:
            url = attached.wait_for(URL, timeout=60)
            assert int(url["port"]) == records[name], attached.output
            attached.interrupt()
            assert attached.wait(30) == 0
    # The recorded port taken: the attach moves to another and says so.
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", records["one"]))
        busy.listen()
        with LabhopProcess.start("attach", "-F", str(sshd.config), "gpubox", "one",
                                 "--no-browser") as attached:
            url = attached.wait_for(URL, timeout=60)
            assert int(url["port"]) != records["one"]
            assert f"local port {records['one']} is busy; using {url['port']}" in (
                attached.output)
            attached.interrupt()
            assert attached.wait(30) == 0
    for name in ("one", "two"):
        assert labhop(sshd, "stop", "gpubox", name).rc == 0


def test_an_attached_labhop_says_so_when_the_server_is_stopped_elsewhere(sshd: Sshd) -> None:
    start_kept(sshd, "proj")
    with LabhopProcess.start("attach", "-F", str(sshd.config), "gpubox", "proj",
                             "--no-browser") as attached:
        attached.wait_for(URL, timeout=60)
        stopped = labhop(sshd, "stop", "gpubox", "proj")
        assert stopped.rc == 0, stopped.stderr
        attached.wait_for(r"'proj' was stopped on gpubox \(labhop stop, from another "
                          r"terminal or laptop\)", timeout=40)
        # A stop someone asked for is no error, and there is nothing left to stop.
        assert attached.wait(30) == 0, attached.output
        assert "stopping 'proj'" not in attached.output
        assert "error" not in attached.output and "last lines of its log" not in attached.output
    assert wait_until_no_user_processes() == []


def test_detach_starts_waits_until_it_answers_and_gives_the_terminal_back(sshd: Sshd) -> None:
    result = labhop(sshd, "gpubox", "--name", "dt", "--detach", timeout=120)
    assert result.rc == 0, result.stderr
    assert "is running on gpubox (server 'dt'" in result.stderr
    hint = result.stderr.split("reattach with: ", 1)[1].splitlines()[0]
    assert shlex.split(hint) == ["labhop", "attach", "-F", str(sshd.config), "gpubox", "dt"]
    [entry] = listed(sshd)
    assert (entry["name"], entry["state"]) == ("dt", "kept")
    # No tunnel, no guard, no labhop process of this run is left on the laptop (the
    # master it opened ends with it, a moment after).
    deadline = time.monotonic() + 15
    while processes_with_in_cmdline(str(sshd.config)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_with_in_cmdline(str(sshd.config)) == []
    # The same for a script: one ready event without a local URL, then the end.
    as_json = labhop(sshd, "gpubox", "--name", "dt", "--detach", "--json", timeout=120)
    assert as_json.rc == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    [ready] = [event for event in events if event["event"] == "ready"]
    # No token either: the server's own never leaves labhop; an attach gets one of its own.
    assert "url" not in ready and "port" not in ready and "token" not in ready
    assert (ready["name"], ready["host"], ready["pid"]) == ("dt", "gpubox", entry["pid"])
    assert events[-1] == {"event": "stopped", "name": "dt", "host": "gpubox",
                          "server_running": True}
    assert labhop(sshd, "stop", "gpubox", "dt").rc == 0
