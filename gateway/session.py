"""One client connection's state machine: authentication, then chat/stop/resume/ping.

It does no socket I/O: frames come in through :meth:`Session.handle_text`, and everything the client
should receive (or a request to close) goes to the :class:`Outbox`. The endpoint in gateway/app.py
only shuttles frames between the WebSocket and this object.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from enum import Enum

from gateway.auth import authenticate
from gateway.follower import Follower
from gateway.hub import PubSubHub
from gateway.outbox import Outbox
from shared.errors import (
    AuthError,
    ChatgwError,
    CloseCode,
    ErrorCode,
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
    error_frame,
    parse_client_frame,
    serialize,
)
from shared.runqueue import RunQueue
from shared.runstore import AppendRefused, RunStore
from shared.settings import Settings

log = logging.getLogger(__name__)


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


class Session:
    def __init__(self, ctx: GatewayContext, outbox: Outbox, *, user: str | None = None) -> None:
        self._ctx = ctx
        self.outbox = outbox
        self.user = user
        self.phase = Phase.READY if user is not None else Phase.AWAITING_AUTH
        self.follows: dict[str, Follower] = {}

    # ------------------------------------------------------------------ input

    async def handle_text(self, text: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        try:
            frame = parse_client_frame(text, max_content_chars=self._ctx.settings.max_content_chars)
        except ProtocolError as exc:
            if self.phase is Phase.AWAITING_AUTH:
                self._refuse(exc.message)
            else:
                self.outbox.put(error_frame(exc.code, exc.message, ref=exc.ref))
            return
        await self.handle_frame(frame)

    def handle_binary(self) -> None:
        if self.phase is Phase.AWAITING_AUTH:
            self._refuse("binary frames are not supported")
            return
        self.outbox.put(error_frame(ErrorCode.BAD_FRAME, "binary frames are not supported; send JSON text"))

    async def handle_frame(self, frame: ClientFrame) -> None:
        if self.phase is Phase.AWAITING_AUTH:
            if isinstance(frame, AuthFrame):
                self._authenticate(frame.token)
            else:
                self._refuse('authenticate first: send {"type":"auth","token":...}')
            return
        ref = getattr(frame, "id", None)
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
                self.outbox.put(
                    error_frame(ErrorCode.ALREADY_AUTHENTICATED, "this socket is already authenticated")
                )
        except RunError as exc:
            self.outbox.put(
                error_frame(exc.code, exc.message, ref=ref, run_id=getattr(frame, "run_id", None))
            )
        except StoreUnavailable:
            log.warning("Redis unavailable while handling %s", frame.type)
            self.outbox.put(
                error_frame(ErrorCode.UNAVAILABLE, "the service is temporarily unavailable; retry", ref=ref)
            )
        except ChatgwError as exc:
            self.outbox.put(error_frame(exc.code, exc.message, ref=ref))

    def auth_timed_out(self) -> None:
        if self.phase is Phase.AWAITING_AUTH:
            self.phase = Phase.CLOSED
            self.outbox.close(CloseCode.AUTH_TIMEOUT, "authentication timeout")

    # ------------------------------------------------------------------ frames

    def _authenticate(self, token: str) -> None:
        try:
            self.user = authenticate(token, self._ctx.settings)
        except AuthError as exc:
            self._refuse(exc.message)
            return
        self.phase = Phase.READY

    def _refuse(self, message: str) -> None:
        self.outbox.put(error_frame(ErrorCode.UNAUTHORIZED, message))
        self.phase = Phase.CLOSED
        self.outbox.close(CloseCode.UNAUTHORIZED, "unauthorized", flush=True)

    async def _chat(self, frame: ChatFrame) -> None:
        assert self.user is not None
        ctx = self._ctx
        run_id = uuid.uuid4().hex
        new_conversation = frame.conversation_id is None
        conversation_id = frame.conversation_id or uuid.uuid4().hex
        await ctx.store.create_run(
            run_id=run_id,
            user=self.user,
            conversation_id=conversation_id,
            new_conversation=new_conversation,
            content=frame.content,
            max_runs_per_user=ctx.settings.max_runs_per_user,
        )
        # Accepted goes out before the run can produce anything, so it is always the first frame.
        self.outbox.put(serialize(RunAccepted(id=frame.id, run_id=run_id, conversation_id=conversation_id)))
        await self._follow(run_id, after_seq=0)
        try:
            await ctx.runs.enqueue(run_id)
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

    async def _stop(self, frame: StopFrame) -> None:
        assert self.user is not None
        status = await self._ctx.store.request_stop(frame.run_id, self.user)
        self.outbox.put(serialize(RunState(id=frame.id, run_id=frame.run_id, status=status)))  # type: ignore[arg-type]

    async def _resume(self, frame: ResumeFrame) -> None:
        assert self.user is not None
        meta = await self._ctx.store.get_meta(frame.run_id)
        if meta is None or meta.user != self.user:
            raise RunNotFound(f"run {frame.run_id} not found (unknown, expired, or not yours)")
        await self._unfollow(frame.run_id)
        if meta.terminal and frame.after_seq >= meta.seq:
            return  # the client has every event already
        await self._follow(frame.run_id, after_seq=frame.after_seq)

    # ------------------------------------------------------------------ following runs

    async def _follow(self, run_id: str, *, after_seq: int) -> None:
        follower = Follower(
            run_id, after_seq, store=self._ctx.store, send=self.outbox.put, on_finished=self._finished
        )
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
