"""Logging: secrets masked in every record that reaches stderr, in text and in JSON lines; floods
from network-facing loggers cut to one record a minute with a count of what was dropped."""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from py_server.logging_setup import JSON_EXTRA_KEYS, RateLimitFilter, configure_logging
from py_server.redaction import Redactor, basic_auth_token

USER, PASSWORD, TOKEN = "mcp_user", "Пароль-для-журнала-7", "bearer-token-0123456789"


def test_configured_logging_masks_the_password_and_its_basic_token(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", secrets=Redactor([TOKEN], basic_logins=[(USER, PASSWORD)]))
    log = logging.getLogger("py_server.test")
    log.debug("request headers: Authorization: Basic %s", basic_auth_token(USER, PASSWORD))
    log.info("login %s:%s, token %s", USER, PASSWORD, TOKEN)
    err = capsys.readouterr().err
    assert "Authorization: Basic ***" in err and "login ***, token ***" in err
    assert PASSWORD not in err and basic_auth_token(USER, PASSWORD) not in err and TOKEN not in err


def test_configured_logging_masks_secrets_in_exception_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", secrets=[PASSWORD])
    try:
        raise ConnectionError(f"cannot connect to http://{USER}:{PASSWORD}@server/base")
    except ConnectionError:
        logging.getLogger("py_server.test").exception("1C call failed")
    err = capsys.readouterr().err
    assert "1C call failed" in err and "Traceback" in err and f"http://{USER}:***@server/base" in err
    assert PASSWORD not in err


def test_configured_logging_rate_limits_only_the_loggers_that_can_flood(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    for _ in range(5):
        logging.getLogger("py_server.http_security").warning("rejected Host %r", "evil.example")
        logging.getLogger("py_server.catalog").warning("1C is down: %s", "connection refused")
    err = capsys.readouterr().err
    assert err.count("rejected Host 'evil.example'") == 1
    assert err.count("1C is down: connection refused") == 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(
    name: str = "uvicorn.error",
    msg: str = "Invalid HTTP request from %s",
    *,
    arg: str = "10.0.0.1",
    level: int = logging.WARNING,
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (arg,), None)


def test_rate_limit_passes_one_per_interval_then_says_how_many_were_dropped() -> None:
    clock = FakeClock()
    limiter = RateLimitFilter(60.0, clock=clock)
    assert limiter.filter(record()) is True
    for second in (1, 30, 59):
        clock.now = second
        assert limiter.filter(record(arg=f"10.0.0.{second}")) is False
    clock.now = 60
    again = record(arg="10.0.0.60")
    assert limiter.filter(again) is True
    assert again.getMessage() == "Invalid HTTP request from 10.0.0.60 (3 similar suppressed in the last 60 s)"
    clock.now = 61
    assert limiter.filter(record()) is False  # a new interval began at 60


def test_rate_limit_adds_no_note_when_nothing_was_dropped() -> None:
    clock = FakeClock()
    limiter = RateLimitFilter(60.0, clock=clock)
    assert limiter.filter(record()) is True
    clock.now = 120
    later = record()
    assert limiter.filter(later) is True
    assert later.getMessage() == "Invalid HTTP request from 10.0.0.1"


def test_rate_limit_counts_each_logger_message_and_level_apart() -> None:
    limiter = RateLimitFilter(60.0, clock=FakeClock())
    assert limiter.filter(record()) is True
    assert limiter.filter(record()) is False
    assert limiter.filter(record(level=logging.ERROR)) is True
    assert limiter.filter(record("uvicorn.error", "Connection lost: %s")) is True
    assert limiter.filter(record("asyncio", "Invalid HTTP request from %s")) is True


@pytest.mark.parametrize(
    ("name", "limited"),
    [("py_server.http_security", True), ("py_server.http_security.guard", True), ("uvicorn.error", True),
     ("asyncio", True), ("py_server.http_securityx", False), ("py_server.catalog", False), ("uvicorn", False)],
)  # fmt: skip
def test_rate_limit_applies_to_the_flooding_loggers_and_their_children(name: str, limited: bool) -> None:
    limiter = RateLimitFilter(60.0, clock=FakeClock())
    assert limiter.filter(record(name)) is True
    assert limiter.filter(record(name)) is not limited


def json_lines(err: str) -> list[dict[str, Any]]:
    lines = err.splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]


def test_json_format_writes_one_object_per_line_with_time_level_logger_and_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", log_format="json")
    before = datetime.datetime.now(datetime.UTC)
    logging.getLogger("py_server.catalog").warning("1C is down: %s", "connection refused")
    logging.getLogger("py_server.test").info("two\nlines")
    first, second = json_lines(capsys.readouterr().err)
    assert first == {
        "time": first["time"],
        "level": "WARNING",
        "logger": "py_server.catalog",
        "message": "1C is down: connection refused",
    }
    assert second["message"] == "two\nlines"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    logged = datetime.datetime.fromisoformat(first["time"])
    assert logged.utcoffset() == datetime.timedelta(0)
    assert before - datetime.timedelta(seconds=1) <= logged <= datetime.datetime.now(datetime.UTC)


def test_json_format_carries_the_known_extras_and_nothing_else(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", log_format="json")
    known = {
        "request_id": "r-1",
        "method": "tools/call",
        "tool": "get_metadata",
        "duration_ms": 12.5,
        "outcome": "ok",
        "session": "s-1",
        "base": "erp",
        "user": "ivanov",
    }
    logging.getLogger("py_server.mcp_server").info(
        "tools/call get_metadata", extra={**known, "arguments": {"q": 1}, "body": "{}"}
    )
    (line,) = json_lines(capsys.readouterr().err)
    assert set(known) == set(JSON_EXTRA_KEYS)
    assert line == {"time": line["time"], "level": "INFO", "logger": "py_server.mcp_server",
                    "message": "tools/call get_metadata", **known}  # fmt: skip


def test_json_format_writes_an_exception_as_one_line_with_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", log_format="json")
    try:
        raise ConnectionError("cannot connect to http://server/base")
    except ConnectionError:
        logging.getLogger("py_server.test").exception("1C call failed")
    err = capsys.readouterr().err
    (line,) = json_lines(err)
    assert err.count("\n") == 1
    assert line["message"] == "1C call failed" and line["level"] == "ERROR"
    assert line["exc_info"].startswith("Traceback") and "ConnectionError: cannot connect" in line["exc_info"]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_reaches_the_log_in_either_format(log_format: Any, capsys: pytest.CaptureFixture[str]) -> None:
    basic = basic_auth_token(USER, PASSWORD)
    configure_logging("DEBUG", secrets=Redactor([TOKEN], basic_logins=[(USER, PASSWORD)]), log_format=log_format)
    log = logging.getLogger("py_server.test")
    log.debug("request headers: Authorization: Basic %s", basic)
    log.info("login %s:%s, token %s", USER, PASSWORD, TOKEN)
    log.info("tools/call", extra={"user": f"{USER}:{PASSWORD}", "request_id": TOKEN, "base": [basic]})
    try:
        raise ConnectionError(f"cannot connect to http://{USER}:{PASSWORD}@server/base with {TOKEN}")
    except ConnectionError:
        log.exception("1C call failed with Basic %s", basic)
    err = capsys.readouterr().err
    for secret in (PASSWORD, TOKEN, basic):
        assert secret not in err
    if log_format == "json":
        lines = json_lines(err)
        assert [line["message"] for line in lines] == [
            "request headers: Authorization: Basic ***", "login ***, token ***", "tools/call",
            "1C call failed with Basic ***",
        ]  # fmt: skip
        assert (lines[2]["user"], lines[2]["request_id"], lines[2]["base"]) == ("***", "***", "['***']")
        assert "ConnectionError: cannot connect to http://***@server/base with ***" in lines[3]["exc_info"]
    else:
        assert "Authorization: Basic ***" in err and "login ***, token ***" in err and "Traceback" in err


def test_json_format_keeps_cyrillic_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", log_format="json")
    logging.getLogger("py_server.test").info("справочник %s", "Номенклатура", extra={"tool": "Остатки"})
    err = capsys.readouterr().err
    assert "справочник Номенклатура" in err and "Остатки" in err and "\\u" not in err
    assert json_lines(err)[0]["tool"] == "Остатки"


def test_json_format_still_rate_limits_the_loggers_that_can_flood(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", log_format="json")
    for _ in range(5):
        logging.getLogger("py_server.http_security").warning("rejected Host %r", "evil.example")
        logging.getLogger("py_server.catalog").warning("1C is down: %s", "connection refused")
    messages = [line["message"] for line in json_lines(capsys.readouterr().err)]
    assert messages.count("rejected Host 'evil.example'") == 1
    assert messages.count("1C is down: connection refused") == 5


def test_check_with_the_demo_logs_only_json_lines_to_stderr_when_asked() -> None:
    # The conftest has removed every MCP_* setting from os.environ, so only this one applies.
    result = subprocess.run(
        [sys.executable, "-m", "py_server", "check", "--demo", "--log-level", "DEBUG"],
        env={**os.environ, "MCP_LOG_FORMAT": "json", "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    lines = json_lines(result.stderr.decode("utf-8"))
    assert all(isinstance(line, dict) and {"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert {"DEBUG", "INFO"} <= {line["level"] for line in lines}
    assert "tools: 9" in result.stdout.decode("utf-8")  # the report itself stays plain text on stdout
