"""The chat model a worker runs (offline or any OpenAI-compatible endpoint) and the translation of the
model client's errors into :class:`shared.errors.AgentError` codes.

:func:`build_chat_model` validates the settings and builds the model once per worker process, so a
misconfiguration is a :class:`~shared.errors.ConfigError` at worker start rather than a failed first
chat. :func:`translate_llm_error` is applied where model calls enter our code (the graph's generate
node): openai/httpx/langchain exceptions become ``llm_*`` codes with fixed messages, so nothing the
upstream sent (which may echo an API key) reaches a client.

Retries: the openai client's own ``max_retries`` (``CHATGW_LLM_MAX_RETRIES``) retries a request that
failed with 408/409/429/5xx, a timeout or a connection error, with exponential backoff (0.5 s
doubling, capped at 8 s, or the server's ``Retry-After``). It only covers getting the response
headers: once the stream has started (tokens may already be on the wire) nothing is retried, which is
what we want, since a retry would send the client a second, different answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType, UnionType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pydantic
from langchain_core import exceptions as lc_errors
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from pydantic import SecretStr

from shared.errors import AgentError, ConfigError, ErrorCode
from shared.settings import Settings
from worker.agent.offline import OfflineChatModel

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

try:  # openai>=3 is built on httpx2; earlier versions on httpx, which has the same API
    import httpx2 as http
except ImportError:  # pragma: no cover
    import httpx as http  # type: ignore[no-redef]

log = logging.getLogger(__name__)

OPENAI_API_URL = "https://api.openai.com/v1"
# Self-hosted servers (vLLM, Ollama, llama.cpp) accept any key but the client insists on one.
PLACEHOLDER_API_KEY = "chatgw-no-key"
# Where build_chat_model leaves the system prompt for the graph (the model's metadata travels with it).
SYSTEM_PROMPT_KEY = "chatgw_system_prompt"

# Top-level packages of the model client, and of code that calls into it on our behalf (see
# _raised_in_client); packages in neither set (json, langchain_core, pydantic) are neutral.
_CLIENT_PACKAGES = frozenset({"openai", "langchain_openai", "httpx", "httpx2", "httpcore"})
_OUR_PACKAGES = frozenset({"worker", "shared", "gateway", "langgraph"})


# ---------------------------------------------------------------------------------------- building


def build_chat_model(settings: Settings) -> BaseChatModel:
    """The chat model ``CHATGW_LLM`` names, carrying ``CHATGW_SYSTEM_PROMPT`` (see :func:`system_prompt_of`).

    Raises ConfigError for a setting the model cannot run with. Touches no network.
    """
    metadata = {SYSTEM_PROMPT_KEY: settings.system_prompt}
    if settings.llm == "offline":
        return OfflineChatModel(
            token_delay_s=settings.offline_token_delay_ms / 1000.0,
            max_tokens=settings.offline_max_tokens,
            metadata=metadata,
        )
    if settings.llm == "openai":
        return build_openai_model(settings, metadata=metadata)
    raise ConfigError(f"CHATGW_LLM: unknown model kind {settings.llm!r}; use offline or openai")


def build_openai_model(settings: Settings, metadata: dict[str, Any] | None = None) -> ChatOpenAI:
    from langchain_openai import ChatOpenAI

    model = (settings.llm_model or "").strip()
    if not model:
        raise ConfigError(
            "CHATGW_LLM=openai needs CHATGW_LLM_MODEL (e.g. gpt-4o-mini, or the served model name)"
        )
    base_url = check_base_url(settings.llm_base_url) if settings.llm_base_url else None
    key = settings.llm_api_key.get_secret_value().strip() if settings.llm_api_key else ""
    is_openai = base_url is None or urlsplit(base_url).hostname == "api.openai.com"
    if not key:
        if is_openai:
            raise ConfigError(
                "CHATGW_LLM=openai against the OpenAI API needs an API key: set CHATGW_LLM_API_KEY or "
                "OPENAI_API_KEY (or CHATGW_LLM_BASE_URL for a self-hosted server)"
            )
        key = PLACEHOLDER_API_KEY
    extra_body: dict[str, Any] | None = None
    if settings.llm_max_tokens is not None and not is_openai:
        # ChatOpenAI sends only max_completion_tokens, which Ollama and older llama.cpp ignore (the
        # answer would be unbounded); they read max_tokens. OpenAI itself gets the modern field alone.
        extra_body = {"max_tokens": settings.llm_max_tokens}
    try:
        return ChatOpenAI(
            model=model,
            # Always explicit, so OPENAI_BASE_URL / OPENAI_API_BASE in the environment cannot redirect us.
            base_url=base_url or OPENAI_API_URL,
            api_key=SecretStr(key),
            temperature=settings.llm_temperature,
            max_completion_tokens=settings.llm_max_tokens,
            extra_body=extra_body,
            # httpx timeout: connect, and each read (so the longest silence before/between tokens).
            timeout=settings.llm_timeout_s,
            # Same bound on silence *between parsed chunks*, which SSE keepalive comments do not reset.
            stream_chunk_timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
            streaming=True,
            # Asks for the final usage chunk; AgentResult.usage (run.completed) comes from it.
            stream_usage=True,
            metadata=metadata,
        )
    except (ValueError, pydantic.ValidationError) as exc:
        raise ConfigError(f"CHATGW_LLM=openai: cannot build the model client: {exc}") from None


def check_base_url(url: str) -> str:
    """``url`` if it is a usable http(s) base URL (trailing slash dropped), else ConfigError."""
    shown = _redact_url(url)
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise ConfigError(f"CHATGW_LLM_BASE_URL is not a URL: {shown!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"CHATGW_LLM_BASE_URL must be an http(s) URL such as http://localhost:8000/v1, not {shown!r}"
        )
    return url.strip().rstrip("/")


def _redact_url(url: str) -> str:
    # Credentials can hide in a URL's userinfo or query string; never echo them into logs.
    head, sep, tail = url.partition("://")
    if sep and "@" in tail.split("/", 1)[0]:
        tail = "***@" + tail.split("@", 1)[1]
    return (head + sep + tail).split("?", 1)[0]


def system_prompt_of(llm: BaseChatModel) -> str | None:
    """The system prompt :func:`build_chat_model` attached to ``llm``; None for a model built elsewhere."""
    prompt = (llm.metadata or {}).get(SYSTEM_PROMPT_KEY)
    return prompt if isinstance(prompt, str) else None


# ------------------------------------------------------------------------------------ translation

_UNAUTHORIZED = "the language model endpoint refused chatgw's credentials (HTTP {status})"
_RATE_LIMITED = "the language model endpoint is rate limiting chatgw (HTTP 429); try again later"
_SERVER_ERROR = "the language model endpoint failed (HTTP {status})"
_REJECTED = "the language model endpoint rejected the request (HTTP {status})"
_TIMEOUT = "the language model endpoint did not answer in time"
_CONNECT = "could not connect to the language model endpoint"
_CONNECTION_LOST = "the connection to the language model endpoint failed"
_STREAM_ERROR = "the language model endpoint reported an error while answering"
_BAD_RESPONSE = "the language model endpoint sent a response chatgw could not read"
_TOO_LONG = "the conversation is too long for the language model"
_UNFINISHED = "the language model endpoint ended its answer without finishing it"


def check_finished(reply: BaseMessage) -> None:
    """AgentError(llm_bad_response) if an OpenAI-compatible stream ended without a ``finish_reason``.

    A stream closed cleanly but early (a proxy's idle timeout, a server crashing behind a load
    balancer) would otherwise pass for a complete, shorter answer. Other models are not checked:
    reporting a finish reason is not part of the generic chat model contract.
    """
    metadata = reply.response_metadata
    if metadata.get("model_provider") == "openai" and not metadata.get("finish_reason"):
        log.warning("model stream ended without a finish_reason")
        raise AgentError(_UNFINISHED, code=ErrorCode.LLM_BAD_RESPONSE)


def translate_llm_error(exc: BaseException) -> AgentError | None:
    """The AgentError (code ``llm_*``) for an exception raised by a model call; None if it is not one.

    Messages are fixed texts plus an HTTP status: upstream error text can echo credentials, so it only
    goes to the worker log, and then only its error code and type.
    """
    error = _translate(exc)
    if error is not None:
        log.warning("model call failed: %s -> %s (%s)", _describe(exc), error.code, error.message)
    return error


def _translate(exc: BaseException) -> AgentError | None:
    import openai  # loaded on first use: offline workers never need it

    if isinstance(exc, openai.APIStatusError):
        return _from_status(exc.status_code, context_overflow=isinstance(exc, lc_errors.ContextOverflowError))
    if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError: it is a subclass
        return AgentError(_TIMEOUT, code=ErrorCode.LLM_TIMEOUT)
    if isinstance(exc, openai.APIConnectionError):
        refused = _caused_by(exc, http.ConnectError)
        return AgentError(_CONNECT if refused else _CONNECTION_LOST, code=ErrorCode.LLM_UNAVAILABLE)
    if isinstance(exc, openai.APIResponseValidationError):
        return AgentError(_BAD_RESPONSE, code=ErrorCode.LLM_BAD_RESPONSE)
    if isinstance(exc, openai.APIError):
        # No status: an {"error": ...} event inside a 200 stream (vLLM and OpenAI send these on
        # server-side failures mid-answer).
        return AgentError(_STREAM_ERROR, code=ErrorCode.LLM_UNAVAILABLE)
    if isinstance(exc, http.TimeoutException):
        return AgentError(_TIMEOUT, code=ErrorCode.LLM_TIMEOUT)
    if isinstance(exc, http.ConnectError):
        return AgentError(_CONNECT, code=ErrorCode.LLM_UNAVAILABLE)
    if isinstance(exc, http.TransportError):
        return AgentError(_CONNECTION_LOST, code=ErrorCode.LLM_UNAVAILABLE)
    if isinstance(exc, http.DecodingError):
        return AgentError(_BAD_RESPONSE, code=ErrorCode.LLM_BAD_RESPONSE)
    if translated := _from_langchain(exc):
        return translated
    if _raised_in_client(exc.__traceback__):
        # Generic errors are only the endpoint's fault when the client raised them while reading its
        # answer (langchain_openai's StreamChunkTimeoutError, json errors, a chunk of the wrong shape);
        # the same classes from our own code are bugs and stay agent_error.
        if isinstance(exc, TimeoutError):
            return AgentError(_TIMEOUT, code=ErrorCode.LLM_TIMEOUT)
        if isinstance(exc, ConnectionError):
            return AgentError(_CONNECTION_LOST, code=ErrorCode.LLM_UNAVAILABLE)
        # ValueError covers json.JSONDecodeError, pydantic.ValidationError and UnicodeDecodeError.
        if isinstance(exc, ValueError | KeyError | TypeError | AttributeError | IndexError):
            return AgentError(_BAD_RESPONSE, code=ErrorCode.LLM_BAD_RESPONSE)
    return None


def _from_status(status: int, *, context_overflow: bool = False) -> AgentError:
    if status in (401, 403):
        return AgentError(_UNAUTHORIZED.format(status=status), code=ErrorCode.LLM_UNAUTHORIZED)
    if status == 429:
        return AgentError(_RATE_LIMITED, code=ErrorCode.LLM_RATE_LIMITED)
    if status == 408:
        return AgentError(_TIMEOUT, code=ErrorCode.LLM_TIMEOUT)
    if status >= 500 or status == 409:  # 409: OpenAI's lock timeout, transient like a 5xx
        return AgentError(_SERVER_ERROR.format(status=status), code=ErrorCode.LLM_UNAVAILABLE)
    if context_overflow:
        return AgentError(_TOO_LONG, code=ErrorCode.LLM_BAD_RESPONSE)
    # 400/404/422...: the endpoint refused what we sent (unknown model, unsupported parameter).
    return AgentError(_REJECTED.format(status=status), code=ErrorCode.LLM_BAD_RESPONSE)


def _from_langchain(exc: BaseException) -> AgentError | None:
    """langchain-core's provider-neutral classification, for chat models other than ChatOpenAI."""
    if isinstance(exc, lc_errors.ModelAuthenticationError | lc_errors.ModelPermissionDeniedError):
        return AgentError(_UNAUTHORIZED.format(status="401/403"), code=ErrorCode.LLM_UNAUTHORIZED)
    if isinstance(exc, lc_errors.ModelRateLimitError):
        return AgentError(_RATE_LIMITED, code=ErrorCode.LLM_RATE_LIMITED)
    if isinstance(exc, lc_errors.ModelTimeoutError):
        return AgentError(_TIMEOUT, code=ErrorCode.LLM_TIMEOUT)
    if isinstance(exc, lc_errors.ModelConnectionError):
        return AgentError(_CONNECT, code=ErrorCode.LLM_UNAVAILABLE)
    if isinstance(exc, lc_errors.ModelAPIError):
        return AgentError(_SERVER_ERROR.format(status="5xx"), code=ErrorCode.LLM_UNAVAILABLE)
    if isinstance(exc, lc_errors.ContextOverflowError):
        return AgentError(_TOO_LONG, code=ErrorCode.LLM_BAD_RESPONSE)
    if isinstance(exc, lc_errors.ModelError):
        return AgentError(_REJECTED.format(status="4xx"), code=ErrorCode.LLM_BAD_RESPONSE)
    return None


