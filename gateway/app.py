"""The FastAPI application: lifespan wiring, the /ws endpoint, health and readiness."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.websockets import WebSocketDisconnect, WebSocketState

from gateway.auth import Authenticator
from gateway.hub import PubSubHub
from gateway.latency import RelaySampler
from gateway.limits import Limits
from gateway.metrics import GatewayMetrics
from gateway.origin import OriginPolicy
from gateway.outbox import Outbox
from gateway.queue_depth import QueueDepth
from gateway.session import GatewayContext, Session
from shared.broker import make_broker
from shared.errors import CloseCode, StoreUnavailable
from shared.keys import Keys
from shared.redis_factory import async_redis
from shared.runqueue import RunQueue
from shared.runstore import RunStore
from shared.settings import Settings, load_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    settings.require_redis_url  # noqa: B018 - fail at start, with a clear message
    # Built here, not in the lifespan: a bad key file or an unsafe dev setup stops the start.
    auth = Authenticator(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = Keys(settings.key_prefix)
        redis = async_redis(settings)
        pubsub_redis = async_redis(settings, blocking_reads=True, max_connections=4)
        store = RunStore(
            redis, keys, retention_s=settings.run_retention_s, conversation_ttl_s=settings.conversation_ttl_s
        )
        hub = PubSubHub(pubsub_redis, keys, hub_id=uuid.uuid4().hex)
        runs = RunQueue(make_broker(settings), redis)
        limits = Limits(
            redis,
            keys,
            rate_per_minute=settings.rate_limit_per_minute,
            burst=settings.rate_limit_burst,
            max_sockets=settings.max_sockets_per_user,
        )
        await hub.start()
        _demote_client_errors()
        metrics = GatewayMetrics()
        sockets: set[WebSocket] = set()
        metrics.sockets.set_function(lambda: len(sockets))
        metrics.track_hub(lambda: hub.channel_count, lambda: hub.reconnects)
        queue_depth = asyncio.create_task(QueueDepth(redis, keys, metrics).run_forever(), name="queue-depth")
        app.state.ctx = GatewayContext(
            settings=settings, store=store, hub=hub, runs=runs, auth=auth, limits=limits, metrics=metrics
        )
        app.state.sockets = sockets
        try:
            yield
        finally:
            for websocket in list(app.state.sockets):
                with contextlib.suppress(Exception):
                    await websocket.close(CloseCode.SERVICE_RESTART, "gateway restarting; resume elsewhere")
            queue_depth.cancel()
            await asyncio.gather(queue_depth, return_exceptions=True)
            await hub.stop()
            runs.close()
            await redis.aclose()
            await pubsub_redis.aclose()

    # No /docs or /openapi.json: nothing to gain from publishing the HTTP surface.
    app = FastAPI(
        title="chatgw gateway",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

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

    @app.get("/metrics")
    async def metrics() -> Response:
        ctx: GatewayContext = app.state.ctx
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws")
    async def ws_endpoint(websocket: WebSocket) -> None:
        origin = websocket.headers.get("origin")
        if not origins.allows(origin, websocket.headers.get("host")):
            log.warning(
                "refused a WebSocket handshake from origin %r: %s",
                (origin or "")[:200],
                OriginPolicy.refusal_hint(origin or ""),
            )
            await _deny(websocket)
            return
        await serve_socket(websocket, app.state.ctx, app.state.sockets)

    # Built last: a page served at / (any auth mode) makes the gateway's own origin trusted.
    origins = OriginPolicy.for_settings(settings, serves_page=_serves_page(app))
    log.info("%s", origins.describe())
    return app


def _serves_page(app: FastAPI) -> bool:
    return any(getattr(route, "path", None) in ("/", "") for route in app.routes)


async def serve_socket(websocket: WebSocket, ctx: GatewayContext, sockets: set[WebSocket]) -> None:
    """Shuttle frames between one WebSocket and its Session until either side ends."""
    await websocket.accept()
    outbox = Outbox(ctx.settings.outbound_queue_size)
    session = Session(ctx, outbox)
    authorization = websocket.headers.get("authorization")
    if authorization is not None:
        await session.authenticate_header(authorization)
    sockets.add(websocket)
    settings = ctx.settings
    tasks = [
        asyncio.create_task(_read_frames(websocket, session), name="ws-reader"),
        asyncio.create_task(_write_frames(websocket, outbox, session.relay), name="ws-writer"),
        asyncio.create_task(outbox.closing.wait(), name="ws-closing"),
        asyncio.create_task(_auth_deadline(session, settings.auth_timeout_s), name="ws-auth-deadline"),
        asyncio.create_task(_token_expiry(session), name="ws-token-expiry"),
        asyncio.create_task(_idle_watch(session, settings.idle_timeout_s), name="ws-idle"),
        asyncio.create_task(_renew_slot(session, ctx.limits.socket_lease_s / 3), name="ws-slot"),
    ]
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
            ctx.metrics.closes.labels(str(request.code)).inc()
            if request.code == CloseCode.SLOW_CONSUMER:
                log.warning("closing a slow consumer's socket (user %s): outbound queue full", session.user)
            await _close(websocket, request.code, request.reason, outbox.drain() if request.flush else [])


async def _close(websocket: WebSocket, code: int, reason: str, last_frames: list[str]) -> None:
    """Close with ``code``; a peer that does not read cannot receive a close frame, so after a
    short wait the TCP connection is aborted instead (the client then sees 1006 and resumes)."""
    try:
        async with asyncio.timeout(2.0):
            for frame in last_frames:
                await websocket.send_text(frame)
            await websocket.close(code, reason)
    except Exception:
        _abort_transport(websocket)


def _abort_transport(websocket: WebSocket) -> None:
    # uvicorn's ASGI send callable is a method of its protocol object, which owns the transport.
    protocol = getattr(getattr(websocket, "_send", None), "__self__", None)
    transport = getattr(protocol, "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()


class _ClientErrorFilter(logging.Filter):
    """uvicorn logs a client's invalid UTF-8 text frame as an ERROR with a traceback. It is the
    client's fault and answered with close 1007: log one INFO line, or anyone could flood the
    error log (and alerting) at will."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.getMessage().startswith("Invalid UTF-8 sequence"):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def _demote_client_errors() -> None:
    # Installed at startup, after uvicorn configured its loggers; idempotent.
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _ClientErrorFilter) for f in logger.filters):
        logger.addFilter(_ClientErrorFilter())


