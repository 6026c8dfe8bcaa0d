"""One WebSocket to a chatgw gateway, with helpers to start, follow, stop and resume runs."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect

# A chat's choice when its conversation has a run in flight (docs/protocol.md, "chat").
OnBusy = Literal["reject", "interrupt", "enqueue"]

TERMINAL = frozenset({"run.completed", "run.stopped", "run.failed"})


@dataclass
class RunTranscript:
    """Every event of one run as the client saw it."""

    run_id: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    @property
    def terminal(self) -> dict[str, Any] | None:
        last = self.events[-1] if self.events else None
        return last if last is not None and last["type"] in TERMINAL else None

    @property
    def tokens(self) -> list[str]:
        return [e["text"] for e in self.events if e["type"] == "token"]

    @property
    def text(self) -> str:
        return "".join(self.tokens)


class ChatgwConnection:
    """A thin protocol client. Frames for runs are demultiplexed by run_id; replies queue apart."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.runs: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, url: str, token: str | None = None, *, header_auth: bool = True, **kwargs: Any
    ) -> ChatgwConnection:
        headers = {"Authorization": f"Bearer {token}"} if token and header_auth else None
        ws = await connect(url, additional_headers=headers, max_size=None, **kwargs)
        conn = cls(ws)
        if token and not header_auth:
            await conn.send({"type": "auth", "token": token})
        return conn

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader

    async def __aenter__(self) -> ChatgwConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    def _run_queue(self, run_id: str) -> asyncio.Queue[dict[str, Any]]:
        return self.runs.setdefault(run_id, asyncio.Queue())

    def _dispatch(self, frame: dict[str, Any]) -> None:
        if "seq" in frame and "run_id" in frame:
            self._run_queue(frame["run_id"]).put_nowait(frame)
        else:
            self.replies.put_nowait(frame)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self._dispatch(orjson.loads(message))
        except Exception:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code, self.ws.close_reason or ""))

    async def reply(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.replies.get(), timeout)

    async def chat(
        self,
        content: str,
        conversation_id: str | None = None,
        ref: str | None = None,
        on_busy: OnBusy | None = None,
    ) -> dict[str, Any]:
        """Send a chat frame; returns its reply (run.accepted or error). ``on_busy``: what to do if the
        conversation has a run in flight (reject, interrupt, enqueue); None: the server's default."""
        frame: dict[str, Any] = {"type": "chat", "content": content}
        if conversation_id:
            frame["conversation_id"] = conversation_id
        if ref:
            frame["id"] = ref
        if on_busy:
            frame["on_busy"] = on_busy
        await self.send(frame)
        return await self.reply()

    async def stop(self, run_id: str) -> dict[str, Any]:
        await self.send({"type": "stop", "run_id": run_id})
        return await self.reply()

    async def resume(self, run_id: str, after_seq: int) -> None:
        await self.send({"type": "resume", "run_id": run_id, "after_seq": after_seq})

    async def next_event(self, run_id: str, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self._run_queue(run_id).get(), timeout)

    async def follow(
        self,
        run_id: str,
        transcript: RunTranscript | None = None,
        *,
        until_seq: int | None = None,
        timeout: float = 30.0,
    ) -> RunTranscript:
        """Collect events of a run until its terminal event (or until ``until_seq``)."""
        transcript = transcript or RunTranscript(run_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while transcript.terminal is None and (until_seq is None or transcript.last_seq < until_seq):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"run {run_id}: no terminal event after {timeout} s ({transcript.seqs[-5:]})"
                )
            transcript.events.append(await self.next_event(run_id, remaining))
        return transcript
