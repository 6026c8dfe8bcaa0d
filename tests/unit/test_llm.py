"""worker.agent.llm without a network: building and validating the model, translating client errors."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from langchain_core import exceptions as lc_errors
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import OpenAIAuthenticationError, OpenAIContextOverflowError

from shared.errors import AgentError, ConfigError, ErrorCode
from shared.settings import Settings, load_settings
from worker.agent import NullRetriever, OfflineChatModel, build_graph, stream_agent
from worker.agent.graph import CONTEXT_FORMAT
from worker.agent.llm import (
    OPENAI_API_URL,
    PLACEHOLDER_API_KEY,
    build_chat_model,
    check_base_url,
    check_finished,
    system_prompt_of,
    translate_llm_error,
)

SECRET = "sk-unit-SECRET-0123456789"
REQUEST = httpx2.Request("POST", "http://llm.test/v1/chat/completions")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "CHATGW_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def openai_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"llm": "openai", "llm_base_url": "http://127.0.0.1:8000/v1", "llm_model": "m"}
    values |= overrides
    if "llm_api_key" in values:  # the field is read only under its env names
        values["CHATGW_LLM_API_KEY"] = values.pop("llm_api_key")
    return load_settings(**values)


# ---------------------------------------------------------------- building


def test_offline_model_carries_the_system_prompt() -> None:
    model = build_chat_model(load_settings(system_prompt="Be brief.", offline_token_delay_ms=0))
    assert isinstance(model, OfflineChatModel)
    assert system_prompt_of(model) == "Be brief."


def test_openai_model_is_configured_from_settings() -> None:
    settings = openai_settings(
        llm_base_url="http://vllm.internal:8000/v1/",
        llm_api_key=SECRET,
        llm_temperature=0.7,
        llm_max_tokens=99,
        llm_timeout_s=12,
        llm_max_retries=3,
        system_prompt="Be brief.",
    )
    model = build_chat_model(settings)
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "m"
    assert model.openai_api_base == "http://vllm.internal:8000/v1"
    assert model.openai_api_key is not None and model.openai_api_key.get_secret_value() == SECRET
    assert model.streaming and model.stream_usage
    assert model.temperature == 0.7 and model.max_tokens == 99
    assert model.request_timeout == 12 and model.stream_chunk_timeout == 12
    assert model.max_retries == 3
    assert system_prompt_of(model) == "Be brief."
    # A self-hosted server gets max_tokens too (Ollama and older llama.cpp ignore max_completion_tokens).
    payload = model._get_request_payload([("user", "hi")])
    assert payload["max_completion_tokens"] == 99 and payload["extra_body"] == {"max_tokens": 99}


def test_openai_itself_gets_only_max_completion_tokens() -> None:
    model = build_chat_model(openai_settings(llm_base_url=None, llm_api_key=SECRET, llm_max_tokens=50))
    assert isinstance(model, ChatOpenAI)
    assert model.openai_api_base == OPENAI_API_URL
    assert "extra_body" not in model._get_request_payload([("user", "hi")])


def test_self_hosted_server_without_a_key_gets_a_placeholder() -> None:
    model = build_chat_model(openai_settings())
    assert isinstance(model, ChatOpenAI)
    assert model.openai_api_key is not None
    assert model.openai_api_key.get_secret_value() == PLACEHOLDER_API_KEY


def test_openai_api_key_env_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    model = build_chat_model(openai_settings(llm_base_url=None))
    assert isinstance(model, ChatOpenAI) and model.openai_api_key is not None
    assert model.openai_api_key.get_secret_value() == SECRET


def test_environment_cannot_redirect_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere.test/v1")
    monkeypatch.setenv("OPENAI_API_BASE", "http://elsewhere.test/v1")
    model = build_chat_model(openai_settings(llm_base_url=None, llm_api_key=SECRET))
    assert isinstance(model, ChatOpenAI)
    assert str(model.root_async_client.base_url).rstrip("/") == OPENAI_API_URL


def test_building_touches_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access while building the model: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    build_chat_model(openai_settings(llm_base_url=None, llm_api_key=SECRET))
    build_chat_model(openai_settings())


@pytest.mark.parametrize(
    "overrides",
    [
        {"llm_base_url": None, "llm_api_key": None},  # no URL and no key
        {"llm_base_url": "https://api.openai.com/v1"},  # the OpenAI API without a key
        {"llm_base_url": "https://api.openai.com/v1", "llm_api_key": "   "},
        {"llm_model": None},
        {"llm_model": "   "},
        {"llm_base_url": "localhost:8000/v1"},  # no scheme
        {"llm_base_url": "ftp://host/v1"},
        {"llm_base_url": "http:///v1"},  # no host
        {"llm_base_url": "http://host:99999/v1"},  # port out of range
        {"llm_base_url": "http://host:port/v1"},
        {"llm_base_url": "http://[::1/v1"},
    ],
)
def test_misconfiguration_is_a_config_error_at_start(overrides: dict[str, Any]) -> None:
    # Some are refused by settings validation, the rest by build_chat_model: both at worker start.
    with pytest.raises(ConfigError):
        build_chat_model(openai_settings(**overrides))


def test_config_errors_do_not_echo_credentials() -> None:
    with pytest.raises(ConfigError) as caught:
        check_base_url(f"ftp://user:{SECRET}@host/v1?api_key={SECRET}")
    assert SECRET not in str(caught.value)
    assert check_base_url(" http://host:8000/v1/ ") == "http://host:8000/v1"


# ---------------------------------------------------------------- translation


def status_error(cls: type[openai.APIStatusError], status: int) -> openai.APIStatusError:
    body = {"message": f"Incorrect API key provided: {SECRET}", "type": "invalid_request_error", "code": "x"}
    response = httpx2.Response(status, request=REQUEST, json={"error": body})
    return cls(f"Error code: {status} - {body}", response=response, body=body)


def connect_error() -> openai.APIConnectionError:
    try:
        try:
            raise httpx2.ConnectError("All connection attempts failed", request=REQUEST)
        except httpx2.ConnectError as exc:
            raise openai.APIConnectionError(request=REQUEST) from exc
    except openai.APIConnectionError as wrapped:
        return wrapped


def raised_in(module: str, exc: BaseException) -> BaseException:
    """``exc`` with a traceback whose innermost frame belongs to ``module``."""
    namespace: dict[str, Any] = {"__name__": module}
    exec("def boom(exc):\n    raise exc\n", namespace)
    try:
        namespace["boom"](exc)
    except BaseException as raised:
        return raised
    raise AssertionError("unreachable")


def json_error() -> json.JSONDecodeError:
    try:
        json.loads('{"choices": [')
    except json.JSONDecodeError as exc:
        return exc
    raise AssertionError("unreachable")


CASES: list[tuple[str, Callable[[], BaseException], ErrorCode]] = [
    ("401", lambda: status_error(openai.AuthenticationError, 401), ErrorCode.LLM_UNAUTHORIZED),
    ("401 langchain", lambda: status_error(OpenAIAuthenticationError, 401), ErrorCode.LLM_UNAUTHORIZED),
    ("403", lambda: status_error(openai.PermissionDeniedError, 403), ErrorCode.LLM_UNAUTHORIZED),
    ("429", lambda: status_error(openai.RateLimitError, 429), ErrorCode.LLM_RATE_LIMITED),
    ("500", lambda: status_error(openai.InternalServerError, 500), ErrorCode.LLM_UNAVAILABLE),
    ("503", lambda: status_error(openai.InternalServerError, 503), ErrorCode.LLM_UNAVAILABLE),
    ("408", lambda: status_error(openai.APIStatusError, 408), ErrorCode.LLM_TIMEOUT),
    ("404", lambda: status_error(openai.NotFoundError, 404), ErrorCode.LLM_BAD_RESPONSE),
    ("400 too long", lambda: status_error(OpenAIContextOverflowError, 400), ErrorCode.LLM_BAD_RESPONSE),
    ("timeout", lambda: openai.APITimeoutError(request=REQUEST), ErrorCode.LLM_TIMEOUT),
    ("refused", connect_error, ErrorCode.LLM_UNAVAILABLE),
    ("lost", lambda: openai.APIConnectionError(request=REQUEST), ErrorCode.LLM_UNAVAILABLE),
    ("stream error event", lambda: openai.APIError("boom", REQUEST, body=None), ErrorCode.LLM_UNAVAILABLE),
    ("httpx read timeout", lambda: httpx2.ReadTimeout("slow", request=REQUEST), ErrorCode.LLM_TIMEOUT),
    ("httpx protocol", lambda: httpx2.RemoteProtocolError("peer closed"), ErrorCode.LLM_UNAVAILABLE),
    ("bad json", lambda: raised_in("openai._streaming", json_error()), ErrorCode.LLM_BAD_RESPONSE),
    (
        "bad shape",
        lambda: raised_in("langchain_openai.chat_models.base", KeyError("delta")),
        ErrorCode.LLM_BAD_RESPONSE,
    ),
    (
        "chunk timeout",
        lambda: raised_in("langchain_openai.chat_models._client_utils", TimeoutError("no chunk")),
        ErrorCode.LLM_TIMEOUT,
    ),
    ("langchain rate limit", lambda: lc_errors.ModelRateLimitError("slow down"), ErrorCode.LLM_RATE_LIMITED),
]


@pytest.mark.parametrize(("make", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_client_errors_become_llm_codes(
    make: Callable[[], BaseException], code: ErrorCode, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="worker.agent.llm"):
        error = translate_llm_error(make())
    assert isinstance(error, AgentError)
    assert error.code == code
    # Fixed texts only: upstream messages (which can echo the key) never reach client or log.
    assert SECRET not in error.message
    assert SECRET not in caplog.text


def test_connection_refused_and_lost_are_told_apart() -> None:
    refused, lost = (
        translate_llm_error(connect_error()),
        translate_llm_error(openai.APIConnectionError(request=REQUEST)),
    )
    assert refused is not None and lost is not None and refused.message != lost.message


@pytest.mark.parametrize(
    "exc",
    [
        KeyError("ours"),  # raised here, in our code: a bug, not the endpoint's fault
        json_error(),
        raised_in("worker.agent.graph", KeyError("ours")),
        # A callback of ours failing while the client streams: the innermost frame is ours.
        raised_in("openai._streaming", raised_in("worker.agent.graph", KeyError("x"))),
        RuntimeError("anything else"),
        asyncio.CancelledError(),  # a stop: must propagate untouched
        AgentError("already ours", code=ErrorCode.LLM_TIMEOUT),
    ],
)
def test_other_exceptions_are_not_translated(exc: BaseException) -> None:
    assert translate_llm_error(exc) is None


def test_a_stream_without_finish_reason_is_a_bad_response() -> None:
    with pytest.raises(AgentError) as caught:
        check_finished(AIMessage(content="t0 ", response_metadata={"model_provider": "openai"}))
    assert caught.value.code == ErrorCode.LLM_BAD_RESPONSE
    check_finished(
        AIMessage(content="t0 ", response_metadata={"model_provider": "openai", "finish_reason": "stop"})
    )
    check_finished(AIMessage(content="offline models need not say why they stopped"))


# ---------------------------------------------------------------- through the graph


class FailingModel(BaseChatModel):
    """Raises ``error`` from inside the model call, as a client library would."""

    error: Any

    @property
    def _llm_type(self) -> str:
        return "failing"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise self.error


async def run_graph(model: BaseChatModel, **config: Any) -> Any:
    async def ignore(_: Any) -> None:
        return None

    graph = build_graph(model, NullRetriever())
    return await stream_agent(graph, "Why?", on_sources=ignore, on_token=ignore, config=config or None)


async def test_generate_raises_agent_error_with_the_llm_code() -> None:
    with pytest.raises(AgentError) as caught:
        await run_graph(FailingModel(error=status_error(openai.RateLimitError, 429)))
    assert caught.value.code == ErrorCode.LLM_RATE_LIMITED
    assert isinstance(caught.value.__cause__, openai.RateLimitError)


async def test_generate_lets_our_own_bugs_through() -> None:
    with pytest.raises(ZeroDivisionError):
        await run_graph(FailingModel(error=ZeroDivisionError()))


class PromptRecorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.prompts: list[list[BaseMessage]] = []

    async def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.prompts.extend(messages)


async def test_system_prompt_setting_reaches_the_model() -> None:
    model = build_chat_model(load_settings(system_prompt="Answer like a pirate.", offline_token_delay_ms=0))
    recorder = PromptRecorder()
    await run_graph(model, callbacks=[recorder])
    [prompt] = recorder.prompts
    system = prompt[0].text
    assert system.startswith("Answer like a pirate.\n" + CONTEXT_FORMAT)
