"""Wire protocol v1: pydantic models with a discriminated ``type`` and pure parse/serialise functions.

No I/O here. The gateway calls :func:`parse_client_frame` on every text frame it receives and
:func:`serialize` on every frame it sends; the worker builds event bodies with :func:`event_body`
and the append script in :mod:`shared.runstore` splices the ``seq`` in. See docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal, TypeAlias

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.errors import BadFrame, BadJson, ContentTooLong, OnBusyNotAllowed, UnknownType

PROTOCOL_VERSION = 1

# Identifiers chatgw issues are UUID hex strings; clients may only send back ids of this shape.
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ClientRef = Annotated[str, Field(max_length=128)]
MAX_SEQ = 2**53 - 1  # largest integer every JSON implementation round-trips


class _ClientFrame(BaseModel):
    # Strict: "5" is not an int and unknown fields are refused, so a typo is an error, not a no-op.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AuthFrame(_ClientFrame):
    type: Literal["auth"]
    token: Annotated[str, Field(min_length=1, max_length=8192)]


# What a chat does when its conversation already has a run in flight (CHATGW_ON_BUSY by default).
OnBusy = Literal["reject", "interrupt", "enqueue"]
ON_BUSY_CHOICES: tuple[OnBusy, ...] = ("reject", "interrupt", "enqueue")


class ChatFrame(_ClientFrame):
    type: Literal["chat"]
    content: Annotated[str, Field(min_length=1)]
    conversation_id: Identifier | None = None
    id: ClientRef | None = None
    on_busy: OnBusy | None = None


class StopFrame(_ClientFrame):
    type: Literal["stop"]
    run_id: Identifier
    id: ClientRef | None = None


class ResumeFrame(_ClientFrame):
    type: Literal["resume"]
    run_id: Identifier
    after_seq: Annotated[int, Field(ge=0, le=MAX_SEQ)] = 0
    id: ClientRef | None = None


class PingFrame(_ClientFrame):
    type: Literal["ping"]
    id: ClientRef | None = None


ClientFrame: TypeAlias = Annotated[
    AuthFrame | ChatFrame | StopFrame | ResumeFrame | PingFrame, Field(discriminator="type")
]
CLIENT_FRAME_TYPES: dict[str, type[_ClientFrame]] = {
    "auth": AuthFrame,
    "chat": ChatFrame,
    "stop": StopFrame,
    "resume": ResumeFrame,
    "ping": PingFrame,
}
_client_adapter: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


# ---------------------------------------------------------------- gateway → client: replies


class _ServerFrame(BaseModel):
    # Lenient on read so an older client survives a newer server adding fields.
    model_config = ConfigDict(extra="ignore", frozen=True)


class RunAccepted(_ServerFrame):
    type: Literal["run.accepted"] = "run.accepted"
    id: str | None = None
    run_id: str
    conversation_id: str
    # True when the run waits behind the conversation's run in flight (CHATGW_ON_BUSY=enqueue).
    queued: bool = False


RunStatus = Literal["queued", "running", "completed", "stopped", "failed"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "stopped", "failed"})


class RunState(_ServerFrame):
    """Answer to ``stop``: where the run stands (``stopping`` while a worker winds it down)."""

    type: Literal["run.state"] = "run.state"
    id: str | None = None
    run_id: str
    status: Literal["stopping", "completed", "stopped", "failed"]


class Pong(_ServerFrame):
    type: Literal["pong"] = "pong"
    id: str | None = None


class ErrorFrame(_ServerFrame):
    type: Literal["error"] = "error"
    id: str | None = None
    run_id: str | None = None
    code: str
    message: str
    retry_after_ms: int | None = None  # set on rate_limited: when a retry may succeed
    resets_at: int | None = None  # set on budget_exceeded: Unix time (s) the daily budget resets


# ---------------------------------------------------------------- run events (numbered)


class Source(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str
    title: str
    snippet: str


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    code: str
    message: str


class Usage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    prompt_tokens: int
    completion_tokens: int
    billed: bool = True  # false on a cached answer: the original run's usage, not billed again


class _RunEvent(_ServerFrame):
    run_id: str
    conversation_id: str
    seq: int
    ts: float


class RunStarted(_RunEvent):
    type: Literal["run.started"] = "run.started"
    attempt: int = 1


class RunRetrying(_RunEvent):
    """The previous attempt was lost (worker died, shut down, or was cut off from Redis): drop its
    partial text; a new attempt follows with its own run.started, in the same seq sequence."""

    type: Literal["run.retrying"] = "run.retrying"
    attempt: int
    reason: Literal["worker_lost", "worker_shutdown", "store_unavailable"] = "worker_lost"


class Retrieval(_RunEvent):
    type: Literal["retrieval"] = "retrieval"
    sources: list[Source]


class TokenEvent(_RunEvent):
    type: Literal["token"] = "token"
    text: str


class RunCompleted(_RunEvent):
    type: Literal["run.completed"] = "run.completed"
    content: str
    usage: Usage | None = None
    truncated: bool = False
    cached: bool = False  # the answer came from the answer cache, not the model


class RunStopped(_RunEvent):
    type: Literal["run.stopped"] = "run.stopped"
    content: str


class RunFailed(_RunEvent):
    type: Literal["run.failed"] = "run.failed"
    error: ErrorInfo


RunEvent: TypeAlias = Annotated[
    RunStarted | RunRetrying | Retrieval | TokenEvent | RunCompleted | RunStopped | RunFailed,
    Field(discriminator="type"),
]
TERMINAL_EVENT_TYPES: frozenset[str] = frozenset({"run.completed", "run.stopped", "run.failed"})
EVENT_STATUS: dict[str, str] = {
    "run.completed": "completed",
    "run.stopped": "stopped",
    "run.failed": "failed",
}

ServerFrame: TypeAlias = Annotated[
    RunAccepted
    | RunState
    | Pong
    | ErrorFrame
    | RunStarted
    | RunRetrying
    | Retrieval
    | TokenEvent
    | RunCompleted
    | RunStopped
    | RunFailed,
    Field(discriminator="type"),
]
_server_adapter: TypeAdapter[ServerFrame] = TypeAdapter(ServerFrame)


# ---------------------------------------------------------------- pure functions


def _describe(err: ValidationError) -> str:
    parts = []
    for detail in err.errors()[:3]:
        # The discriminator adds the frame type as the first location element; drop it.
        loc = [str(p) for p in detail["loc"]]
        if loc and loc[0] in CLIENT_FRAME_TYPES:
            loc = loc[1:]
        field = ".".join(loc) or "frame"
        parts.append(f"{field}: {detail['msg']}")
    return "; ".join(parts)


def parse_client_frame(data: str | bytes, *, max_content_chars: int | None = None) -> ClientFrame:
    """Parse one client frame or raise a ProtocolError subclass whose ``code`` goes on the wire."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"frame is not valid JSON: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise BadFrame("frame must be a JSON object")
    ref = raw.get("id")
    ref = ref if isinstance(ref, str) and len(ref) <= 128 else None
    kind = raw.get("type")
    if kind is None:
        raise BadFrame("type: field required", ref=ref)
    if not isinstance(kind, str) or kind not in CLIENT_FRAME_TYPES:
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else "<invalid>"
        raise UnknownType(
            f"unknown frame type {shown!r}; expected one of {', '.join(sorted(CLIENT_FRAME_TYPES))}", ref=ref
        )
    try:
        frame = _client_adapter.validate_python(raw)
    except ValidationError as exc:
        raise BadFrame(_describe(exc), ref=ref) from None
    if (
        max_content_chars is not None
        and isinstance(frame, ChatFrame)
        and len(frame.content) > max_content_chars
    ):
        raise ContentTooLong(
            f"content is {len(frame.content)} characters; the limit is {max_content_chars}", ref=ref
        )
    return frame


