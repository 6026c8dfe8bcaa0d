"""The HTTP API under /v1: a user's conversations (with their turns) and runs.

Same tokens as the socket (``Authorization: Bearer <token>``), owner-only (another user's id answers
exactly like a missing one), errors as ``{"code", "message"}`` with the socket's codes. Documented in
the OpenAPI the gateway serves (/openapi.json, /docs) and in docs/http.md. :func:`install` mounts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from gateway.conversations import Conversations
from gateway.origin import OriginPolicy
from gateway.session import GatewayContext
from shared.checkpoints import open_checkpointer
from shared.conversations import ConversationMeta, ConversationStore, PageCursor
from shared.errors import AuthError, BadRequest, ChatgwError, ConversationNotFound, ErrorCode, RunNotFound
from shared.settings import Settings
from shared.transcript import Turn

log = logging.getLogger(__name__)

PREFIX = "/v1"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_PAGE = 100

_STATUS_OF_CODE: dict[str, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONVERSATION_NOT_FOUND: 404,
    ErrorCode.RUN_NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONVERSATION_BUSY: 409,
    ErrorCode.UNAVAILABLE: 503,
}


# ---------------------------------------------------------------- bodies


class ErrorBody(BaseModel):
    code: str = Field(description="A stable code (docs/protocol.md, Error codes); branch on this.")
    message: str = Field(description="For humans; do not parse it.")


class SourceOut(BaseModel):
    id: str
    title: str
    snippet: str


class TurnOut(BaseModel):
    run_id: str | None = Field(
        description="The run that answered (null only for turns older than chatgw 0.2)."
    )
    question: str
    answer: str = Field(description="The answer as the model's memory holds it; partial when stopped.")
    stopped: bool = Field(
        description="The user stopped the answer: `answer` is what was streamed until then."
    )
    sources: list[SourceOut]
    asked_at: float | None = Field(description="Unix time (seconds) the question was sent.")
    answered_at: float | None = Field(description="Unix time (seconds) the answer ended.")


class ConversationSummary(BaseModel):
    id: str
    title: str = Field(description="The first question, on one line, cut to about 80 characters.")
    created_at: float | None = Field(description="Unix time (seconds).")
    last_activity: float | None = Field(description="Unix time (seconds) of the last message sent in it.")
    active_run: str | None = Field(description="The run in flight (resume it over the socket), or null.")


class ConversationPage(BaseModel):
    conversations: list[ConversationSummary] = Field(description="Newest activity first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class ConversationDetail(ConversationSummary):
    turns: list[TurnOut] = Field(
        description="Oldest first: the turns the model's memory holds (those within the history budget, "
        "and always the latest)."
    )


class RunOut(BaseModel):
    run_id: str
    status: Literal["queued", "running", "completed", "stopped", "failed"]
    last_seq: int = Field(description="The seq of the run's last event so far (0: none yet).")
    conversation_id: str
    created_at: float | None = Field(description="Unix time (seconds).")
    ended_at: float | None = Field(description="Unix time (seconds) of the terminal event; null in flight.")
    attempt: int = Field(description="1, or more after run.retrying.")


def _summary(meta: ConversationMeta) -> dict[str, Any]:
    return {
        "id": meta.id,
        "title": meta.title,
        "created_at": meta.created_at,
        "last_activity": meta.last_activity,
        "active_run": meta.active_run,
    }


def _turn(turn: Turn) -> TurnOut:
    return TurnOut(
        run_id=turn.run_id,
        question=turn.question,
        answer=turn.answer,
        stopped=turn.stopped,
        sources=[SourceOut(**source) for source in turn.sources],
        asked_at=turn.asked_at,
        answered_at=turn.answered_at,
    )


# ---------------------------------------------------------------- dependencies

_bearer = HTTPBearer(
    auto_error=False,
    description="The same token as the WebSocket: `dev:<user>` under CHATGW_AUTH=dev, else a JWT.",
)


def _context(request: Request) -> GatewayContext:
    ctx: GatewayContext = request.app.state.ctx
    return ctx


def _conversations(request: Request) -> Conversations:
    conversations: Conversations = request.app.state.conversations
    return conversations


def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    if credentials is None:
        raise AuthError("send Authorization: Bearer <token>")
    return _context(request).auth.authenticate(credentials.credentials).user


User = Annotated[str, Depends(current_user)]
ConversationId = Annotated[str, Path(pattern=ID_PATTERN, description="A conversation id.")]
RunId = Annotated[str, Path(pattern=ID_PATTERN, description="A run id.")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "`bad_request`: a malformed id, cursor or parameter."},
    401: {"model": ErrorBody, "description": "`unauthorized`: no token, or a refused one."},
    503: {
        "model": ErrorBody,
        "description": "`unavailable`: Redis or the conversation store is unreachable.",
    },
}


def _not_found(code: str) -> dict[int | str, dict[str, Any]]:
    return {404: {"model": ErrorBody, "description": f"`{code}`: unknown, expired, or another user's."}}


# ---------------------------------------------------------------- routes


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's lifespan (its context is ready): memory, and the expiry loop."""
    ctx: GatewayContext = app.state.ctx
    settings = ctx.settings
    async with open_checkpointer(settings) as memory:
        index = ConversationStore(ctx.store.redis, ctx.store.keys, ttl_s=settings.conversation_ttl_s)
        conversations = Conversations(ctx.store, index, memory, ttl_s=settings.conversation_ttl_s)
        app.state.conversations = conversations
        expiry = asyncio.create_task(
            conversations.expire_forever(settings.conversation_sweep_s), name="conversation-expiry"
        )
        try:
            yield
        finally:
            expiry.cancel()
            await asyncio.gather(expiry, return_exceptions=True)


