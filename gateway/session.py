"""One client connection's state machine: authentication, then chat/stop/resume/ping.

It does no socket I/O: frames come in through :meth:`Session.handle_text`, and everything the client
should receive (or a request to close) goes to the :class:`Outbox`. The endpoint in gateway/app.py
only shuttles frames between the WebSocket and this object.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gateway.auth import Authenticator, Identity, bearer_token
from gateway.follower import Follower
from gateway.hub import PubSubHub
from gateway.latency import RelaySampler, RunTiming
from gateway.limits import Limits
from gateway.metrics import GatewayMetrics
from gateway.outbox import Outbox
from gateway.store_watch import StoreWatch
from shared import logs
from shared.errors import (
    AuthError,
    ChatgwError,
    CloseCode,
    ConversationBusy,
    ErrorCode,
    LimitExceeded,
    ProtocolError,
    RunError,
    RunNotFound,
    StoreUnavailable,
)
from shared.protocol import (
    AuthFrame,
    ChatFrame,
    ClientFrame,
    PingFrame,
    Pong,
    ResumeFrame,
    RunAccepted,
    RunState,
    StopFrame,
    choose_on_busy,
    error_frame,
    parse_client_frame,
    serialize,
)
from shared.runqueue import RunQueue
from shared.runstore import AppendRefused, RunStore
from shared.settings import Settings
from shared.tiers import DEFAULT_TIER, Tiers
from shared.usage import UsageLedger

log = logging.getLogger(__name__)

INTERRUPT_WAIT_S = 10.0  # on_busy=interrupt: how long a chat waits for the run it stops to end


class Phase(Enum):
    AWAITING_AUTH = "awaiting_auth"
    READY = "ready"
    CLOSED = "closed"


@dataclass
class GatewayContext:
    """What every session of this process shares; built once in the app's lifespan."""

    settings: Settings
    store: RunStore
    hub: PubSubHub
    runs: RunQueue
    auth: Authenticator
    limits: Limits
    metrics: GatewayMetrics
    store_watch: StoreWatch | None = None  # None: not watched (Redis assumed up)
    usage: UsageLedger | None = None  # None: daily token budgets are not checked
    tiers: Tiers = field(init=False)  # from settings: each tier's queue and limits

    def __post_init__(self) -> None:
        self.tiers = Tiers(self.settings)


def _retry_key(frame: ChatFrame) -> str | None:
    """Same id, same content, same conversation: a retry (e.g. after a lost reply), not a new chat.
    A client that reuses an id for a different message simply starts a new run."""
    if frame.id is None:
        return None
    digest = hashlib.sha256(f"{frame.conversation_id or ''}\0{frame.content}".encode()).hexdigest()[:32]
    return f"{frame.id}:{digest}"


