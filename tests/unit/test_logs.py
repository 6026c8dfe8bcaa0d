"""JSON log lines and the log context (user, run_id, conversation_id) bound per task."""

from __future__ import annotations

import asyncio
import io
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from shared import logs
from shared.settings import load_settings


@pytest.fixture
def json_lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(f"test_logs.{id(stream)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line(json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_lines
    logger.info("two\nlines and %s", "an arg")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    first, second = lines(stream)
    assert first.keys() == {"ts", "level", "logger", "message", "process"}
    assert first["message"] == "two\nlines and an arg" and first["level"] == "INFO"
    assert first["logger"] == logger.name and isinstance(first["process"], int)
    assert first["ts"].endswith("Z") and first["ts"][10] == "T" and len(first["ts"]) == 24
    assert second["level"] == "ERROR" and second["message"] == "it failed"
    assert second["exc_info"].startswith("Traceback") and "ValueError: boom" in second["exc_info"]


def test_bound_fields_appear_and_unbind(json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_lines
    with logs.bound(user="alice"):
        token = logs.bind(run_id="r1", conversation_id="c1")
        logger.info("in a run")
        logs.bind(run_id=None)  # a frame that names no run clears it
        logger.info("between runs")
        logs.unbind(token)
        logger.info("only the user")
    logger.info("nothing bound")
    in_run, between, user_only, nothing = lines(stream)
    assert (in_run["user"], in_run["run_id"], in_run["conversation_id"]) == ("alice", "r1", "c1")
    assert "run_id" not in between and between["conversation_id"] == "c1"
    assert user_only["user"] == "alice" and "run_id" not in user_only and "conversation_id" not in user_only
    assert not {"user", "run_id", "conversation_id"} & nothing.keys()
    assert logs.log_context() == {}


async def test_each_task_has_its_own_context() -> None:
    logs.bind(user="parent")

    async def run(run_id: str) -> dict[str, str]:
        logs.bind(run_id=run_id)
        await asyncio.sleep(0)
        return logs.log_context()

    seen = await asyncio.gather(run("a"), run("b"))
    assert seen == [{"user": "parent", "run_id": "a"}, {"user": "parent", "run_id": "b"}]
    assert logs.log_context() == {"user": "parent"}  # the tasks' bindings stay in the tasks


def test_uvicorn_records_reach_the_root_handler_as_json() -> None:
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.make_formatter("json"))
    root.addHandler(handler)
    try:
        logging.config.dictConfig(logs.uvicorn_json_log_config())
        access_line = '%s - "%s %s HTTP/%s" %d'  # uvicorn's access log call
        logging.getLogger("uvicorn.access").warning(access_line, "1.2.3.4", "GET", "/", "1.1", 200)
        logging.getLogger("uvicorn.error").warning("Application startup complete.")
    finally:
        root.removeHandler(handler)
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate = propagate
    access, error = lines(stream)
    assert access["logger"] == "uvicorn.access" and access["message"] == '1.2.3.4 - "GET / HTTP/1.1" 200'
    assert error["logger"] == "uvicorn.error" and error["message"] == "Application startup complete."


def test_text_stays_the_default_and_json_is_selectable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATGW_LOG_FORMAT", raising=False)
    assert load_settings().log_format == "text"
    assert type(logs.make_formatter("text")) is logging.Formatter
    monkeypatch.setenv("CHATGW_LOG_FORMAT", "json")
    assert load_settings().log_format == "json"
    assert isinstance(logs.make_formatter("json"), logs.JsonFormatter)