router = APIRouter(prefix=PREFIX, lifespan=_lifespan, responses=_ERRORS)


@router.get(
    "/conversations",
    tags=["conversations"],
    summary="List your conversations, newest activity first",
    response_model=ConversationPage,
)
async def list_conversations(
    request: Request,
    user: User,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="The `next_cursor` of the previous page.")
    ] = None,
) -> ConversationPage:
    try:
        after = PageCursor.decode(cursor) if cursor is not None else None
    except ValueError:
        raise BadRequest("cursor: not a cursor this API issued; start again without one") from None
    found, next_page = await _conversations(request).page(user, limit, after)
    return ConversationPage(
        conversations=[ConversationSummary(**_summary(meta)) for meta in found],
        next_cursor=next_page.encode() if next_page is not None else None,
    )


@router.get(
    "/conversations/{conversation_id}",
    tags=["conversations"],
    summary="A conversation and its turns",
    response_model=ConversationDetail,
    responses=_not_found("conversation_not_found"),
)
async def get_conversation(
    request: Request, user: User, conversation_id: ConversationId
) -> ConversationDetail:
    found = await _conversations(request).get(user, conversation_id)
    if found is None:
        raise ConversationNotFound(f"conversation {conversation_id} not found")
    meta, turns = found
    return ConversationDetail(**_summary(meta), turns=[_turn(t) for t in turns])


@router.delete(
    "/conversations/{conversation_id}",
    tags=["conversations"],
    summary="Delete a conversation: its memory, metadata and run logs (a run in flight is stopped first)",
    status_code=204,
    response_class=Response,
    responses={
        **_not_found("conversation_not_found"),
        409: {"model": ErrorBody, "description": "`conversation_busy`: its run did not stop in time; retry."},
    },
)
async def delete_conversation(request: Request, user: User, conversation_id: ConversationId) -> Response:
    if not await _conversations(request).delete(user, conversation_id):
        raise ConversationNotFound(f"conversation {conversation_id} not found")
    return Response(status_code=204)


@router.get(
    "/runs/{run_id}",
    tags=["runs"],
    summary="Where a run stands",
    response_model=RunOut,
    responses=_not_found("run_not_found"),
)
async def get_run(request: Request, user: User, run_id: RunId) -> RunOut:
    meta = await _context(request).store.get_meta(run_id)
    if meta is None or meta.user != user:
        raise RunNotFound(f"run {run_id} not found")
    return RunOut(
        run_id=run_id,
        # 'waiting' (behind its conversation's run, on_busy=enqueue) is queued to a client.
        status="queued" if meta.status == "waiting" else meta.status,  # type: ignore[arg-type]
        last_seq=meta.seq,
        conversation_id=meta.conversation_id,
        created_at=meta.created_at,
        ended_at=meta.ended_at,
        attempt=meta.attempt,
    )


# ---------------------------------------------------------------- errors and the schema


def _error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


async def _chatgw_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatgwError)
    status = _STATUS_OF_CODE.get(exc.code, 500)
    if status == 500:
        log.error("HTTP API error %s on %s: %s", exc.code, request.url.path, exc.message)
    return _error(status, exc.code, exc.message)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for detail in exc.errors()[:3]:
        where = ".".join(str(p) for p in detail.get("loc", ()) if p not in ("path", "query", "header"))
        parts.append(f"{where or 'request'}: {detail.get('msg', 'invalid')}")
    return _error(400, ErrorCode.BAD_REQUEST, "; ".join(parts))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if not request.url.path.startswith(PREFIX + "/"):
        return await http_exception_handler(request, exc)  # the rest of the gateway keeps FastAPI's
    code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
        exc.status_code, ErrorCode.BAD_REQUEST
    )
    return _error(exc.status_code, code, str(exc.detail))


def _schema_without_422(app: FastAPI) -> None:
    """FastAPI documents its own 422 for every route with parameters; ours answer 400 (bad_request)."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = make()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema or make()

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it


class _SocketOriginsCors(CORSMiddleware):
    """CORS for the pages that may open the socket (the origin policy of gateway/origin.py): they may
    call the API too. The token travels in a header, never a cookie, so nothing is sent implicitly."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        super().__init__(app, allow_methods=("GET", "DELETE"), allow_headers=("Authorization",), max_age=600)
        self._policy = policy

    def is_allowed_origin(self, origin: str) -> bool:
        return self._policy.allows(origin)


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the API on the gateway app: routes (and their lifespan), error bodies, CORS, schema."""
    app.include_router(router)
    app.add_exception_handler(ChatgwError, _chatgw_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(_SocketOriginsCors, policy=OriginPolicy.for_settings(settings))
    _schema_without_422(app)