class Session:
    def __init__(self, ctx: GatewayContext, outbox: Outbox) -> None:
        self._ctx = ctx
        self.outbox = outbox
        self.user: str | None = None
        self.expires_at: float | None = None  # Unix time the token expires; None: never
        self.tier = DEFAULT_TIER  # set with the user (docs/tiers.md)
        self.phase = Phase.AWAITING_AUTH
        self.socket_id = uuid.uuid4().hex
        self.last_input = time.monotonic()  # for the idle timeout
        self.follows: dict[str, Follower] = {}
        self._holds_slot = False
        self.slot_gateway: str | None = None  # the gateway id this socket's slot is held under
        self.on_ready: Callable[[], None] | None = None  # the endpoint re-arms its deadlines
        self.relay = RelaySampler(ctx.metrics.relay)  # fed by the socket's writer

    # ------------------------------------------------------------------ input

    def _send_error(self, code: str, message: str, **fields: Any) -> None:
        self._ctx.metrics.errors_sent.labels(code).inc()
        self.outbox.put(error_frame(code, message, **fields))

    async def handle_text(self, text: str) -> None:
        self.last_input = time.monotonic()
        if self.phase is Phase.CLOSED:
            return
        try:
            frame = parse_client_frame(text, max_content_chars=self._ctx.settings.max_content_chars)
        except ProtocolError as exc:
            self._ctx.metrics.frames_received.labels("invalid").inc()
            if self.phase is Phase.AWAITING_AUTH:
                self._refuse(exc.message)
            else:
                self._send_error(exc.code, exc.message, ref=exc.ref)
            return
        self._ctx.metrics.frames_received.labels(frame.type).inc()
        await self.handle_frame(frame)

    def handle_binary(self) -> None:
        self.last_input = time.monotonic()
        if self.phase is Phase.CLOSED:
            return
        if self.phase is Phase.AWAITING_AUTH:
            self._refuse("binary frames are not supported")
            return
        self._send_error(ErrorCode.BAD_FRAME, "binary frames are not supported; send JSON text")

    async def handle_frame(self, frame: ClientFrame) -> None:
        if self.phase is Phase.AWAITING_AUTH:
            if isinstance(frame, AuthFrame):
                await self.authenticate(frame.token)
            else:
                self._refuse('authenticate first: send {"type":"auth","token":...}')
            return
        ref = getattr(frame, "id", None)
        # One frame at a time per socket: what this one names replaces what the last one named.
        logs.bind(
            run_id=getattr(frame, "run_id", None), conversation_id=getattr(frame, "conversation_id", None)
        )
        try:
            if isinstance(frame, ChatFrame):
                await self._chat(frame)
            elif isinstance(frame, StopFrame):
                await self._stop(frame)
            elif isinstance(frame, ResumeFrame):
                await self._resume(frame)
            elif isinstance(frame, PingFrame):
                self.outbox.put(serialize(Pong(id=frame.id)))
            elif isinstance(frame, AuthFrame):
                self._send_error(ErrorCode.ALREADY_AUTHENTICATED, "this socket is already authenticated")
        except RunError as exc:
            self._send_error(exc.code, exc.message, ref=ref, run_id=getattr(frame, "run_id", None))
        except LimitExceeded as exc:
            self._send_error(
                exc.code,
                exc.message,
                ref=ref,
                retry_after_ms=exc.retry_after_ms,
                resets_at=getattr(exc, "resets_at", None),  # budget_exceeded
            )
        except StoreUnavailable:
            log.warning("Redis unavailable while handling %s", frame.type)
            self._send_error(ErrorCode.UNAVAILABLE, "the service is temporarily unavailable; retry", ref=ref)
        except ChatgwError as exc:
            self._send_error(exc.code, exc.message, ref=ref)
        except Exception:
            # A bug must cost one frame, not the socket (and is logged to be fixed).
            log.exception("unexpected error handling a %s frame", frame.type)
            self._send_error(ErrorCode.INTERNAL, "internal error", ref=ref)

    # ------------------------------------------------------------------ timers (driven by the endpoint)

    def auth_timed_out(self) -> None:
        if self.phase is Phase.AWAITING_AUTH:
            self.phase = Phase.CLOSED
            self.outbox.close(CloseCode.AUTH_TIMEOUT, "authentication timeout")

    def token_expired(self) -> None:
        if self.phase is Phase.READY:
            self.phase = Phase.CLOSED
            self.outbox.close(CloseCode.TOKEN_EXPIRED, "token expired")

    def idle_timed_out(self) -> None:
        if self.phase is not Phase.CLOSED:
            self.phase = Phase.CLOSED
            self.outbox.close(CloseCode.IDLE_TIMEOUT, "idle timeout")

    def store_lost(self) -> None:
        """Redis is unreachable: say so and close with 1013; the client resumes elsewhere or later."""
        if self.phase is not Phase.CLOSED:
            message = "the service lost its store (Redis); reconnect with backoff and resume"
            self._end(CloseCode.TRY_AGAIN_LATER, error_frame(ErrorCode.UNAVAILABLE, message))

    def lease_lost(self, gateway_id: str) -> None:
        """This gateway can no longer vouch for slots held under ``gateway_id``: reconnect and resume."""
        if self.slot_gateway == gateway_id and self.phase is not Phase.CLOSED:
            self.phase = Phase.CLOSED
            self.outbox.close(CloseCode.SERVICE_RESTART, "gateway lost its socket lease; resume")

    # ------------------------------------------------------------------ frames

    async def authenticate_header(self, authorization: str) -> None:
        """The handshake carried ``Authorization``: it must hold a valid bearer token."""
        try:
            token = bearer_token(authorization)
        except AuthError as exc:
            self._refuse(exc.message)
            return
        if token is not None:
            await self.authenticate(token)

    async def authenticate(self, token: str) -> None:
        try:
            identity = self._ctx.auth.authenticate(token)
        except AuthError as exc:
            self._refuse(exc.message)
            return
        # A socket closed while its admission was in flight (e.g. Redis was lost) stays closed.
        if await self._take_slot(identity) and self.phase is Phase.AWAITING_AUTH:
            self.user, self.expires_at = identity.user, identity.expires_at
            self.tier = identity.tier
            logs.bind(user=identity.user)
            self.phase = Phase.READY
            if self.on_ready is not None:
                self.on_ready()

    async def _take_slot(self, identity: Identity) -> bool:
        # Marked held before the await: if the socket dies meanwhile, close() still releases it.
        self.user, self._holds_slot = identity.user, True
        try:
            self.slot_gateway = await self._ctx.limits.open_socket(identity.user, self.socket_id)
        except LimitExceeded as exc:
            self._holds_slot = False
            self._end(CloseCode.TOO_MANY_SOCKETS, error_frame(exc.code, exc.message))
            return False
        except StoreUnavailable:
            log.warning("Redis unavailable while admitting a socket")
            message = "the service is temporarily unavailable; retry"
            self._end(CloseCode.TRY_AGAIN_LATER, error_frame(ErrorCode.UNAVAILABLE, message))
            return False
        return True

    def _end(self, code: CloseCode, frame: str) -> None:
        """Send one error frame, then close with ``code``."""
        self.outbox.put(frame)
        self.phase = Phase.CLOSED
        self.outbox.close(code, code.name.lower().replace("_", " "), flush=True)

    def _refuse(self, message: str) -> None:
        self._end(CloseCode.UNAUTHORIZED, error_frame(ErrorCode.UNAUTHORIZED, message))

    async def _chat(self, frame: ChatFrame) -> None:
        assert self.user is not None
        received = time.monotonic()
        ctx = self._ctx
        # A refused on_busy is a frame error (OnBusyNotAllowed): it costs no rate token.
        policy = choose_on_busy(frame, default=ctx.settings.on_busy, allowed=ctx.settings.on_busy_allowed)
        limits = ctx.tiers.limits(self.tier)
        # Every chat frame costs a token, even one refused below.
        await ctx.limits.take_chat(
            self.user, per_minute=limits.rate_limit_per_minute, burst=limits.rate_limit_burst
        )
        if ctx.usage is not None:
            await ctx.usage.check(self.user, limits.daily_token_budget, now=time.time())
        self._check_follows(None)
        run_id = uuid.uuid4().hex
        new_conversation = frame.conversation_id is None
        conversation_id = frame.conversation_id or uuid.uuid4().hex
        create = functools.partial(
            ctx.store.create_run,
            run_id=run_id,
            user=self.user,
            conversation_id=conversation_id,
            new_conversation=new_conversation,
            content=frame.content,
            max_runs_per_user=limits.max_runs_per_user,
            unclaimed_grace_s=ctx.settings.unclaimed_grace_s,
            client_ref=_retry_key(frame),
            client_ref_ttl_s=ctx.settings.chat_dedup_s,
            tier=self.tier,
        )
        try:
            created = await create(enqueue_when_busy=policy == "enqueue")
        except ConversationBusy:
            if policy != "interrupt":
                raise
            await self._interrupt(conversation_id)
            created = await create()
        logs.bind(run_id=created.run_id, conversation_id=created.conversation_id)
        accepted = RunAccepted(
            id=frame.id, run_id=created.run_id, conversation_id=created.conversation_id, queued=created.queued
        )
        # Accepted goes out before the run can produce anything, so it is always the first frame.
        self.outbox.put(serialize(accepted))
        if created.duplicate:
            # A retry of a chat whose reply was lost: the same run, replayed from its start.
            await self._unfollow(created.run_id)
            await self._follow(created.run_id, after_seq=0)
            return
        ctx.metrics.runs_started.inc()
        # A run queued behind another of its conversation would time that one too: not timed.
        timing = None if created.queued else RunTiming(ctx.metrics, chat_at=received)
        await self._follow(run_id, after_seq=0, timing=timing)
        try:
            await ctx.runs.enqueue(run_id, tier=self.tier)
        except StoreUnavailable as exc:
            # The run exists but no worker will ever see it: end it visibly rather than leave it queued.
            with contextlib.suppress(StoreUnavailable, AppendRefused):
                await ctx.store.append(
                    run_id,
                    conversation_id,
                    1,
                    "run.failed",
                    {"error": {"code": ErrorCode.UNAVAILABLE, "message": "could not queue the run; retry"}},
                )
            raise exc

    async def _interrupt(self, conversation_id: str) -> None:
        """on_busy=interrupt: stop the conversation's run in flight (its partial answer is kept) and
        wait, briefly, for it to end so the new run can take its place."""
        assert self.user is not None
        store = self._ctx.store
        loop = asyncio.get_running_loop()
        deadline = loop.time() + INTERRUPT_WAIT_S
        while (active := await store.active_run(conversation_id)) is not None:
            with contextlib.suppress(RunNotFound):
                await store.request_stop(active, self.user)
            if loop.time() >= deadline:
                raise ConversationBusy(
                    f"conversation {conversation_id}: the run in flight did not stop in time"
                )
            await asyncio.sleep(0.05)

    async def _stop(self, frame: StopFrame) -> None:
        assert self.user is not None
        if (follower := self.follows.get(frame.run_id)) is not None:
            follower.timing = follower.timing or RunTiming(self._ctx.metrics)
            follower.timing.stop_requested()
        status = await self._ctx.store.request_stop(frame.run_id, self.user)
        self.outbox.put(serialize(RunState(id=frame.id, run_id=frame.run_id, status=status)))  # type: ignore[arg-type]

    async def _resume(self, frame: ResumeFrame) -> None:
        assert self.user is not None
        self._check_follows(frame.run_id)
        meta = await self._ctx.store.get_meta(frame.run_id)
        if meta is None or meta.user != self.user:
            raise RunNotFound(f"run {frame.run_id} not found (unknown, expired, or not yours)")
        await self._unfollow(frame.run_id)
        if meta.terminal and frame.after_seq >= meta.seq:
            return  # the client has every event already
        await self._follow(frame.run_id, after_seq=frame.after_seq)

    # ------------------------------------------------------------------ following runs

    def _check_follows(self, run_id: str | None) -> None:
        # Each follow holds a subscription and a reader: cap them per socket. Re-following a run
        # replaces its follow, so it does not count.
        limit = self._ctx.settings.max_follows_per_socket
        if run_id not in self.follows and len(self.follows) >= limit:
            raise LimitExceeded(
                f"this socket already follows {limit} runs in flight; wait for one to end",
                code=ErrorCode.TOO_MANY_FOLLOWS,
            )

    async def _follow(self, run_id: str, *, after_seq: int, timing: RunTiming | None = None) -> None:
        self.relay.following()
        follower = Follower(
            run_id,
            after_seq,
            store=self._ctx.store,
            send=self.outbox.put,
            send_wait=self.outbox.put_wait,
            on_finished=self._finished,
        )
        follower.timing = timing
        self.follows[run_id] = follower
        await self._ctx.hub.subscribe(run_id, follower)

    def _finished(self, follower: Follower) -> None:
        if self.follows.get(follower.run_id) is follower:
            del self.follows[follower.run_id]
        self._ctx.hub.discard_later(follower.run_id, follower)

    async def _unfollow(self, run_id: str) -> None:
        follower = self.follows.pop(run_id, None)
        if follower is not None:
            follower.close()
            await self._ctx.hub.unsubscribe(run_id, follower)

    async def close(self) -> None:
        """The socket is gone: stop following (the runs themselves go on)."""
        self.phase = Phase.CLOSED
        for run_id in list(self.follows):
            await self._unfollow(run_id)
        if self._holds_slot and self.user is not None:
            self._holds_slot = False
            # Never raises for an unreachable Redis: the release is retried until it lands.
            await self._ctx.limits.close_socket(self.user, self.socket_id, self.slot_gateway)
