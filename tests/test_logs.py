"""Log lines: JSON objects with the request's id and the caller's extra fields."""

from __future__ import annotations

import json
import logging

from app.logs import JsonFormatter, TextFormatter, request_id


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "app.test", "levelname": "WARNING", "msg": message, "args": ()})
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_request_id_and_extras() -> None:
    token = request_id.set("req-7")
    try:
        line = JsonFormatter().format(_record('a "quoted"\nmessage', status=413, path="/remove"))
    finally:
        request_id.reset(token)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == 'a "quoted"\nmessage' and entry["level"] == "warning" and entry["logger"] == "app.test"
    assert entry["request_id"] == "req-7" and entry["status"] == 413 and entry["path"] == "/remove"
    assert entry["time"].endswith("Z")


def test_outside_a_request_there_is_no_id() -> None:
    assert "request_id" not in json.loads(JsonFormatter().format(_record("starting")))
    assert TextFormatter().format(_record("starting")).endswith("app.test: starting")


def test_exceptions_are_kept_in_one_line() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = _record("failed")
        record.exc_info = __import__("sys").exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: broken" in entry["exception"]


def test_text_lines_escape_control_characters() -> None:
    """A client's ``%0a`` in a path, decoded, would start a forged line in a text log."""
    line = TextFormatter().format(_record("GET /a\nforged\r\x1b[31m\u2028\x85 404"))
    assert line.endswith("app.test: GET /a\\nforged\\r\\x1b[31m\\u2028\\x85 404")
    assert len(line.splitlines()) == 1


def test_a_text_traceback_is_indented_under_its_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = _record("failed")
        record.exc_info = __import__("sys").exc_info()
    first, *rest = TextFormatter().format(record).splitlines()
    assert first.endswith("app.test: failed")
    assert rest and all(line.startswith("    ") for line in rest)
    assert rest[-2:] == ["    ValueError: bad", "    value"]  # even a newline in the message cannot pass for a record
