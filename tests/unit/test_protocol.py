"""Wire protocol v1: parsing client frames, serialising server frames, event bodies. Pure, no I/O."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from shared import protocol as p
from shared.errors import (
    BadFrame,
    BadJson,
    ContentTooLong,
    ErrorCode,
    ProtocolError,
    UnknownType,
)

RUN = "9b2e41d07c6a4e5f8d13a0b7c4e29f61"
CONV = "4f1c2a9be0d34c7e9a51b8f3d2c6e710"


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def parse_error(data: str | bytes, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        p.parse_client_frame(data, **kwargs)
    return info.value


# ---------------------------------------------------------------- client frames: valid


MINIMAL = {
    "auth": ({"type": "auth", "token": "dev:alice"}, p.AuthFrame),
    "chat": ({"type": "chat", "content": "hi"}, p.ChatFrame),
    "stop": ({"type": "stop", "run_id": RUN}, p.StopFrame),
    "resume": ({"type": "resume", "run_id": RUN}, p.ResumeFrame),
    "ping": ({"type": "ping"}, p.PingFrame),
}

FULL = {
    "auth": {"type": "auth", "token": "dev:alice"},
    "chat": {"type": "chat", "content": "What is chatgw?", "conversation_id": CONV, "id": "c-1"},
    "stop": {"type": "stop", "run_id": RUN, "id": "s-1"},
    "resume": {"type": "resume", "run_id": RUN, "after_seq": 7, "id": "r-1"},
    "ping": {"type": "ping", "id": "p-1"},
}


def test_fixtures_cover_every_client_frame_type() -> None:
    assert set(MINIMAL) == set(FULL) == set(p.CLIENT_FRAME_TYPES)


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_minimal_client_frame_parses(kind: str) -> None:
    raw, model = MINIMAL[kind]
    parsed = p.parse_client_frame(json.dumps(raw))
    assert type(parsed) is model
    assert p.CLIENT_FRAME_TYPES[kind] is model
    assert parsed.type == kind
    # Every optional field takes its documented default.
    dumped = parsed.model_dump()
    for name, value in dumped.items():
        if name not in raw:
            assert value == (0 if name == "after_seq" else None), name


@pytest.mark.parametrize("kind", sorted(FULL))
def test_full_client_frame_parses_with_every_field(kind: str) -> None:
    raw = FULL[kind]
    parsed = p.parse_client_frame(json.dumps(raw))
    assert type(parsed) is p.CLIENT_FRAME_TYPES[kind]
    assert parsed.model_dump(exclude_none=True) == raw


@pytest.mark.parametrize("kind", sorted(FULL))
def test_client_frame_parses_from_bytes(kind: str) -> None:
    parsed = p.parse_client_frame(json.dumps(FULL[kind]).encode())
    assert parsed.model_dump(exclude_none=True) == FULL[kind]


def test_explicit_nulls_are_the_same_as_omitted_optionals() -> None:
    parsed = p.parse_client_frame(frame(type="chat", content="hi", conversation_id=None, id=None))
    assert isinstance(parsed, p.ChatFrame)
    assert parsed.conversation_id is None and parsed.id is None


@pytest.mark.parametrize("after_seq", [0, 1, 12345, p.MAX_SEQ])
def test_after_seq_accepts_its_whole_range(after_seq: int) -> None:
    parsed = p.parse_client_frame(frame(type="resume", run_id=RUN, after_seq=after_seq))
    assert isinstance(parsed, p.ResumeFrame)
    assert parsed.after_seq == after_seq


def test_max_seq_is_the_largest_exact_json_integer() -> None:
    assert p.MAX_SEQ == 2**53 - 1 == 9007199254740991


@pytest.mark.parametrize("ident", ["a", "A-z_0-9", "x" * 64, RUN])
def test_identifier_shapes_accepted(ident: str) -> None:
    assert p.parse_client_frame(frame(type="stop", run_id=ident)).run_id == ident  # type: ignore[union-attr]


def test_content_limit_is_inclusive_and_counts_characters() -> None:
    text = "é" * 10  # 10 characters, 20 UTF-8 bytes
    parsed = p.parse_client_frame(frame(type="chat", content=text), max_content_chars=10)
    assert isinstance(parsed, p.ChatFrame) and parsed.content == text


def test_content_limit_only_applies_to_chat() -> None:
    parsed = p.parse_client_frame(frame(type="auth", token="dev:" + "a" * 50), max_content_chars=1)
    assert isinstance(parsed, p.AuthFrame)


def test_no_content_limit_by_default() -> None:
    parsed = p.parse_client_frame(frame(type="chat", content="x" * 200_000))
    assert isinstance(parsed, p.ChatFrame)


def test_client_frames_are_immutable() -> None:
    parsed = p.parse_client_frame(frame(type="ping"))
    with pytest.raises(ValueError):
        parsed.id = "x"  # type: ignore[misc]


# ---------------------------------------------------------------- client frames: errors


@pytest.mark.parametrize(
    "data",
    ["", "   ", "{", '{"type": "ping"', "{'type': 'ping'}", "nul", '{"type": "ping",}', b"\xff\xfe", "[1, 2"],
)
def test_invalid_json_is_bad_json(data: str | bytes) -> None:
    err = parse_error(data)
    assert isinstance(err, BadJson)
    assert err.code is ErrorCode.BAD_JSON
    assert err.message.startswith("frame is not valid JSON")
    assert err.ref is None


@pytest.mark.parametrize("data", ["[]", '[{"type": "ping"}]', "5", "1.5", '"ping"', "null", "true"])
def test_non_object_json_is_bad_frame(data: str) -> None:
    err = parse_error(data)
    assert type(err) is BadFrame
    assert err.code is ErrorCode.BAD_FRAME
    assert "object" in err.message


@pytest.mark.parametrize("data", ["{}", frame(content="hi"), frame(id="r-9"), frame(type=None, id="r-9")])
def test_missing_type_is_bad_frame(data: str) -> None:
    err = parse_error(data)
    assert type(err) is BadFrame
    assert err.code is ErrorCode.BAD_FRAME
    assert "type" in err.message


@pytest.mark.parametrize(
    ("kind", "shown"),
    [
        ("chat.send", "'chat.send'"),
        ("CHAT", "'CHAT'"),
        ("", "''"),
        ("run.accepted", "'run.accepted'"),  # a server frame type is not a client frame type
        (5, "<invalid>"),
        (1.5, "<invalid>"),
        (True, "<invalid>"),
        (["chat"], "<invalid>"),
        ({"t": "chat"}, "<invalid>"),
        ("x" * 41, "<invalid>"),  # long strings are not echoed
    ],
)
def test_unknown_or_non_string_type_is_unknown_type(kind: object, shown: str) -> None:
    err = parse_error(frame(type=kind, id="r-1"))
    assert isinstance(err, UnknownType)
    assert err.code is ErrorCode.UNKNOWN_TYPE
    assert shown in err.message
    # The message lists what is accepted.
    for known in p.CLIENT_FRAME_TYPES:
        assert known in err.message
    assert err.ref == "r-1"


BAD_FRAMES: list[tuple[str, dict[str, Any], str]] = [
    # (case, frame, field the message must name)
    ("auth without token", {"type": "auth"}, "token"),
    ("auth empty token", {"type": "auth", "token": ""}, "token"),
    ("auth token too long", {"type": "auth", "token": "x" * 8193}, "token"),
    ("auth token not a string", {"type": "auth", "token": 5}, "token"),
    ("auth has no id field", {"type": "auth", "token": "dev:a", "id": "r-1"}, "id"),
    ("chat without content", {"type": "chat"}, "content"),
    ("chat empty content", {"type": "chat", "content": ""}, "content"),
    ("chat content not a string", {"type": "chat", "content": 5}, "content"),
    ("chat content is a list", {"type": "chat", "content": ["hi"]}, "content"),
    (
        "chat bad conversation_id",
        {"type": "chat", "content": "hi", "conversation_id": "a b"},
        "conversation_id",
    ),
    (
        "chat empty conversation_id",
        {"type": "chat", "content": "hi", "conversation_id": ""},
        "conversation_id",
    ),
    (
        "chat conversation_id is an int",
        {"type": "chat", "content": "hi", "conversation_id": 7},
        "conversation_id",
    ),
    ("chat extra field", {"type": "chat", "content": "hi", "contnet": "typo"}, "contnet"),
    ("chat id not a string", {"type": "chat", "content": "hi", "id": 5}, "id"),
    ("chat id too long", {"type": "chat", "content": "hi", "id": "x" * 129}, "id"),
    ("stop without run_id", {"type": "stop"}, "run_id"),
    ("stop run_id with slash", {"type": "stop", "run_id": "../etc"}, "run_id"),
    ("stop run_id with colon", {"type": "stop", "run_id": "a:b"}, "run_id"),
    ("stop run_id with newline", {"type": "stop", "run_id": "abc\n"}, "run_id"),
    ("stop run_id too long", {"type": "stop", "run_id": "a" * 65}, "run_id"),
    ("stop empty run_id", {"type": "stop", "run_id": ""}, "run_id"),
    ("stop run_id null", {"type": "stop", "run_id": None}, "run_id"),
    ("stop extra field", {"type": "stop", "run_id": RUN, "force": True}, "force"),
    ("resume without run_id", {"type": "resume", "after_seq": 1}, "run_id"),
    ("resume after_seq as string", {"type": "resume", "run_id": RUN, "after_seq": "5"}, "after_seq"),
    ("resume after_seq as float", {"type": "resume", "run_id": RUN, "after_seq": 5.0}, "after_seq"),
    ("resume after_seq as bool", {"type": "resume", "run_id": RUN, "after_seq": True}, "after_seq"),
    ("resume after_seq null", {"type": "resume", "run_id": RUN, "after_seq": None}, "after_seq"),
    ("resume negative after_seq", {"type": "resume", "run_id": RUN, "after_seq": -1}, "after_seq"),
    ("resume after_seq 2**53", {"type": "resume", "run_id": RUN, "after_seq": 2**53}, "after_seq"),
    ("resume after_seq 2**64", {"type": "resume", "run_id": RUN, "after_seq": 2**64}, "after_seq"),
    ("resume extra field", {"type": "resume", "run_id": RUN, "from": 3}, "from"),
    ("ping extra field", {"type": "ping", "payload": {}}, "payload"),
    ("ping id is an object", {"type": "ping", "id": {"a": 1}}, "id"),
]


@pytest.mark.parametrize(("case", "raw", "field"), BAD_FRAMES, ids=[c[0] for c in BAD_FRAMES])
def test_invalid_frame_is_bad_frame_naming_the_field(case: str, raw: dict[str, Any], field: str) -> None:
    err = parse_error(json.dumps(raw))
    assert type(err) is BadFrame, case
    assert err.code is ErrorCode.BAD_FRAME
    assert err.message.startswith(f"{field}:") or f"; {field}:" in err.message, err.message
    # The discriminator's location (the frame type) is not shown as if it were a field.
    assert not err.message.startswith(f"{raw['type']}.")


def test_bad_frame_message_lists_several_fields() -> None:
    err = parse_error(frame(type="resume", after_seq="x", extra=1))
    assert type(err) is BadFrame
    for field in ("run_id", "after_seq", "extra"):
        assert f"{field}:" in err.message


def test_bad_frame_message_is_capped_at_three_problems() -> None:
    err = parse_error(frame(type="ping", a=1, b=2, c=3, d=4, e=5))
    assert err.message.count("Extra inputs are not permitted") == 3


@pytest.mark.parametrize(
    ("limit", "content", "too_long"),
    [(5, "12345", False), (5, "123456", True), (1, "ab", True), (16_000, "x" * 16_001, True)],
)
def test_content_over_max_content_chars_is_content_too_long(limit: int, content: str, too_long: bool) -> None:
    data = frame(type="chat", content=content, id="c-7")
    if not too_long:
        assert p.parse_client_frame(data, max_content_chars=limit).content == content  # type: ignore[union-attr]
        return
    err = parse_error(data, max_content_chars=limit)
    assert isinstance(err, ContentTooLong)
    assert err.code is ErrorCode.CONTENT_TOO_LONG
    assert str(len(content)) in err.message and str(limit) in err.message
    assert err.ref == "c-7"


def test_structural_errors_win_over_content_too_long() -> None:
    err = parse_error(frame(type="chat", content="x" * 100, extra=1), max_content_chars=10)
    assert type(err) is BadFrame


# ---------------------------------------------------------------- ref (the client's id)


@pytest.mark.parametrize(
    ("data", "ref"),
    [
        (frame(type="nope", id="r-1"), "r-1"),
        (frame(type=7, id="r-2"), "r-2"),
        (frame(type="chat", id="r-3"), "r-3"),  # content missing
        (frame(type="stop", run_id="bad id", id="r-4"), "r-4"),
        (frame(type="resume", run_id=RUN, after_seq=-1, id="r-5"), "r-5"),
        (frame(type="ping", id="r-6", extra=True), "r-6"),
        (frame(type="auth", token="dev:a", id="r-7"), "r-7"),  # auth has no id, but it is readable
        (frame(content="hi", id="r-8"), "r-8"),  # type missing
        (frame(type="nope", id="x" * 128), "x" * 128),
    ],
)
def test_readable_client_id_is_carried_in_ref(data: str, ref: str) -> None:
    assert parse_error(data).ref == ref


@pytest.mark.parametrize(
    "data",
    [
        frame(type="nope"),
        frame(type="nope", id=5),
        frame(type="nope", id=None),
        frame(type="nope", id=["r-1"]),
        frame(type="nope", id="x" * 129),
        frame(type="chat", id=5),
        "[]",
        "{",
    ],
)
def test_unreadable_client_id_gives_no_ref(data: str) -> None:
    assert parse_error(data).ref is None


# ---------------------------------------------------------------- server frames


EVENT_BASE: dict[str, Any] = {"run_id": RUN, "conversation_id": CONV, "seq": 3, "ts": 1732530000.5}

SERVER_FRAMES: list[p._ServerFrame] = [
    p.RunAccepted(run_id=RUN, conversation_id=CONV),
    p.RunAccepted(id="c-1", run_id=RUN, conversation_id=CONV),
    p.RunState(run_id=RUN, status="stopping"),
    p.RunState(id="s-1", run_id=RUN, status="stopped"),
    p.RunState(run_id=RUN, status="completed"),
    p.RunState(run_id=RUN, status="failed"),
    p.Pong(),
    p.Pong(id="p-1"),
    p.ErrorFrame(code=ErrorCode.BAD_JSON, message="frame is not valid JSON"),
    p.ErrorFrame(id="r-1", run_id=RUN, code=ErrorCode.RUN_NOT_FOUND, message="run not found"),
    p.ErrorFrame(id="c-1", code=ErrorCode.RATE_LIMITED, message="slow down", retry_after_ms=1500),
    p.RunStarted(**EVENT_BASE),
    p.RunStarted(**EVENT_BASE, attempt=2),
    p.RunRetrying(**EVENT_BASE, attempt=2),
    p.RunRetrying(**EVENT_BASE, attempt=3, reason="worker_shutdown"),
    p.Retrieval(**EVENT_BASE, sources=[]),
    p.Retrieval(
        **EVENT_BASE,
        sources=[p.Source(id="d1", title="Doc", snippet="…"), p.Source(id="d2", title="", snippet="")],
    ),
    p.TokenEvent(**EVENT_BASE, text="héllo "),
    p.TokenEvent(**EVENT_BASE, text=""),
    p.RunCompleted(**EVENT_BASE, content="the answer"),
    p.RunCompleted(
        **EVENT_BASE, content="the ans", usage=p.Usage(prompt_tokens=10, completion_tokens=3), truncated=True
    ),
    p.RunStopped(**EVENT_BASE, content=""),
    p.RunStopped(**EVENT_BASE, content="partial"),
    p.RunFailed(**EVENT_BASE, error=p.ErrorInfo(code=ErrorCode.LLM_TIMEOUT, message="timed out")),
]


def server_frame_models() -> list[type[p._ServerFrame]]:
    from typing import get_args

    union = get_args(p.ServerFrame)[0]
    return list(get_args(union))


def test_fixtures_cover_every_server_frame_model() -> None:
    assert {type(f) for f in SERVER_FRAMES} == set(server_frame_models())


@pytest.mark.parametrize("original", SERVER_FRAMES, ids=lambda f: type(f).__name__)
def test_server_frame_serialises_and_round_trips(original: p._ServerFrame) -> None:
    text = p.serialize(original)
    assert isinstance(text, str)
    wire = json.loads(text)
    assert isinstance(wire, dict)
    assert wire["type"] == original.type  # type: ignore[attr-defined]
    assert None not in wire.values()  # None fields are left out
    again = p.parse_server_frame(text)
    assert type(again) is type(original)
    assert again == original
    assert p.parse_server_frame(text.encode()) == original
    assert p.serialize(again) == text


def test_serialize_is_compact_json_without_nulls() -> None:
    text = p.serialize(p.Pong())
    assert text == '{"type":"pong"}'
    assert p.serialize(p.RunState(id="s", run_id="r", status="stopping")) == (
        '{"type":"run.state","id":"s","run_id":"r","status":"stopping"}'
    )


def test_serialize_writes_error_codes_as_plain_strings() -> None:
    wire = json.loads(p.serialize(p.ErrorFrame(code=ErrorCode.CONVERSATION_BUSY, message="busy")))
    assert wire == {"type": "error", "code": "conversation_busy", "message": "busy"}


def test_serialize_keeps_false_and_empty_values() -> None:
    wire = json.loads(p.serialize(p.RunCompleted(**EVENT_BASE, content="")))
    assert wire["content"] == "" and wire["truncated"] is False
    assert "usage" not in wire


def test_parse_server_frame_ignores_unknown_fields() -> None:
    parsed = p.parse_server_frame('{"type":"pong","id":"p","added_in_v2":{"x":1}}')
    assert parsed == p.Pong(id="p")


@pytest.mark.parametrize(
    "data",
    [
        '{"type":"chat","content":"hi"}',  # a client frame
        '{"type":"nope"}',
        '{"type":"token","run_id":"r","conversation_id":"c","seq":1,"ts":1.0}',  # text missing
        '{"type":"run.state","run_id":"r","status":"running"}',  # not an answer to stop
        "{}",
        "[]",
        "{",
    ],
)
def test_parse_server_frame_rejects_invalid_frames(data: str) -> None:
    with pytest.raises(ValueError):  # pydantic.ValidationError is a ValueError
        p.parse_server_frame(data)


@pytest.mark.parametrize(
    ("ref", "run_id", "expected"),
    [
        (None, None, {"type": "error", "code": "bad_frame", "message": "m"}),
        ("r-1", None, {"type": "error", "id": "r-1", "code": "bad_frame", "message": "m"}),
        ("r-1", RUN, {"type": "error", "id": "r-1", "run_id": RUN, "code": "bad_frame", "message": "m"}),
    ],
)
def test_error_frame(ref: str | None, run_id: str | None, expected: dict[str, str]) -> None:
    text = p.error_frame(ErrorCode.BAD_FRAME, "m", ref=ref, run_id=run_id)
    assert json.loads(text) == expected
    assert isinstance(p.parse_server_frame(text), p.ErrorFrame)


def test_error_frame_carries_retry_after_ms_only_when_given() -> None:
    wire = json.loads(p.error_frame(ErrorCode.RATE_LIMITED, "slow down", ref="c-1", retry_after_ms=250))
    assert wire == {
        "type": "error",
        "id": "c-1",
        "code": "rate_limited",
        "message": "slow down",
        "retry_after_ms": 250,
    }
    assert "retry_after_ms" not in json.loads(p.error_frame(ErrorCode.RATE_LIMITED, "slow down"))


def test_error_frame_from_a_protocol_error() -> None:
    err = parse_error(frame(type="chat", id="c-1"))
    wire = json.loads(p.error_frame(err.code, err.message, ref=err.ref))
    assert wire["code"] == "bad_frame" and wire["id"] == "c-1" and "content" in wire["message"]


# ---------------------------------------------------------------- run events: body, splice, peek


EVENT_CASES: list[tuple[str, dict[str, Any], type[p._ServerFrame]]] = [
    ("run.started", {"attempt": 2}, p.RunStarted),
    ("run.started", {}, p.RunStarted),
    ("run.retrying", {"attempt": 2, "reason": "worker_lost"}, p.RunRetrying),
    ("run.retrying", {"attempt": 3, "reason": "worker_shutdown"}, p.RunRetrying),
    ("retrieval", {"sources": [{"id": "d1", "title": "T", "snippet": "S"}]}, p.Retrieval),
    ("token", {"text": "hel"}, p.TokenEvent),
    (
        "run.completed",
        {"content": "all", "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
        p.RunCompleted,
    ),
    ("run.completed", {"content": "all", "truncated": True}, p.RunCompleted),
    ("run.stopped", {"content": "part"}, p.RunStopped),
    ("run.failed", {"error": {"code": "worker_lost", "message": "gone"}}, p.RunFailed),
]


def test_event_cases_cover_every_event_type() -> None:
    covered = {kind for kind, _, _ in EVENT_CASES}
    assert covered == {
        m.model_fields["type"].default for m in server_frame_models() if "seq" in m.model_fields
    }
    assert covered >= p.TERMINAL_EVENT_TYPES


@pytest.mark.parametrize(("kind", "fields", "model"), EVENT_CASES, ids=[c[0] for c in EVENT_CASES])
def test_event_body_has_no_seq_and_starts_with_type(kind: str, fields: dict[str, Any], model: type) -> None:
    body = p.event_body(kind, RUN, CONV, 1732530000.25, **fields)
    assert body.startswith('{"type":')
    decoded = orjson.loads(body)
    assert "seq" not in decoded
    assert decoded == {"type": kind, "run_id": RUN, "conversation_id": CONV, "ts": 1732530000.25, **fields}


@pytest.mark.parametrize("seq", [1, 2, 10, 12345, p.MAX_SEQ])
@pytest.mark.parametrize(("kind", "fields", "model"), EVENT_CASES, ids=[c[0] for c in EVENT_CASES])
def test_spliced_event_parses_as_its_model(kind: str, fields: dict[str, Any], model: type, seq: int) -> None:
    body = p.event_body(kind, RUN, CONV, 1732530000.25, **fields)
    raw = p.splice_seq(body, seq)
    assert raw.startswith(f'{{"seq":{seq},"type":')
    event = p.parse_server_frame(raw)
    assert type(event) is model
    assert event.seq == seq  # type: ignore[union-attr]
    assert event.run_id == RUN and event.conversation_id == CONV  # type: ignore[union-attr]
    assert event.ts == 1732530000.25  # type: ignore[union-attr]
    dumped = event.model_dump(mode="json", exclude_unset=True)  # what the event said (no defaults added)
    for name, value in fields.items():
        assert dumped[name] == value
    assert p.peek_event(raw) == (seq, kind)
    assert p.peek_event(raw.encode()) == (seq, kind)


def test_splice_matches_the_lua_append_script() -> None:
    # The Lua script builds '{"seq":' .. seq .. ',' .. string.sub(body, 2)
    from shared.runstore import APPEND_SCRIPT

    assert """'{"seq":' .. seq .. ',' .. string.sub(body, 2)""" in APPEND_SCRIPT
    body = p.event_body("token", RUN, CONV, 1.0, text="x")
    assert p.splice_seq(body, 4) == '{"seq":4,' + body[1:]


def test_event_body_serialises_unicode_and_floats_exactly() -> None:
    body = p.event_body("token", RUN, CONV, 0.1, text='é "quoted" \n 🙂')
    event = p.parse_server_frame(p.splice_seq(body, 1))
    assert isinstance(event, p.TokenEvent)
    assert event.text == 'é "quoted" \n 🙂' and event.ts == 0.1


def test_peek_event_reads_seq_and_type_only() -> None:
    assert p.peek_event('{"seq":7,"type":"token","whatever":[1,2]}') == (7, "token")


@pytest.mark.parametrize("raw", ['{"type":"token"}', '{"seq":1}', "{"])
def test_peek_event_rejects_what_is_not_a_stored_event(raw: str) -> None:
    with pytest.raises((KeyError, ValueError)):
        p.peek_event(raw)


# ---------------------------------------------------------------- constants


def test_terminal_sets_agree() -> None:
    assert set(p.EVENT_STATUS) == p.TERMINAL_EVENT_TYPES
    assert set(p.EVENT_STATUS.values()) == p.TERMINAL_STATUSES == {"completed", "stopped", "failed"}
    assert set(p.RunStatus.__args__) > p.TERMINAL_STATUSES  # type: ignore[attr-defined]


def test_run_state_statuses() -> None:
    status = p.RunState.model_fields["status"].annotation
    assert set(status.__args__) == {"stopping"} | p.TERMINAL_STATUSES  # type: ignore[union-attr]


def test_protocol_version() -> None:
    assert p.PROTOCOL_VERSION == 1
