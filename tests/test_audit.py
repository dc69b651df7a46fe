"""The audit log: one JSON line per request with who, what, how it ended, size and masked counts;
arguments only on request; UTF-8; size rotation; stderr; and a failing write that never fails a request."""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import types
from mcp.shared.exceptions import MCPError
from pydantic import SecretStr

from py_server.audit import MASKED_META_KEY, AuditLog, NullAudit
from py_server.callers import Caller
from py_server.config import Settings
from py_server.identity import Identity, OneCLogin

HTTP_CALLER = Caller("ivanov", "streamable_http", "4f1c2b7e9d")
STDIO_CALLER = Caller("petrov", "stdio")
TIME_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
EVERY_FIELD = {
    "time",
    "who",
    "onec_user",
    "base",
    "session",
    "transport",
    "method",
    "target",
    "outcome",
    "duration_ms",
    "result_bytes",
    "masked",
}


def text_result(text: str = "готово", **fields: Any) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], **fields)


def file_log(path: Path, *, max_bytes: int = 10 * 1024 * 1024, backups: int = 5, arguments: bool = False) -> AuditLog:
    return AuditLog(path, max_bytes=max_bytes, backups=backups, include_arguments=arguments)


def lines_of(path: Path) -> list[dict[str, Any]]:
    text = path.read_bytes().decode("utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


def only_line(path: Path) -> dict[str, Any]:
    entries = lines_of(path)
    assert len(entries) == 1
    return entries[0]


def test_a_request_writes_one_line_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    now = [100.0]
    audit = AuditLog(path, max_bytes=1024 * 1024, backups=1, include_arguments=False, clock=lambda: now[0])
    result = text_result(meta={MASKED_META_KEY: {"inn": 3, "phone": 1}})
    before = datetime.now(UTC)
    with audit.record(HTTP_CALLER, "tools/call", "get_customers", {"limit": 5}) as entry:
        now[0] = 100.23456
        entry.result(result)
    after = datetime.now(UTC)
    audit.close()

    line = only_line(path)
    assert set(line) == EVERY_FIELD
    assert TIME_FORMAT.match(line["time"])
    written_at = datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before - timedelta(milliseconds=1) <= written_at <= after
    assert line["who"] == "ivanov"
    assert line["onec_user"] is None  # no service account set, no personal login
    assert line["session"] == "4f1c2b7e9d"
    assert line["transport"] == "streamable_http"
    assert line["method"] == "tools/call"
    assert line["target"] == "get_customers"
    assert line["outcome"] == "ok"
    assert line["duration_ms"] == 234.6
    assert line["result_bytes"] == len(result.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8"))
    assert line["masked"] == {"inn": 3, "phone": 1}


def test_a_stdio_caller_has_no_session(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path)
    with audit.record(STDIO_CALLER, "prompts/get", "monthly_report"):
        pass
    audit.close()
    line = only_line(path)
    assert (line["who"], line["transport"], line["session"]) == ("petrov", "stdio", None)


def test_every_request_gets_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path)
    for method, target in [
        ("tools/call", "get_customers"),
        ("resources/read", "e1c://catalog/Номенклатура"),
        ("prompts/get", "monthly_report"),
    ]:
        with audit.record(HTTP_CALLER, method, target):
            pass
    audit.close()
    assert [(line["method"], line["target"]) for line in lines_of(path)] == [
        ("tools/call", "get_customers"),
        ("resources/read", "e1c://catalog/Номенклатура"),
        ("prompts/get", "monthly_report"),
    ]


def test_arguments_are_written_as_given_only_when_enabled(tmp_path: Path) -> None:
    arguments = {"customer": "ООО Ромашка", "limit": 5, "filter": {"inn": "***"}}
    with_arguments, without = tmp_path / "with.jsonl", tmp_path / "without.jsonl"
    for path, enabled in [(with_arguments, True), (without, False)]:
        audit = file_log(path, arguments=enabled)
        with audit.record(HTTP_CALLER, "tools/call", "get_orders", arguments):
            pass
        audit.close()

    assert only_line(with_arguments)["arguments"] == arguments
    assert "arguments" not in only_line(without)
    assert "Ромашка" not in without.read_text(encoding="utf-8")


def test_a_request_without_arguments_writes_null_when_arguments_are_enabled(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path, arguments=True)
    with audit.record(HTTP_CALLER, "resources/read", "e1c://catalog/goods"):
        pass
    audit.close()
    assert only_line(path)["arguments"] is None


def test_a_tool_result_with_is_error_is_a_tool_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path)
    result = text_result("1С недоступна", is_error=True)
    with audit.record(HTTP_CALLER, "tools/call", "get_customers") as entry:
        entry.result(result)
    audit.close()
    line = only_line(path)
    assert line["outcome"] == "tool_error"
    assert line["result_bytes"] > 0
    # The error text is result content, which the audit log does not copy.
    assert "error" not in line and "1С недоступна" not in path.read_text(encoding="utf-8")


