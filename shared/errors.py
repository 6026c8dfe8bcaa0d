"""The one exception tree of chatgw, its stable wire error codes and its WebSocket close codes.

Every error chatgw raises derives from :class:`ChatgwError`. Errors that reach a client carry a
stable ``code`` (an :class:`ErrorCode`) that goes on the wire in an ``error`` frame or in a
``run.failed`` event. Library errors (redis, pydantic, openai, ...) are translated into this tree
where they enter our code. The tree is documented in docs/errors.md.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """Codes that appear on the wire. Stable: never rename one, only add."""

    # Frame-level: the socket stays open.
    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    CONTENT_TOO_LONG = "content_too_long"
    ON_BUSY_NOT_ALLOWED = "on_busy_not_allowed"  # chat.on_busy names a value this server refuses
    # HTTP API only (docs/http.md).
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # Authorisation and ownership.
    UNAUTHORIZED = "unauthorized"
    ALREADY_AUTHENTICATED = "already_authenticated"
    RUN_NOT_FOUND = "run_not_found"
    CONVERSATION_NOT_FOUND = "conversation_not_found"
    CONVERSATION_BUSY = "conversation_busy"
    # Limits.
    RATE_LIMITED = "rate_limited"
    TOO_MANY_RUNS = "too_many_runs"
    TOO_MANY_SOCKETS = "too_many_sockets"
    TOO_MANY_FOLLOWS = "too_many_follows"
    BUDGET_EXCEEDED = "budget_exceeded"  # the user's daily token budget is spent (CHATGW_DAILY_TOKEN_BUDGET)
    # Service side.
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    # Run failures (inside run.failed).
    RUN_TIMEOUT = "run_timeout"
    WORKER_LOST = "worker_lost"
    STORE_UNAVAILABLE = "store_unavailable"  # the last attempt was lost because Redis was unreachable
    AGENT_ERROR = "agent_error"
    LLM_UNAUTHORIZED = "llm_unauthorized"
    LLM_RATE_LIMITED = "llm_rate_limited"
    LLM_UNAVAILABLE = "llm_unavailable"
    LLM_TIMEOUT = "llm_timeout"
    LLM_BAD_RESPONSE = "llm_bad_response"


class CloseCode(IntEnum):
    """WebSocket close codes chatgw uses (documented in docs/protocol.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    INVALID_DATA = 1007  # a text frame that is not valid UTF-8 (closed by the WebSocket layer)
    MESSAGE_TOO_BIG = 1009  # a frame over CHATGW_MAX_FRAME_BYTES
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # gateway draining: reconnect (to any replica) and resume
    TRY_AGAIN_LATER = 1013  # dependency (Redis) unavailable: reconnect with backoff
    UNAUTHORIZED = 4001  # bad or missing token
    AUTH_TIMEOUT = 4002  # no auth frame within CHATGW_AUTH_TIMEOUT_S
    TOKEN_EXPIRED = 4003  # the token's exp passed: reconnect with a fresh token and resume
    IDLE_TIMEOUT = 4004  # no client frame for CHATGW_IDLE_TIMEOUT_S
    SLOW_CONSUMER = 4008  # outbound queue overflowed: reconnect and resume, nothing is lost
    TOO_MANY_SOCKETS = 4009  # the user already has CHATGW_MAX_SOCKETS_PER_USER sockets open


class ChatgwError(Exception):
    """Root of every chatgw error."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(ChatgwError):
    """Settings are missing or invalid; raised at process start, never mid-run."""


class ProtocolError(ChatgwError):
    """A client frame that cannot be accepted. The socket stays open."""

    code = ErrorCode.BAD_FRAME

    def __init__(self, message: str, *, code: ErrorCode | None = None, ref: str | None = None) -> None:
        super().__init__(message, code=code)
        self.ref = ref  # the client's ``id`` when it could be read, echoed in the error frame


class BadJson(ProtocolError):
    code = ErrorCode.BAD_JSON


class BadFrame(ProtocolError):
    code = ErrorCode.BAD_FRAME


class UnknownType(ProtocolError):
    code = ErrorCode.UNKNOWN_TYPE


class ContentTooLong(ProtocolError):
    code = ErrorCode.CONTENT_TOO_LONG


class OnBusyNotAllowed(ProtocolError):
    code = ErrorCode.ON_BUSY_NOT_ALLOWED


class BadRequest(ChatgwError):
    """An HTTP request with a parameter that cannot be accepted (HTTP 400)."""

    code = ErrorCode.BAD_REQUEST


class AuthError(ChatgwError):
    """A token was missing, malformed or refused."""

    code = ErrorCode.UNAUTHORIZED


class RunError(ChatgwError):
    """A request about a run or conversation that cannot be served."""


class RunNotFound(RunError):
    """Unknown, expired, or another user's run: indistinguishable on purpose."""

    code = ErrorCode.RUN_NOT_FOUND


class ConversationNotFound(RunError):
    code = ErrorCode.CONVERSATION_NOT_FOUND


class ConversationBusy(RunError):
    code = ErrorCode.CONVERSATION_BUSY


class TooManyRuns(RunError):
    code = ErrorCode.TOO_MANY_RUNS


class LimitExceeded(ChatgwError):
    """A per-user limit refused the request; ``retry_after_ms`` says when to try again, if known."""

    def __init__(self, message: str, *, code: ErrorCode, retry_after_ms: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_ms = retry_after_ms


class BudgetExceeded(LimitExceeded):
    """The user spent the day's token budget; ``resets_at`` (Unix seconds) is the next UTC midnight."""

    code = ErrorCode.BUDGET_EXCEEDED

    def __init__(self, message: str, *, resets_at: int, retry_after_ms: int) -> None:
        super().__init__(message, code=ErrorCode.BUDGET_EXCEEDED, retry_after_ms=retry_after_ms)
        self.resets_at = resets_at


class StoreUnavailable(ChatgwError):
    """Redis could not be reached (translated from redis.exceptions.ConnectionError/TimeoutError)."""

    code = ErrorCode.UNAVAILABLE


class AgentError(ChatgwError):
    """The agent failed while producing an answer; ``code`` says why (llm_* or agent_error)."""

    code = ErrorCode.AGENT_ERROR
