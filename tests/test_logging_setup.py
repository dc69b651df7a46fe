"""Logging: secrets masked in every record that reaches stderr, and floods from network-facing
loggers cut to one record a minute with a count of what was dropped."""

from __future__ import annotations

import logging

import pytest

from py_server.logging_setup import RateLimitFilter, configure_logging
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