def test_a_protocol_error_is_audited_as_error_and_re_raised(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path)
    with (
        pytest.raises(MCPError, match="Unknown tool"),
        audit.record(HTTP_CALLER, "tools/call", "no_such_tool"),
    ):
        raise MCPError(types.INVALID_PARAMS, "Unknown tool 'no_such_tool'")
    audit.close()
    line = only_line(path)
    assert (line["outcome"], line["error"], line["result_bytes"]) == ("error", "Unknown tool 'no_such_tool'", None)


def test_any_exception_is_audited_as_error_with_its_message_clipped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path)
    with pytest.raises(RuntimeError), audit.record(HTTP_CALLER, "resources/read", "e1c://x"):
        raise RuntimeError("1С ответила: " + "х" * 1000)
    with pytest.raises(ValueError), audit.record(HTTP_CALLER, "resources/read", "e1c://y"):
        raise ValueError
    audit.close()
    long_message, no_message = lines_of(path)
    assert long_message["outcome"] == "error"
    assert long_message["error"].startswith("1С ответила: ххх") and len(long_message["error"]) == 200
    assert no_message["error"] == "ValueError"


def test_a_denied_request_is_audited_with_its_reason_even_when_an_error_follows(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path)
    with audit.record(HTTP_CALLER, "tools/call", "delete_everything") as entry:
        entry.deny("the tool matches MCP_TOOLS_DENY delete_*")
    with pytest.raises(MCPError), audit.record(HTTP_CALLER, "tools/call", "write_order") as entry:
        entry.deny("MCP_READ_ONLY: the tool is not read-only")
        raise MCPError(types.INVALID_PARAMS, "refused")
    audit.close()
    plain, raised = lines_of(path)
    assert (plain["outcome"], plain["reason"]) == ("denied", "the tool matches MCP_TOOLS_DENY delete_*")
    assert (raised["outcome"], raised["reason"]) == ("denied", "MCP_READ_ONLY: the tool is not read-only")
    assert "error" not in raised


@pytest.mark.anyio
async def test_a_cancelled_async_request_is_audited_as_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path)
    entered = anyio.Event()

    async def request() -> None:
        with audit.record(HTTP_CALLER, "tools/call", "slow_report"):
            entered.set()
            await anyio.Event().wait()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(request)
        await entered.wait()
        tasks.cancel_scope.cancel()
    audit.close()
    line = only_line(path)
    assert line["outcome"] == "cancelled" and "error" not in line


@pytest.mark.anyio
async def test_an_async_request_is_audited_when_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path)
    with audit.record(HTTP_CALLER, "tools/call", "get_customers") as entry:
        await anyio.lowlevel.checkpoint()
        assert not path.exists() or path.read_text(encoding="utf-8") == ""
        entry.result(text_result())
    audit.close()
    assert only_line(path)["outcome"] == "ok"


def test_masked_counts_come_from_the_result_meta_and_only_as_counts(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path)
    resource = types.ReadResourceResult(
        contents=[types.TextResourceContents(uri="e1c://clients", text="ИНН ***")],
        _meta={MASKED_META_KEY: {"inn": 2, "snils": True, "email": -1, "card": "3", "phone": 0}},
    )
    with audit.record(HTTP_CALLER, "resources/read", "e1c://clients") as entry:
        entry.result(resource)
    with audit.record(HTTP_CALLER, "tools/call", "no_masking") as entry:
        entry.result(text_result(meta={"other": {"inn": 5}}))
    with audit.record(HTTP_CALLER, "tools/call", "odd_meta") as entry:
        entry.result(text_result(meta={MASKED_META_KEY: "inn=5"}))
    audit.close()
    assert [line["masked"] for line in lines_of(path)] == [{"inn": 2, "phone": 0}, {}, {}]


def test_cyrillic_is_written_as_utf8_not_escapes(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path, arguments=True)
    with audit.record(Caller("Иванов", "stdio"), "tools/call", "Остатки_товаров", {"склад": "Основной"}):
        pass
    audit.close()
    raw = path.read_bytes()
    for text in ("Иванов", "Остатки_товаров", "склад", "Основной"):
        assert text.encode("utf-8") in raw
    assert b"\\u04" not in raw


def test_one_record_stays_one_line_whatever_the_client_sent(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path, arguments=True)
    # A lone surrogate cannot be encoded as UTF-8; line and paragraph separators split lines for some readers.
    odd_name = "tool\ud800\u2028\u2029\x85\nend"
    with audit.record(HTTP_CALLER, "tools/call", odd_name, {"значение": "a\u2028b"}):
        pass
    audit.close()
    text = path.read_bytes().decode("utf-8")
    assert len(text.splitlines()) == 1
    line = json.loads(text)
    assert line["target"] == odd_name and line["arguments"] == {"значение": "a\u2028b"}