def _caused_by(exc: BaseException, types: type[BaseException] | UnionType) -> bool:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, types):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _raised_in_client(tb: TracebackType | None) -> bool:
    """Whether the innermost frame of ``tb`` in a known package belongs to the model client."""
    owner: str | None = None
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        package = module.split(".", 1)[0]
        if package in _CLIENT_PACKAGES:
            owner = package
        elif package in _OUR_PACKAGES:
            owner = None
        tb = tb.tb_next
    return owner is not None


def _describe(exc: BaseException) -> str:
    """Class, status, request id and the upstream error's code/type: never its message text."""
    import openai  # loaded on first use: offline workers never need it

    parts = [type(exc).__name__]
    if isinstance(exc, openai.APIStatusError):
        parts.append(f"HTTP {exc.status_code}")
        if exc.request_id:
            parts.append(f"request_id={exc.request_id}")
    if isinstance(exc, openai.APIError):
        body = exc.body.get("error", exc.body) if isinstance(exc.body, Mapping) else None
        if isinstance(body, Mapping):
            parts.extend(f"{k}={body[k]}" for k in ("code", "type") if isinstance(body.get(k), str))
    if exc.__cause__ is not None:
        parts.append(f"caused by {type(exc.__cause__).__name__}")
    return " ".join(parts)
