"""``GET /v1/usage``: the caller's own token usage today, their daily budget and what remains.

Same token as the socket (``Authorization: Bearer <token>``); errors are ``{"code", "message"}`` with
the socket's codes (401 ``unauthorized``, 503 ``unavailable``). The day is the UTC day of Redis's
clock (shared/usage.py). :func:`install` mounts it on the gateway app.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from gateway.session import GatewayContext
from shared.errors import AuthError, ErrorCode, StoreUnavailable
from shared.usage import DailyUsage, UsageLedger, midnight_iso

log = logging.getLogger(__name__)


class UsageOut(BaseModel):
    user: str
    tier: str = Field(description="The tier the token names (CHATGW_TIERS).")
    day: str = Field(description="The UTC day counted, YYYY-MM-DD.")
    tokens_today: int = Field(
        description="Prompt and completion tokens billed today; cached answers cost none."
    )
    budget: int | None = Field(
        description="The tier's daily token budget (CHATGW_DAILY_TOKEN_BUDGET); null: none."
    )
    remaining: int | None = Field(
        description="Tokens left today; null without a budget. At 0 chats are refused."
    )
    resets_at: int = Field(
        description="Unix time (seconds) of the next UTC midnight, when the count restarts."
    )
    resets_at_iso: str = Field(description="The same instant, ISO 8601 (UTC).")


class UsageError(BaseModel):
    code: str
    message: str


_bearer = HTTPBearer(auto_error=False, description="The same token as the WebSocket.")

router = APIRouter(prefix="/v1", tags=["usage"])


def _error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


@router.get(
    "/usage",
    summary="Your token usage today, your daily budget and what remains",
    response_model=UsageOut,
    responses={
        401: {"model": UsageError, "description": "`unauthorized`: no token, or a refused one."},
        503: {"model": UsageError, "description": "`unavailable`: Redis is unreachable."},
    },
)
async def get_usage(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> UsageOut | JSONResponse:
    ctx: GatewayContext = request.app.state.ctx
    try:
        if credentials is None:
            raise AuthError("send Authorization: Bearer <token>")
        identity = ctx.auth.authenticate(credentials.credentials)
        ledger = ctx.usage or UsageLedger(ctx.store.redis, ctx.store.keys)
        usage: DailyUsage = await ledger.today(identity.user)
    except AuthError as exc:
        return _error(401, ErrorCode.UNAUTHORIZED, exc.message)
    except StoreUnavailable:
        log.warning("Redis unavailable while reading usage")
        return _error(503, ErrorCode.UNAVAILABLE, "the service is temporarily unavailable; retry")
    budget = ctx.tiers.limits(identity.tier).daily_token_budget
    resets_iso = midnight_iso(usage.resets_at)
    return UsageOut(
        user=identity.user,
        tier=identity.tier,
        day=midnight_iso(usage.resets_at - 86_400)[:10],
        tokens_today=usage.tokens,
        budget=budget,
        remaining=usage.remaining(budget),
        resets_at=usage.resets_at,
        resets_at_iso=resets_iso,
    )


def install(app: FastAPI) -> None:
    app.include_router(router)