def test_client_input_is_clipped_in_target_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path)
    with audit.record(HTTP_CALLER, "tools/call", "t" * 5000) as entry:
        entry.deny("r" * 5000)
    audit.close()
    line = only_line(path)
    assert len(line["target"]) == 200 and line["target"].endswith("…")
    assert len(line["reason"]) == 200


def test_the_record_writes_only_what_it_was_given_and_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, password = "bearer-7f3a9c-audit-token", "Пароль-1С-аудит"
    monkeypatch.setenv("MCP_AUTH_TOKEN", token)
    path = tmp_path / "audit.jsonl"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, audit_log=str(path), audit_arguments=True, onec_password=password
    )
    audit = AuditLog.from_settings(settings)
    assert settings.auth_token is not None
    with audit.record(HTTP_CALLER, "tools/call", "get_customers", {"limit": 5}) as entry:
        entry.result(text_result())
    audit.close()

    raw = path.read_text(encoding="utf-8")
    assert token not in raw and password not in raw
    line = only_line(path)
    given = {"ivanov", "4f1c2b7e9d", "streamable_http", "tools/call", "get_customers", "ok"}
    strings = {value for key, value in line.items() if isinstance(value, str) and key != "time"}
    assert strings <= given
    assert line["arguments"] == {"limit": 5}


def test_settings_give_the_audit_log_its_target_limits_and_arguments(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, audit_log=str(path), audit_arguments=True, audit_max_mb=0.0001, audit_backups=1
    )
    audit = AuditLog.from_settings(settings)
    assert audit.enabled
    for number in range(4):  # about 200 bytes each against a limit of 104 bytes: one line a file
        with audit.record(HTTP_CALLER, "tools/call", f"tool_{number}", {"n": number}):
            pass
    audit.close()
    assert only_line(path)["arguments"] == {"n": 3}
    assert only_line(Path(f"{path}.1"))["target"] == "tool_2"
    assert not Path(f"{path}.2").exists()


def test_files_rotate_by_size_keeping_the_given_number_of_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path, max_bytes=1, backups=2)  # every line fills a file
    for number in range(5):
        with audit.record(HTTP_CALLER, "tools/call", f"tool_{number}"):
            pass
        if number == 0:  # a line longer than the limit does not rotate the empty file it goes into
            assert [p.name for p in tmp_path.iterdir()] == ["audit.jsonl"]
    audit.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert only_line(path)["target"] == "tool_4"
    assert only_line(tmp_path / "audit.jsonl.1")["target"] == "tool_3"
    assert only_line(tmp_path / "audit.jsonl.2")["target"] == "tool_2"


def test_lines_share_a_file_until_it_reaches_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path, max_bytes=10_000, backups=1)
    for number in range(5):
        with audit.record(HTTP_CALLER, "tools/call", f"tool_{number}"):
            pass
    audit.close()
    assert len(lines_of(path)) == 5 and not (tmp_path / "audit.jsonl.1").exists()


def test_without_backups_a_full_file_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path, max_bytes=1, backups=0)
    for number in range(3):
        with audit.record(HTTP_CALLER, "tools/call", f"tool_{number}"):
            pass
    audit.close()
    assert [p.name for p in tmp_path.iterdir()] == ["audit.jsonl"]
    assert only_line(path)["target"] == "tool_2"


def test_a_rotation_that_fails_keeps_the_lines_and_the_backups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    backup = tmp_path / "audit.jsonl.1"
    backup.write_text('{"target":"old"}\n', encoding="utf-8")
    real_rename = os.rename

    def locked_rename(source: Any, destination: Any) -> None:
        # What Windows does while another process holds the current file open.
        if Path(source) == path:
            raise PermissionError(13, "The process cannot access the file", str(source))
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", locked_rename)
    audit = file_log(path, max_bytes=1, backups=3)
    for number in range(4):
        with audit.record(HTTP_CALLER, "tools/call", f"tool_{number}"):
            pass
    audit.close()
    assert [line["target"] for line in lines_of(path)] == ["tool_0", "tool_1", "tool_2", "tool_3"]
    # One shift before the failure, then no further attempts: the old backup survives.
    assert lines_of(tmp_path / "audit.jsonl.2") == [{"target": "old"}]
    failures = [r for r in caplog.records if r.name == "py_server.audit" and "cannot rotate" in r.getMessage()]
    assert len(failures) == 1