async def _deny(websocket: WebSocket) -> None:
    """Refuse the handshake with HTTP 403, before any WebSocket exists (no accept)."""
    try:
        await websocket.send_denial_response(PlainTextResponse("origin not allowed", status_code=403))
    except RuntimeError:  # server without the denial-response extension: close before accept = 403
        await websocket.close(code=1008)


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


async def _write_frames(websocket: WebSocket, outbox: Outbox, relay: RelaySampler) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            frame = await outbox.get()
            await websocket.send_text(frame)
            relay.written(frame)


async def _auth_deadline(session: Session, timeout_s: float) -> None:
    await asyncio.sleep(timeout_s)
    session.auth_timed_out()


async def _token_expiry(session: Session) -> None:
    await session.ready.wait()
    if session.expires_at is not None:
        await asyncio.sleep(max(0.0, session.expires_at - time.time()))
        session.token_expired()


async def _idle_watch(session: Session, idle_s: float) -> None:
    while True:
        remaining = session.last_input + idle_s - time.monotonic()
        if remaining <= 0:
            session.idle_timed_out()
            return
        await asyncio.sleep(remaining)


async def _renew_slot(session: Session, interval_s: float) -> None:
    """Keep this socket counted against the user's cap; a crashed gateway stops renewing."""
    await session.ready.wait()
    while True:
        await asyncio.sleep(interval_s)
        try:
            await session.renew_slot()
        except StoreUnavailable:
            log.warning("Redis unavailable while renewing a socket lease")
