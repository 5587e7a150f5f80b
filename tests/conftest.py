"""Fixtures shared by labhop's tests: the loopback sshd, remote cleanup, a hermetic env."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed import (
    USER,
    Askpass,
    SlurmCluster,
    Sshd,
    cancel_user_jobs,
    kill_user_processes,
    missing_prerequisites,
    password_login_problems,
    reset_remote_state,
    slurm_node_name,
    slurm_ready,
    start_password_sshd,
    start_sshd,
)

# Anything in these would let a test reach outside its sandbox: an agent with the developer's
# keys, a GUI password prompt, a browser on the developer's screen. SSH_ASKPASS_REQUIRE too:
# a test that wants prompts answered passes an `askpass` fixture's env() itself.
_SCRUBBED_ENV = (
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "SSH_AUTH_SOCK",
    "SSH_ASKPASS",
    "SSH_ASKPASS_REQUIRE",
)


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Each test's own $XDG_RUNTIME_DIR (and cache dir), so labhop's shared masters and run
    directories live where the test can see them, never in the developer's.

    Short on purpose (under /tmp, not in tmp_path): a ControlPath must fit in 104 bytes.
    """
    # labhop creates its config dir itself (mode 0700), so it is named here but not created.
    monkeypatch.setenv("LABHOP_CONFIG_DIR", str(tmp_path / "labhop-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in _SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    runtime = Path(tempfile.mkdtemp(prefix="lhrt-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    try:
        yield runtime
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `pytest -n 2 --dist loadgroup` (scripts/dev test): a module's tests stay on
    one worker, so its module fixtures start once, and every test of the one-node Slurm
    cluster on one worker, so that no job queues behind the other worker's. Each worker is
    a test user of its own (tests/testbed.py), so the groups cannot see each other's servers."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        uses_slurm = ("slurm" in getattr(item, "fixturenames", ())
                      # a backend test's "slurm" parameter submits jobs without the fixture
                      or (callspec is not None and "slurm" in callspec.params.values()))
        group = "slurm" if uses_slurm else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


def _require(what: str, problems: list[str], advice: str = "") -> None:
    """Skip (fail under CI) when part of the test bed is missing."""
    if not problems:
        return
    reason = f"{what} is not ready ({'; '.join(problems)}): run `sudo scripts/dev setup`"
    if advice:
        reason += f", {advice}"
    # In CI a missing test bed is a broken build, never a quietly skipped suite.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A loopback sshd logging in as lhtest; host aliases in `sshd.config` (gpubox, ...)."""
    _require("the ssh test bed", missing_prerequisites(), "then run the tests as root")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def password_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A loopback sshd that asks lhtest's password at every new connection (a 2FA stand-in).

    Its only alias, "pwbox", is in `password_sshd.config`; it accepts no key and BatchMode is
    off, so answer the prompt with the `askpass` fixture: `env=askpass.env()`.
    """
    _require(
        "the password-only ssh test host", password_login_problems(), "then run the tests as root"
    )
    server = start_password_sshd(tmp_path_factory.mktemp("pwsshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def askpass(tmp_path: Path) -> Askpass:
    """An SSH_ASKPASS that answers with lhtest's password and counts each prompt."""
    return Askpass.create(tmp_path / "askpass")


@pytest.fixture(scope="session")
def slurm(sshd: Sshd) -> SlurmCluster:
    """The one-node Slurm cluster on this machine, with the loopback sshd as its login node."""
    _require("the Slurm test cluster", slurm_ready())
    return SlurmCluster(login=sshd, node=slurm_node_name())


@pytest.fixture(autouse=True)
def _clean_remote_around_e2e(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give each e2e test a remote with no lhtest jobs or processes and no labhop state.

    Done before (a previous run may have been killed) and after (so one failing test does
    not leave a server behind for the next).
    """
    if request.node.get_closest_marker("e2e") is None:
        yield
        return
    # e2e tests need the sshd; asking for it first turns a missing test bed into its
    # skip/fail instead of an error from the cleanup below.
    request.getfixturevalue("sshd")
    _clean_remote("before")
    yield
    _clean_remote("after")


def _clean_remote(when: str) -> None:
    # Jobs first: a job's processes are lhtest's too, and Slurm would report them failed.
    cancelled = cancel_user_jobs()
    if cancelled:
        print(f"cancelled leftover Slurm jobs of {USER} {when} the test: {cancelled}")
    killed = kill_user_processes()
    if killed:
        # Shown with the test's captured output when it fails.
        print(f"killed leftover {USER} processes {when} the test: {killed}")
    reset_remote_state()


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium, for the tests that need a real browser."""
    found = shutil.which("chromium")
    if found is None:
        reason = "chromium is not installed: run `sudo scripts/dev setup`"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found