def choose_on_busy(frame: ChatFrame, *, default: OnBusy, allowed: Iterable[OnBusy]) -> OnBusy:
    """The frame's own on_busy if the server allows it (the server's default always is), else the default.

    Raises OnBusyNotAllowed (a frame error: nothing is started) for a choice the server refuses.
    """
    if frame.on_busy is None or frame.on_busy == default:
        return default
    choices = {default, *allowed}
    if frame.on_busy not in choices:
        raise OnBusyNotAllowed(
            f"on_busy {frame.on_busy!r} is not allowed here; allowed: {', '.join(sorted(choices))}",
            ref=frame.id,
        )
    return frame.on_busy


def serialize(frame: BaseModel) -> str:
    """One frame as the JSON text that goes on the wire (None fields left out)."""
    return orjson.dumps(frame.model_dump(mode="json", exclude_none=True)).decode()


def parse_server_frame(data: str | bytes) -> ServerFrame:
    """Used by clients and tests: parse anything the gateway sends."""
    return _server_adapter.validate_json(data)


def error_frame(
    code: str,
    message: str,
    *,
    ref: str | None = None,
    run_id: str | None = None,
    retry_after_ms: int | None = None,
    resets_at: int | None = None,
) -> str:
    return serialize(
        ErrorFrame(
            id=ref,
            run_id=run_id,
            code=code,
            message=message,
            retry_after_ms=retry_after_ms,
            resets_at=resets_at,
        )
    )


def event_body(event_type: str, run_id: str, conversation_id: str, ts: float, **fields: Any) -> str:
    """A run event without its ``seq``: the append script prepends ``{"seq":N,`` atomically.

    The body always starts with ``{"type":`` so it is a non-empty JSON object.
    """
    return orjson.dumps(
        {"type": event_type, "run_id": run_id, "conversation_id": conversation_id, "ts": ts, **fields}
    ).decode()


def splice_seq(body: str, seq: int) -> str:
    """What the Lua append script does, in Python (for tests and for documentation)."""
    return '{"seq":' + str(seq) + "," + body[1:]


_SEQ_HEAD = '{"seq":'
_TYPE_HEAD = '"type":"'


def peek_event(raw: str | bytes) -> tuple[int, str]:
    """Read the ``seq`` and ``type`` of a stored event without parsing it (hot path: every event).

    The append script writes ``{"seq":N,`` in front of a body that starts with ``{"type":"…"``
    (:func:`event_body`), so both sit at known places; anything else is parsed the slow way.
    """
    if isinstance(raw, str) and raw.startswith(_SEQ_HEAD):
        comma = raw.find(",", 7)
        if comma > 7 and raw.startswith(_TYPE_HEAD, comma + 1):
            start = comma + 1 + len(_TYPE_HEAD)
            end = raw.find('"', start)
            if end > start:
                return int(raw[7:comma]), raw[start:end]
    parsed = orjson.loads(raw)
    return int(parsed["seq"]), str(parsed["type"])
