"""Property: whatever a client throws at a live gateway, it gets a well-formed answer or a documented
close, the gateway logs no traceback, nothing is written to Redis or queued, and the socket (or a
new one) keeps working.

Thousands of random and malformed frames — wrong types, huge numbers, deep nesting, invalid UTF-8,
binary frames, unknown and missing fields, near-valid frames — go to a real gateway process with no
worker. Each answer is checked against an oracle: the same parser run locally says which error code
(or pong) the frame deserves. Valid ``chat`` frames are never sent (they would rightly create a
run): a frame that happens to be one gets an unknown field added.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis import Redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from shared.errors import CloseCode, ProtocolError
from shared.keys import Keys
from shared.protocol import (
    MAX_SEQ,
    AuthFrame,
    ChatFrame,
    PingFrame,
    ResumeFrame,
    StopFrame,
    parse_client_frame,
    parse_server_frame,
)
from shared.testing.stack import Gateway, Stack

MAX_FRAME = 4096  # small, so oversized frames are cheap to send
MAX_CONTENT = 200
USER = "fuzzer"
EXAMPLES = 2000


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        redis_url,
        Path(tmp_path_factory.mktemp("fuzz")),
        CHATGW_MAX_FRAME_BYTES=str(MAX_FRAME),
        CHATGW_MAX_CONTENT_CHARS=str(MAX_CONTENT),
        CHATGW_MAX_SOCKETS_PER_USER="1000",
        CHATGW_AUTH_TIMEOUT_S="10",
    )
    s.start_gateway()  # and no worker
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Gateway:
    return stack.gateways[0]


# ---------------------------------------------------------------- what to send


@dataclass(frozen=True)
class Payload:
    kind: str  # "text", "binary" or "bad_utf8" (bytes sent as a text frame)
    data: str | bytes

    @property
    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else len(self.data.encode())


utf8_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
any_text = st.text(max_size=40)  # may hold lone surrogates: only ever sent JSON-escaped
huge_numbers = st.sampled_from([2**53, 2**63, 2**64, -(2**63) - 1, 10**400, 1e308, -0.0, 5e-324])
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | huge_numbers | st.floats() | any_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
identifiers = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z") | st.uuids().map(lambda u: u.hex)
frame_types = st.sampled_from(["auth", "chat", "stop", "resume", "ping"])
weird_types = (
    st.sampled_from(["Ping", " ping", "ping ", "PING", "ping\u0000", "run.accepted", "error", "", "auth\n"])
    | utf8_text
    | json_values
)
valid_fields: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "auth": {"token": st.text(min_size=1, max_size=30)},
    "chat": {
        "content": st.text(min_size=1, max_size=50)
        | st.text(min_size=MAX_CONTENT + 1, max_size=MAX_CONTENT + 9),
        "conversation_id": identifiers,
        "id": utf8_text,
    },
    "stop": {"run_id": identifiers, "id": utf8_text},
    "resume": {"run_id": identifiers, "after_seq": st.integers(0, MAX_SEQ), "id": utf8_text},
    "ping": {"id": utf8_text},
}
field_names = st.sampled_from(["type", "id", "token", "content", "conversation_id", "run_id", "after_seq"])


def dump(value: Any, ensure_ascii: bool) -> str:
    text = json.dumps(value, ensure_ascii=ensure_ascii)  # NaN/Infinity come out as invalid JSON: good
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: send it escaped instead
        text = json.dumps(value, ensure_ascii=True)
    return text


@st.composite
def near_valid(draw: st.DrawFn) -> Payload:
    kind = draw(frame_types)
    frame: dict[str, Any] = {"type": kind}
    for name, strategy in valid_fields[kind].items():
        if draw(st.booleans()):
            frame[name] = draw(strategy)
    for _ in range(draw(st.integers(0, 3))):
        mutation = draw(st.sampled_from(["drop", "add", "retype", "rekind", "huge"]))
        if mutation == "drop" and frame:
            frame.pop(draw(st.sampled_from(sorted(frame))))
        elif mutation == "add":
            frame[draw(st.one_of(field_names, any_text))] = draw(json_values)
        elif mutation == "retype" and frame:
            frame[draw(st.sampled_from(sorted(frame)))] = draw(json_values)
        elif mutation == "rekind":
            frame["type"] = draw(weird_types)
        elif mutation == "huge":
            frame[draw(field_names)] = draw(huge_numbers | st.just("x" * (MAX_CONTENT + 1)))
    return Payload("text", dump(frame, draw(st.booleans())))


@st.composite
def raw_text(draw: st.DrawFn) -> Payload:
    choice = draw(st.integers(0, 7))
    if choice == 0:
        return Payload("text", draw(st.text(alphabet=st.characters(codec="utf-8"), max_size=200)))
    if choice == 1:  # any JSON value at the top level
        return Payload("text", dump(draw(json_values), draw(st.booleans())))
    if choice == 2:  # truncated or padded valid frames
        text = '{"type":"resume","run_id":"abc","after_seq":1,"id":"x"}'
        cut = draw(st.integers(0, len(text)))
        return Payload("text", text[:cut] + draw(st.sampled_from(["", "}", "]", ",", " x", "\u00a0"])))
    if choice == 3:  # deep nesting, at the top or inside a field
        depth = draw(st.integers(1, 3000))
        opening, closing = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        nested = opening * depth + "1" + closing * depth
        inside = draw(st.booleans())
        return Payload("text", '{"type":"ping","id":' + nested + "}" if inside else nested)
    if choice == 4:  # numbers beyond int64 and doubles
        number = draw(
            st.sampled_from(["9" * 400, "1e999999", "-1e400", "1" * 30, "0x10", "01", "-", "1.", ".5"])
        )
        return Payload("text", '{"type":"resume","run_id":"r","after_seq":' + number + "}")
    if choice == 5:  # duplicate keys, BOM, control characters, escapes
        return Payload(
            "text",
            draw(
                st.sampled_from(
                    [
                        '{"type":"ping","type":"chat","content":"x"}',
                        '\ufeff{"type":"ping"}',
                        '{"type":"ping","id":"\\ud800"}',
                        '{"type":"ping","id":"\\udc00\\ud800"}',
                        '{"type":"ping","id":"\x01"}',
                        '{"type":"p\\u0069ng"}',
                        "{'type':'ping'}",
                        '{"type":"ping"}{"type":"ping"}',
                        '{"type":"ping"}\n{"type":"ping"}',
                        '[{"type":"ping"}]',
                        "",
                        " ",
                        "null",
                    ]
                )
            ),
        )
    if choice == 6:  # over the frame limit
        return Payload("text", '{"type":"chat","content":"' + "x" * MAX_FRAME + '"}')
    return Payload("text", draw(st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=50)))


bad_utf8 = st.builds(
    lambda head, tail: Payload("bad_utf8", b'{"type":"ping","id":"' + head + b"\xff" + tail + b'"}'),
    st.binary(max_size=10),
    st.sampled_from([b"", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]),
)
binary_frames = st.one_of(
    st.binary(max_size=200), st.sampled_from([b'{"type":"ping"}', b"\xff\xfe", b"\x00" * 10])
).map(lambda data: Payload("binary", data))

# Mostly near-valid frames: they reach the deepest code.
payloads = st.one_of(
    near_valid(), near_valid(), near_valid(), raw_text(), raw_text(), binary_frames, bad_utf8
)


def without_valid_chat(payload: Payload, *, pre_auth: bool = False) -> Payload:
    """A valid chat would create a run (correctly): make it invalid by an unknown field.
    Before authentication, a valid dev token would log in (silently): same treatment."""
    if payload.kind != "text" or payload.size > MAX_FRAME:
        return payload
    try:
        frame = parse_client_frame(payload.data, max_content_chars=MAX_CONTENT)
    except ProtocolError:
        return payload
    risky = isinstance(frame, ChatFrame) or (pre_auth and isinstance(frame, AuthFrame))
    if not risky:
        return payload
    body = orjson.loads(payload.data)
    body["fuzz_unknown_field"] = 1
    return Payload("text", json.dumps(body))


# ---------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class Expect:
    close: int | None = None  # a close code, or None for one reply frame
    reply: str = ""  # "pong" or an error code
    ref: str | None = None


def expected(payload: Payload) -> Expect:
    if payload.kind == "bad_utf8":
        return Expect(close=CloseCode.INVALID_DATA)
    if payload.size > MAX_FRAME:
        return Expect(close=CloseCode.MESSAGE_TOO_BIG)
    if payload.kind == "binary":
        return Expect(reply="bad_frame")
    assert isinstance(payload.data, str)
    try:
        frame = parse_client_frame(payload.data, max_content_chars=MAX_CONTENT)
    except ProtocolError as exc:
        return Expect(reply=exc.code, ref=exc.ref)
    if isinstance(frame, PingFrame):
        return Expect(reply="pong", ref=frame.id)
    if isinstance(frame, StopFrame | ResumeFrame):  # nothing exists: no run was ever created
        return Expect(reply="run_not_found", ref=frame.id)
    assert isinstance(frame, AuthFrame), frame
    return Expect(reply="already_authenticated")


def send(ws: ClientConnection, payload: Payload) -> None:
    if payload.kind == "bad_utf8":
        ws.send(payload.data, text=True)
    else:
        ws.send(payload.data)


def reply_of(ws: ClientConnection) -> tuple[dict[str, Any] | None, int | None]:
    """The next frame, or (None, close code) when the gateway closed the socket."""
    try:
        raw = ws.recv(timeout=5)
    except ConnectionClosed:
        return None, ws.close_code
    parse_server_frame(raw)  # well-formed, or this raises
    frame: dict[str, Any] = json.loads(raw)
    return frame, None


class Client:
    """One authenticated socket, replaced only when the gateway closes it (as documented)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sockets = contextlib.ExitStack()
        self.ws = self._open()
        self.reconnects = 0

    def _open(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer dev:{USER}"}
        return self._sockets.enter_context(connect(self.url, additional_headers=headers, max_size=None))

    def reopen(self) -> None:
        self.ws.close()
        self.ws = self._open()
        self.reconnects += 1

    def close(self) -> None:
        self._sockets.close()


# ---------------------------------------------------------------- properties


def assert_clean(gateway: Gateway, stack: Stack, redis_url: str, allowed_keys: set[str]) -> None:
    log = gateway.output()
    assert "Traceback" not in log, log[-5000:]
    assert not re.search(r"\b(ERROR|CRITICAL)\b", log), log[-5000:]
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = set(client.scan_iter(f"{stack.prefix}:*", count=1000))
    finally:
        client.close()
    # Nothing but the limit keys: no run, conversation, log, and no Dramatiq queue or message.
    # (The gateway's socket-slot lease, P:gateways and P:gateway:{id}:users, is the gateway's own.)
    # The queue-depth figures are the gateways' metrics cache, also their own.
    own = (f"{stack.prefix}:gateway", f"{stack.prefix}:stats:")
    keys = {key for key in keys if not key.startswith(own)}
    assert keys <= allowed_keys, keys - allowed_keys


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[Client]:
    c = Client(gateway.url)
    try:
        yield c
    finally:
        c.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
@given(payload=payloads)
def test_every_frame_gets_a_well_formed_answer(client: Client, payload: Payload) -> None:
    payload = without_valid_chat(payload)
    expect = expected(payload)
    event(f"close {expect.close}" if expect.close else expect.reply)  # --hypothesis-show-statistics
    with contextlib.suppress(ConnectionClosed):  # closed while still sending (oversized): checked below
        send(client.ws, payload)
    frame, code = reply_of(client.ws)
    if expect.close is not None:
        assert frame is None and code == expect.close, (frame, code)
        client.reopen()
        return
    assert frame is not None, f"socket closed with {code} instead of answering"
    if expect.reply == "pong":
        assert frame["type"] == "pong", frame
    else:
        assert frame["type"] == "error" and frame["code"] == expect.reply, (frame, expect)
    assert frame.get("id") == expect.ref, (frame, expect)


def test_after_the_fuzz_the_socket_works_and_nothing_leaked(
    client: Client, gateway: Gateway, stack: Stack, redis_url: str
) -> None:
    # Runs after the property above (file order), on the same socket.
    client.ws.send('{"type":"ping","id":"still-alive"}')
    frame, code = reply_of(client.ws)
    assert frame == {"type": "pong", "id": "still-alive"}, code
    assert client.reconnects < EXAMPLES // 3  # most frames were answered on one socket
    assert_clean(gateway, stack, redis_url, {Keys(stack.prefix).user_sockets(USER)})


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(payload=payloads)
def test_before_authentication_any_frame_but_auth_is_refused(gateway: Gateway, payload: Payload) -> None:
    payload = without_valid_chat(payload, pre_auth=True)
    expect = expected(payload)
    with connect(gateway.url, max_size=None) as ws:
        with contextlib.suppress(ConnectionClosed):
            send(ws, payload)
        frame, code = reply_of(ws)
        if expect.close is not None:
            assert frame is None and code == expect.close, (frame, code)
            return
        assert frame is not None and frame["type"] == "error" and frame["code"] == "unauthorized", frame
        frame, code = reply_of(ws)
        assert frame is None and code == CloseCode.UNAUTHORIZED, (frame, code)


def test_after_the_pre_auth_fuzz_nothing_leaked(gateway: Gateway, stack: Stack, redis_url: str) -> None:
    assert_clean(gateway, stack, redis_url, {Keys(stack.prefix).user_sockets(USER)})
