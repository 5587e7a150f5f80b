"""`--json` on start and attach, without a host: the line format, the last event, and a
reader that goes away. The session's own events are tested end to end (test_json_e2e)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from labhop.cli.main import main
from labhop.ui import JsonUI


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_a_bad_option_before_connecting_is_one_error_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LABHOP_CONFIG_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as caught:
        main(["nosuchhost.invalid", "--json", "--gpus", "first"])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    [event] = lines(out)
    assert event["event"] == "error" and event["code"] == 2
    assert str(event["message"]).startswith("bad --gpus 'first': use auto")
    assert err.startswith("labhop: error: bad --gpus 'first'")


def test_a_config_file_error_is_an_error_event_with_status_3(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LABHOP_CONFIG_DIR", str(tmp_path))
    (tmp_path / "config.toml").write_text('[defaults]\npersist = "forever"\n')
    with pytest.raises(SystemExit) as caught:
        main(["attach", "nosuchhost.invalid", "--json"])
    assert caught.value.code == 3
    [event] = lines(capsys.readouterr().out)
    assert (event["event"], event["code"]) == ("error", 3)


def test_ls_json_is_unchanged_by_the_session_format(
        capsys: pytest.CaptureFixture[str]) -> None:
    # `ls --json` prints one array; its errors stay text on stderr.
    with pytest.raises(SystemExit) as caught:
        main(["ls", "nosuchhost.invalid", "--json", "--persist", "never"])
    assert caught.value.code == 2
    assert capsys.readouterr().out == ""


def test_the_last_event_is_stopped_or_error_and_only_one() -> None:
    out, err = io.StringIO(), io.StringIO()
    ui = JsonUI(stdout=out, stderr=err)
    ui.step("connecting to gamer")
    ui.warn("still cleaning up")
    ui.error("unknown host 'gamer'", "a detail")
    ui.end(10)
    ui.end(10)
    assert lines(out.getvalue()) == [
        {"event": "progress", "message": "connecting to gamer"},
        {"event": "warning", "message": "still cleaning up"},
        {"event": "error", "message": "unknown host 'gamer'", "code": 10,
         "details": "a detail"},
    ]
    assert "labhop: error: unknown host 'gamer'" in err.getvalue()

    out = io.StringIO()
    ui = JsonUI(stdout=out, stderr=io.StringIO())
    ui.result("http://127.0.0.1:9192/lab?token=abc")  # text for people: stderr only
    ui.event("stopped", name="proj")
    ui.end(0)
    ui.info("after the end")
    assert lines(out.getvalue()) == [{"event": "stopped", "name": "proj"}]

    out = io.StringIO()
    JsonUI(stdout=out, stderr=io.StringIO()).end(130)
    assert lines(out.getvalue()) == [
        {"event": "error", "message": "interrupted before the server was ready", "code": 130}]


def test_a_reader_that_closed_the_pipe_does_not_end_the_session() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w", encoding="utf-8") as stdout:
        ui = JsonUI(stdout=stdout, stderr=io.StringIO())
        ui.step("connecting to gamer")  # EPIPE: no exception, nothing more is written
        ui.info("still running")
        ui.end(1)
        stdout.write("x")  # the descriptor now leads to /dev/null: a flush at exit is fine
        stdout.flush()
