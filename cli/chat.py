"""`chatgw chat`: a terminal chat over the resilient client (reconnects and resumes by itself).

Type a message and press Enter; the answer streams in. Ctrl-C while an answer streams stops it (the
partial answer is kept); Ctrl-C at the prompt, Ctrl-D or /quit leaves; /new starts a new conversation.

It always says what the connection is doing ("connecting to …", "reconnecting in 2 s…", "connected,
resuming 1 run"), and gives up with one clear line, never a traceback, when the gateway has not
answered for ``--wait`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable
from typing import TextIO, TypeVar

from client import ClientError, ConnectionState, ResilientClient

log = logging.getLogger(__name__)
T = TypeVar("T")
PROMPT = "you> "
REQUEST_TIMEOUT_S = 15.0
STILL_WAITING_EVERY_S = 10.0


class GaveUp(Exception):
    """The gateway did not answer for too long, or refused us; the message says which."""


class ConnectionView:
    """Turns the client's connection states into lines for a person, and decides when to give up."""

    def __init__(self, url: str, wait_s: float, out: TextIO = sys.stdout) -> None:
        self.url = url
        self.wait_s = wait_s
        self.out = out
        self.connected = asyncio.Event()
        self.ever_connected = False
        self.at_prompt = False
        self.refused: str | None = None
        self.disconnected_since: float | None = time.monotonic()
        self._changed = asyncio.Event()
        self._last_line = ""
        self._said_at = 0.0
        self._outage_reported = False

    def say(self, line: str) -> None:
        self._last_line, self._said_at = line, time.monotonic()
        self.out.write(("\n" if self.at_prompt else "") + f"[{line}]\n" + (PROMPT if self.at_prompt else ""))
        self.out.flush()

    def on_state(self, state: ConnectionState) -> None:
        if state.status == "connecting" and not self._last_line:
            self.say(f"connecting to {state.url} (is `chatgw dev` running?)")
        elif state.status == "waiting":
            self.connected.clear()
            now = time.monotonic()
            if self.disconnected_since is None:
                self.disconnected_since = now
            if self._outage_reported and now - self._said_at < STILL_WAITING_EVERY_S:
                return  # one line per outage (and one every 10 s), not one per attempt
            self._outage_reported = True
            lost = "connection lost" if self.ever_connected else "no gateway answers"
            if now - self.disconnected_since >= 1.0:
                lost = f"{lost} for {_seconds(now - self.disconnected_since)}"
            self.say(f"{lost}; reconnecting in {_seconds(state.retry_in_s or 0)}…")
        elif state.status == "connected":
            self.disconnected_since = None
            self._outage_reported = False
            self.connected.set()
            if not self.ever_connected:
                self.ever_connected = True
                self.say(f"connected to {state.url}; /new for a new conversation, /quit to leave")
            elif state.resuming:
                self.say(f"connected, resuming {state.resuming} run{'s' if state.resuming > 1 else ''}")
            else:
                self.say("connected")
        elif state.status == "refused":
            self.refused = state.reason or "refused"
        self._changed.set()

    async def watch(self) -> None:
        """Returns (raising GaveUp) once the gateway refused us or has been away for ``wait_s``."""
        while True:
            if self.refused is not None:
                raise GaveUp(
                    f"the gateway at {self.url} refused the token ({self.refused}); "
                    "pass --token or set CHATGW_TOKEN"
                )
            since = self.disconnected_since
            if since is not None and time.monotonic() - since >= self.wait_s:
                raise GaveUp(
                    f"no answer from {self.url} for {_seconds(self.wait_s)}; is `chatgw dev` running? "
                    "Start it, or point --url at a gateway (--wait sets how long to try)"
                )
            self._changed.clear()
            timeout = None if since is None else max(0.05, since + self.wait_s - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 1.5 else f"{value:.1f} s"


async def _race(awaitable: Awaitable[T], watchdog: asyncio.Task[None]) -> T:
    """``awaitable``'s result, unless the watchdog gives up first (then GaveUp)."""
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait({task, watchdog}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        watchdog.result()  # raises GaveUp
    return task.result()


async def _stream_answer(client: ResilientClient, run_id: str) -> None:
    async for event in client.events(run_id, timeout=600):
        kind = event["type"]
        if kind == "retrieval" and event["sources"]:
            titles = ", ".join(source["title"] for source in event["sources"])
            print(f"[sources: {titles}]", flush=True)
        elif kind == "token":
            print(event["text"], end="", flush=True)
        elif kind == "run.retrying":
            print(f"\n[the worker was lost; retrying (attempt {event['attempt']})]", flush=True)
        elif kind == "run.stopped":
            print("\n[stopped]", flush=True)
        elif kind == "run.failed":
            print(f"\n[failed: {event['error']['code']}: {event['error']['message']}]", flush=True)
        elif kind == "run.completed":
            print(" [truncated]" if event.get("truncated") else "", flush=True)


async def chat_loop(url: str, token: str, wait_s: float = 30.0) -> int:
    loop = asyncio.get_running_loop()
    view = ConnectionView(url, wait_s)
    streaming: dict[str, str] = {}  # the run being shown, if any
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    pending: set[asyncio.Task[object]] = set()

    def read_stdin() -> None:
        # A daemon thread: a blocked read never holds the process open at exit.
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    client = ResilientClient(
        [url],
        token,
        initial_backoff_s=0.5,
        max_backoff_s=2.0,
        connect_timeout_s=min(5.0, wait_s),
        on_state=view.on_state,
    )

    def on_interrupt() -> None:
        if "run_id" in streaming:
            task = loop.create_task(client.stop(streaming["run_id"]))  # the answer ends with run.stopped
            pending.add(task)
            task.add_done_callback(pending.discard)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        else:
            lines.put_nowait(None)

    threading.Thread(target=read_stdin, daemon=True).start()
    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    # start() gives up on its own after a while; the view decides how long we wait instead.
    starting = asyncio.ensure_future(client.start())
    starting.add_done_callback(lambda t: t.cancelled() or t.exception())
    watchdog = asyncio.create_task(view.watch())
    try:
        if await _race(_first_of(view.connected.wait(), lines.get()), watchdog) is not True:
            return 0  # Ctrl-C or Ctrl-D while connecting
        return await _converse(client, view, lines, streaming, watchdog)
    except GaveUp as exc:
        print(f"\nchatgw chat: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        watchdog.cancel()
        await client.close()
        starting.cancel()


async def _first_of(connected: Awaitable[bool], line: Awaitable[str | None]) -> bool:
    """True once connected; False when the user quits (Ctrl-C / Ctrl-D) first."""
    tasks = [asyncio.ensure_future(connected), asyncio.ensure_future(line)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return tasks[0] in done


async def _converse(
    client: ResilientClient,
    view: ConnectionView,
    lines: asyncio.Queue[str | None],
    streaming: dict[str, str],
    watchdog: asyncio.Task[None],
) -> int:
    conversation: str | None = None
    while True:
        print(PROMPT, end="", flush=True)
        view.at_prompt = True
        line = await _race(lines.get(), watchdog)
        view.at_prompt = False
        if line is None:
            print()
            return 0
        line = line.strip()
        if not line:
            continue
        if line == "/quit":
            return 0
        if line == "/new":
            conversation = None
            print("[new conversation]")
            continue
        try:
            accepted = await _race(client.chat(line, conversation, timeout=REQUEST_TIMEOUT_S), watchdog)
        except ClientError as exc:
            if exc.code == "unauthorized":
                raise GaveUp(f"{exc}; pass --token or set CHATGW_TOKEN") from None
            print(f"[{exc.code}: {exc}]")
            continue
        except TimeoutError:
            print(f"[no reply from the gateway within {REQUEST_TIMEOUT_S:.0f} s; send it again]")
            continue
        conversation = accepted["conversation_id"]
        streaming["run_id"] = accepted["run_id"]
        try:
            await _race(_stream_answer(client, accepted["run_id"]), watchdog)
        except TimeoutError:
            print("\n[the answer stalled; ask again]")
        finally:
            streaming.clear()


def run_chat(url: str | None, token: str | None, host: str, port: int, *, wait_s: float = 30.0) -> int:
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = url or f"ws://{host}:{port}/ws"
    token = token or os.environ.get("CHATGW_TOKEN") or f"dev:{getpass.getuser()}"
    if wait_s <= 0:
        print("chatgw chat: --wait must be more than 0 seconds", file=sys.stderr)
        return 2
    try:
        return asyncio.run(chat_loop(url, token, wait_s))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # the promise: one line, never a traceback
        log.debug("chat failed", exc_info=True)
        print(f"chatgw chat: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