def test_dash_writes_only_json_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog("-", max_bytes=1, backups=0, include_arguments=False)
    for target in ("Остатки", "Продажи"):
        with audit.record(STDIO_CALLER, "tools/call", target):
            pass
    audit.close()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert [json.loads(line)["target"] for line in captured.err.splitlines()] == ["Остатки", "Продажи"]


def test_audit_lines_do_not_reach_the_normal_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    audit = file_log(tmp_path / "audit.jsonl")
    with audit.record(HTTP_CALLER, "tools/call", "distinctive_tool_name"):
        pass
    audit.close()
    assert not any("distinctive_tool_name" in record.getMessage() for record in caplog.records)


def test_a_write_failure_is_logged_once_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "missing"
    path = folder / "audit.jsonl"
    audit = file_log(path)
    for number in range(3):
        with audit.record(HTTP_CALLER, "tools/call", f"tool_{number}") as entry:
            entry.result(text_result())
    errors = [r for r in caplog.records if r.name == "py_server.audit" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(path) in errors[0].getMessage()

    folder.mkdir()
    with audit.record(HTTP_CALLER, "tools/call", "tool_3"):
        pass
    audit.close()
    assert only_line(path)["target"] == "tool_3"
    recovered = [r for r in caplog.records if r.name == "py_server.audit" and r.levelno == logging.WARNING]
    assert len(recovered) == 1 and "3 line(s) were lost" in recovered[0].getMessage()


def test_a_directory_as_target_is_logged_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    audit = file_log(tmp_path)
    with pytest.raises(MCPError), audit.record(HTTP_CALLER, "tools/call", "get_customers"):
        raise MCPError(types.INTERNAL_ERROR, "the request's own error still reaches the client")
    with audit.record(HTTP_CALLER, "tools/call", "get_customers"):
        pass
    audit.close()
    errors = [r for r in caplog.records if r.name == "py_server.audit" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and "cannot write the audit log" in errors[0].getMessage()


def test_lines_after_close_are_dropped_without_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = file_log(path)
    with audit.record(HTTP_CALLER, "tools/call", "before_close"):
        pass
    audit.close()
    with audit.record(HTTP_CALLER, "tools/call", "after_close"):
        pass
    assert only_line(path)["target"] == "before_close"


def test_without_a_target_the_audit_log_does_nothing_and_lets_exceptions_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = AuditLog.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    assert isinstance(audit, NullAudit) and not audit.enabled and not audit.include_arguments
    with audit.record(HTTP_CALLER, "tools/call", "get_customers", {"limit": 5}) as entry:
        entry.result(text_result())
        entry.deny("reason")
    with pytest.raises(MCPError), audit.record(HTTP_CALLER, "tools/call", "x"):
        raise MCPError(types.INVALID_PARAMS, "refused")
    audit.close()
    assert capsys.readouterr() == ("", "")
    assert list(tmp_path.iterdir()) == []


def test_huge_arguments_are_cut_so_they_cannot_rotate_the_trail_away(tmp_path: Path) -> None:
    from py_server.audit import MAX_ARGUMENTS_CHARS

    log = AuditLog(tmp_path / "a.jsonl", max_bytes=10**6, backups=1, include_arguments=True)
    with log.record(Caller("ivanov", "stdio"), "tools/call", "t", {"blob": "x" * 100_000}):
        pass
    log.close()
    line = json.loads((tmp_path / "a.jsonl").read_text(encoding="utf-8"))
    assert line["arguments_truncated"] is True
    assert len(line["arguments"]) == MAX_ARGUMENTS_CHARS


def test_non_finite_numbers_in_arguments_keep_the_line_valid_json(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", max_bytes=10**6, backups=1, include_arguments=True)
    with log.record(Caller("ivanov", "stdio"), "tools/call", "t", {"qty": float("nan"), "x": [float("inf")]}):
        pass
    log.close()
    text = (tmp_path / "a.jsonl").read_text(encoding="utf-8")
    line = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert line["arguments"] == {"qty": "nan", "x": ["inf"]}


def test_the_1c_user_is_the_personal_login_else_the_service_account(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, max_bytes=1024 * 1024, backups=1, include_arguments=False, service_user="mcp")
    login = OneCLogin("Иванов", SecretStr("пароль"))
    with audit.record(
        Caller("ivanov@corp", "streamable_http", "s1", Identity("ivanov@corp", onec_login=login)), "tools/call", "t"
    ):
        pass
    with audit.record(Caller("petrov@corp", "streamable_http", "s2"), "tools/call", "t"):
        pass
    audit.close()
    first, second = lines_of(path)
    assert (first["who"], first["onec_user"]) == ("ivanov@corp", "Иванов")
    assert (second["who"], second["onec_user"]) == ("petrov@corp", "mcp")
    assert "пароль" not in path.read_text(encoding="utf-8")
