"""The FastAPI application: lifespan wiring, the /ws endpoint, health and readiness."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from starlette.websockets import WebSocketDisconnect, WebSocketState

from gateway.auth import authenticate, bearer_token
from gateway.hub import PubSubHub
from gateway.outbox import Outbox
from gateway.session import GatewayContext, Session
from shared.broker import make_broker
from shared.errors import AuthError, CloseCode, ErrorCode
from shared.keys import Keys
from shared.protocol import error_frame
from shared.runqueue import RunQueue
from shared.runstore import RunStore
from shared.settings import Settings, load_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    redis_url = settings.require_redis_url

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = Keys(settings.key_prefix)
        redis = Redis.from_url(redis_url, decode_responses=True, health_check_interval=10)
        pubsub_redis = Redis.from_url(redis_url, decode_responses=True)
        store = RunStore(
            redis, keys, retention_s=settings.run_retention_s, conversation_ttl_s=settings.conversation_ttl_s
        )
        hub = PubSubHub(pubsub_redis, keys, hub_id=uuid.uuid4().hex)
        runs = RunQueue(make_broker(settings))
        await hub.start()
        app.state.ctx = GatewayContext(settings=settings, store=store, hub=hub, runs=runs)
        app.state.sockets = set()
        try:
            yield
        finally:
            for websocket in list(app.state.sockets):
                with contextlib.suppress(Exception):
                    await websocket.close(CloseCode.SERVICE_RESTART, "gateway restarting; resume elsewhere")
            await hub.stop()
            runs.close()
            await redis.aclose()
            await pubsub_redis.aclose()

    app = FastAPI(title="chatgw gateway", version="0.1.0", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ctx: GatewayContext = app.state.ctx
        try:
            await asyncio.wait_for(ctx.store.redis.ping(), timeout=1.0)
            redis_ok = True
        except Exception:
            redis_ok = False
        ready = redis_ok and ctx.hub.connected
        body = {
            "ready": ready,
            "redis": redis_ok,
            "pubsub": ctx.hub.connected,
            "sockets": len(app.state.sockets),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.websocket("/ws")
    async def ws_endpoint(websocket: WebSocket) -> None:
        await serve_socket(websocket, app.state.ctx, app.state.sockets)

    return app


async def serve_socket(websocket: WebSocket, ctx: GatewayContext, sockets: set[WebSocket]) -> None:
    """Shuttle frames between one WebSocket and its Session until either side ends."""
    await websocket.accept()
    outbox = Outbox(ctx.settings.outbound_queue_size)
    user: str | None = None
    try:
        token = bearer_token(websocket.headers.get("authorization"))
        if token is not None:
            user = authenticate(token, ctx.settings)
    except AuthError as exc:
        await _close_with_error(websocket, CloseCode.UNAUTHORIZED, exc.message)
        return
    session = Session(ctx, outbox, user=user)
    sockets.add(websocket)
    tasks = [
        asyncio.create_task(_read_frames(websocket, session), name="ws-reader"),
        asyncio.create_task(_write_frames(websocket, outbox), name="ws-writer"),
        asyncio.create_task(outbox.closing.wait(), name="ws-closing"),
    ]
    if user is None:
        tasks.append(asyncio.create_task(_auth_deadline(session, ctx.settings.auth_timeout_s)))
    try:
        await asyncio.wait(tasks[:3], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sockets.discard(websocket)
        await session.close()
        request = outbox.close_request
        if request is not None and websocket.client_state is WebSocketState.CONNECTED:
            if request.flush:
                with contextlib.suppress(Exception):
                    for frame in outbox.drain():
                        await asyncio.wait_for(websocket.send_text(frame), timeout=1.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(request.code, request.reason), timeout=1.0)


async def _read_frames(websocket: WebSocket, session: Session) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is not None:
                await session.handle_text(text)
            elif message.get("bytes") is not None:
                session.handle_binary()


async def _write_frames(websocket: WebSocket, outbox: Outbox) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            frame = await outbox.get()
            await websocket.send_text(frame)


async def _auth_deadline(session: Session, timeout_s: float) -> None:
    await asyncio.sleep(timeout_s)
    session.auth_timed_out()


async def _close_with_error(websocket: WebSocket, code: int, message: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(error_frame(ErrorCode.UNAUTHORIZED, message))
        await websocket.close(code, message[:120])
