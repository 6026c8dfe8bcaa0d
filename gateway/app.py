"""The FastAPI application: lifespan wiring, the /ws endpoint, health and readiness."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio import Redis
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from gateway.auth import Authenticator
from gateway.deadlines import SocketDeadlines
from gateway.http_api import install as install_http_api
from gateway.hub import PubSubHub
from gateway.latency import RelaySampler
from gateway.limits import Limits
from gateway.metrics import GatewayMetrics
from gateway.origin import OriginPolicy
from gateway.outbox import Outbox
from gateway.queue_depth import QueueDepth
from gateway.session import GatewayContext, Session
from gateway.store_watch import StoreWatch
from gateway.usage_api import install as install_usage_api
from gateway.webchat import mount_webchat
from shared.broker import make_broker
from shared.errors import CloseCode
from shared.keys import Keys
from shared.redis_factory import async_redis
from shared.runqueue import RunQueue
from shared.runstore import RunStore
from shared.settings import Settings, load_settings
from shared.tiers import Tiers
from shared.usage import UsageLedger

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
        runs = RunQueue(make_broker(settings), redis, Tiers(settings))
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
        sockets: dict[WebSocket, Session] = {}
        metrics.sockets.set_function(lambda: len(sockets))
        metrics.track_hub(lambda: hub.channel_count, lambda: hub.reconnects)
        queue_depth = asyncio.create_task(QueueDepth(redis, keys, metrics).run_forever(), name="queue-depth")
        probe_redis = async_redis(settings, max_connections=2)  # a busy pool must not look like an outage
        store_watch = _watch_store(probe_redis, limits, sockets)
        limits.sockets.on_lease_lost = lambda lost: _each(sockets, lambda s: s.lease_lost(lost))
        upkeep = [
            asyncio.create_task(limits.sockets.run_forever(), name="socket-slots"),
            asyncio.create_task(store_watch.run_forever(), name="store-watch"),
        ]
        app.state.ctx = GatewayContext(
            settings=settings,
            store=store,
            hub=hub,
            runs=runs,
            auth=auth,
            limits=limits,
            metrics=metrics,
            store_watch=store_watch,
            usage=UsageLedger(redis, keys),
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
            for task in upkeep:
                task.cancel()
            await asyncio.gather(*upkeep, return_exceptions=True)
            await limits.sockets.deregister()
            await probe_redis.aclose()
            await hub.stop()
            runs.close()
            await redis.aclose()
            await pubsub_redis.aclose()

    # The HTTP API is documented where clients look for it: /openapi.json, and Swagger UI at /docs.
    app = _GatewayApp(
        title="chatgw gateway",
        version="0.1.0",
        description="Conversations and runs over HTTP (docs/http.md). Chat itself is the WebSocket at "
        "/ws (docs/protocol.md, docs/asyncapi.yaml).",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    install_http_api(app, settings)  # /v1: conversations and runs (gateway/http_api.py)
    install_usage_api(app)  # /v1/usage: the caller's tokens today and budget (gateway/usage_api.py)

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
        # While the store watch says Redis is lost, stay unready until it says it is back.
        ready = redis_ok and ctx.hub.connected and (ctx.store_watch is None or ctx.store_watch.available)
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

    app.ws_endpoint = ws_endpoint
    mount_webchat(app, settings)  # the page at / and its assets (docs/webchat.md)

    # Built last: a page served at / (any auth mode) makes the gateway's own origin trusted.
    origins = OriginPolicy.for_settings(settings, serves_page=_serves_page(app))
    log.info("%s", origins.describe())
    return app


class _GatewayApp(FastAPI):
    """FastAPI, except that ``/ws`` goes straight to its endpoint. A socket's endpoint runs for the
    socket's whole life, and every ASGI layer in between (middleware, router, exception wrappers)
    would keep a suspended frame per socket: about 10 KiB each, most of an idle socket's memory."""

    ws_endpoint: Callable[[WebSocket], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws" and self.ws_endpoint is not None:
            scope["app"] = self
            await self.ws_endpoint(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


def _watch_store(probe_redis: Redis, limits: Limits, sockets: dict[WebSocket, Session]) -> StoreWatch:
    """No silent sockets: when Redis is lost every socket gets ``unavailable`` + 1013 (clients
    reconnect with backoff and resume); when it is back, releases held meanwhile are flushed."""
    background: set[asyncio.Task[None]] = set()

    def back() -> None:
        task = asyncio.get_running_loop().create_task(limits.sockets.tick())
        background.add(task)
        task.add_done_callback(background.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retried by the upkeep loop

    return StoreWatch(probe_redis.ping, on_lost=lambda: _each(sockets, Session.store_lost), on_back=back)


def _each(sockets: dict[WebSocket, Session], action: Callable[[Session], None]) -> None:
    for session in list(sockets.values()):
        action(session)


def _serves_page(app: FastAPI) -> bool:
    return any(getattr(route, "path", None) in ("/", "") for route in app.routes)


async def serve_socket(websocket: WebSocket, ctx: GatewayContext, sockets: dict[WebSocket, Session]) -> None:
    """Shuttle frames between one WebSocket and its Session until either side ends.

    Per socket: this task, a reader, a writer and one timer handle (idle sockets are most of a
    gateway's memory, so nothing else runs per socket)."""
    await websocket.accept()
    _forget_handshake(websocket)
    outbox = Outbox(ctx.settings.outbound_queue_size)
    session = Session(ctx, outbox)
    sockets[websocket] = session  # from the start: a Redis-loss notice reaches it too
    if ctx.store_watch is not None and not ctx.store_watch.available:
        session.store_lost()  # say so at once rather than let the client wait on Redis
    elif (authorization := websocket.headers.get("authorization")) is not None:
        await session.authenticate_header(authorization)
    settings = ctx.settings
    deadlines = SocketDeadlines(
        session, auth_timeout_s=settings.auth_timeout_s, idle_timeout_s=settings.idle_timeout_s
    )
    session.on_ready = deadlines.rearm
    tasks = [
        asyncio.create_task(_read_frames(websocket, session), name="ws-reader"),
        asyncio.create_task(_write_frames(websocket, outbox, session.relay), name="ws-writer"),
    ]
    for task in tasks:  # either one ending (the peer left, the socket broke) ends the socket
        task.add_done_callback(lambda _: outbox.closing.set())
    try:
        await outbox.closing.wait()
    finally:
        deadlines.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sockets.pop(websocket, None)
        request = outbox.close_request
        # Free the slot before the client hears the close (it may reconnect at once), except when
        # Redis is gone: then the notice must not wait on it (the release is retried later).
        store_lost = request is not None and request.code == CloseCode.TRY_AGAIN_LATER
        if not store_lost:
            await session.close()
        if request is not None and websocket.client_state is WebSocketState.CONNECTED:
            ctx.metrics.closes.labels(str(request.code)).inc()
            if request.code == CloseCode.SLOW_CONSUMER:
                log.warning("closing a slow consumer's socket (user %s): outbound queue full", session.user)
            await _close(websocket, request.code, request.reason, outbox.drain() if request.flush else [])
        if store_lost:
            await session.close()


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


def _forget_handshake(websocket: WebSocket) -> None:
    """uvicorn's protocol keeps the parsed upgrade request and its response for the socket's whole
    life, though neither is read after the accept: about 3 KiB of every idle socket."""
    protocol = getattr(getattr(websocket, "_send", None), "__self__", None)
    for name in ("request", "response"):
        if getattr(protocol, name, None) is not None:
            setattr(protocol, name, None)


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
