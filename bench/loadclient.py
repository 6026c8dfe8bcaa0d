"""The one load client of ``python -m bench.compare``, used unchanged against both designs.

Each simulated user holds one WebSocket and sends chats back to back: ``chat {content, id}``, then it
reads ``run.accepted`` and the run's ``token`` events until the terminal event. Per run it records
time to first token (chat sent → first token received), relay latency of every token event (receive
time - the event's ``ts``: same machine, same clock), the delivered pace, and whether the final
``content`` equals the concatenation of the token texts received.

Tokens are counted as the offline model's words (:data:`WORD_RE`, its tokenizer's pattern), not as
events, so a server that coalesces several words into one ``token`` event is measured fairly. Every
loop is bounded by a deadline and a count.
"""

from __future__ import annotations

import asyncio
import re
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

# worker/agent/offline.py's _TOKEN_RE: a word with its trailing whitespace (tests check they agree).
WORD_RE = re.compile(r"\S+\s*")
TERMINAL = frozenset({"run.completed", "run.stopped", "run.failed"})
# Questions the sample corpus answers (retrieval finds sources), so answers are full length.
QUESTIONS = (
    "How does resume work after a dropped connection?",
    "What happens to a run when its worker dies?",
    "How do I stop an answer that is streaming?",
    "How are gateways and workers scaled out?",
    "What does the slow consumer close code mean?",
)
CONNECT_PARALLELISM = 64  # handshakes in flight at once while a level opens its sockets
MAX_CHATS_PER_USER = 100_000  # count bounds on top of the time bounds
MAX_FRAMES_PER_CHAT = 100_000


def count_words(text: str) -> int:
    return len(WORD_RE.findall(text))


@dataclass
class Samples:
    """What one level (or the idle series) measured, over all its users."""

    ttft_ms: array[float] = field(default_factory=lambda: array("d"))
    relay_ms: array[float] = field(default_factory=lambda: array("d"))
    gap_ms_per_word: array[float] = field(default_factory=lambda: array("d"))
    run_pace_ms: array[float] = field(default_factory=lambda: array("d"))  # per run: mean ms per word
    # The same from the events' ts: the pace the server produced, before the relay to the client.
    source_pace_ms: array[float] = field(default_factory=lambda: array("d"))
    words: int = 0
    runs_completed: int = 0
    words_lost: int = 0
    runs_content_mismatch: int = 0
    runs_retried: int = 0  # a run.retrying event: the client drops the attempt's tokens shown so far
    sockets_open: int = 0
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class _Run:
    sent: float
    run_id: str | None = None
    parts: list[str] = field(default_factory=list)  # the current attempt's tokens
    attempt_words: int = 0
    words: int = 0
    first_words: int = 0
    first: float = 0.0
    last: float = 0.0
    first_ts: float = 0.0
    last_ts: float = 0.0

    def on_token(self, text: str, ts: float, now: float, samples: Samples) -> None:
        words = count_words(text)
        samples.relay_ms.append((now - ts) * 1000)
        if self.words == 0:
            samples.ttft_ms.append((now - self.sent) * 1000)
            self.first, self.first_ts, self.first_words = now, ts, words
        else:
            samples.gap_ms_per_word.append((now - self.last) * 1000 / max(1, words))
        self.last, self.last_ts = now, ts
        self.words += words
        self.attempt_words += words
        self.parts.append(text)

    def on_retry(self, samples: Samples) -> None:
        """chatgw's ``run.retrying``: the run starts over; the final content is the last attempt's."""
        samples.runs_retried += 1
        self.parts, self.attempt_words = [], 0

    def on_end(self, frame: dict[str, Any], samples: Samples) -> None:
        samples.words += self.words
        if frame["type"] != "run.completed":
            samples.errors[f"{frame['type']} {frame.get('error', {}).get('code', '')}".strip()] += 1
            return
        content = frame.get("content", "")
        samples.runs_completed += 1
        samples.words_lost += max(0, count_words(content) - self.attempt_words)
        samples.runs_content_mismatch += content != "".join(self.parts)
        if self.words > self.first_words:
            later_words = self.words - self.first_words
            samples.run_pace_ms.append((self.last - self.first) * 1000 / later_words)
            samples.source_pace_ms.append((self.last_ts - self.first_ts) * 1000 / later_words)


async def chat(ws: ClientConnection, request_id: str, question: str, samples: Samples) -> None:
    """One chat from ``chat`` to the run's terminal event (or an ``error`` reply)."""
    run = _Run(sent=time.time())
    await ws.send(orjson.dumps({"type": "chat", "content": question, "id": request_id}).decode())
    for _ in range(MAX_FRAMES_PER_CHAT):
        raw = await ws.recv()
        now = time.time()
        frame = orjson.loads(raw)
        kind = frame.get("type")
        if kind == "token" and frame.get("run_id") == run.run_id:
            run.on_token(frame["text"], frame["ts"], now, samples)
        elif kind == "run.accepted" and frame.get("id") == request_id:
            run.run_id = frame["run_id"]
        elif kind == "run.retrying" and frame.get("run_id") == run.run_id:
            run.on_retry(samples)
        elif kind in TERMINAL and frame.get("run_id") == run.run_id:
            run.on_end(frame, samples)
            return
        elif kind == "error":
            samples.errors[f"error {frame.get('code')}"] += 1
            await asyncio.sleep(0.1)  # no hot loop of refused chats
            return
    samples.errors["run longer than MAX_FRAMES_PER_CHAT frames"] += 1


async def open_socket(url: str, user: str, samples: Samples, timeout_s: float) -> ClientConnection | None:
    try:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer dev:{user}"},
            open_timeout=timeout_s,
            max_size=None,
            compression=None,
        )
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        samples.errors[f"connect {type(exc).__name__}"] += 1
        return None
    samples.sockets_open += 1
    return ws


async def open_sockets(
    url: str, users: Sequence[str], samples: Samples, timeout_s: float = 30.0
) -> list[ClientConnection]:
    gate = asyncio.Semaphore(CONNECT_PARALLELISM)

    async def one(user: str) -> ClientConnection | None:
        async with gate:
            return await open_socket(url, user, samples, timeout_s)

    opened = await asyncio.gather(*(one(u) for u in users))
    return [ws for ws in opened if ws is not None]


async def close_sockets(sockets: Sequence[ClientConnection], timeout_s: float = 10.0) -> None:
    async def one(ws: ClientConnection) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await ws.close()
        except (TimeoutError, OSError, ConnectionClosed):
            pass

    await asyncio.gather(*(one(ws) for ws in sockets))


async def converse(
    ws: ClientConnection, user: int, start_at: float, until: float, hard_deadline: float, samples: Samples
) -> None:
    """Chats back to back from ``start_at`` until ``until``; the run in flight then may finish until
    ``hard_deadline`` (all ``loop.time()``). A run with no terminal event by then is an error."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    try:
        async with asyncio.timeout_at(hard_deadline):
            for turn in range(MAX_CHATS_PER_USER):
                if loop.time() >= until:
                    return
                await chat(ws, f"u{user}-{turn}", QUESTIONS[(user + turn) % len(QUESTIONS)], samples)
    except TimeoutError:
        samples.errors["no terminal event before the deadline"] += 1
    except ConnectionClosed as exc:
        samples.errors[f"socket closed {exc.rcvd.code if exc.rcvd else 'without a close frame'}"] += 1


async def drive(
    sockets: Sequence[ClientConnection], seconds: float, ramp_s: float, drain_s: float, samples: Samples
) -> None:
    """Every socket converses for ``seconds``; first chats spread over ``ramp_s``; ``drain_s`` to finish."""
    now = asyncio.get_running_loop().time()
    until, hard = now + seconds, now + seconds + drain_s
    count = max(1, len(sockets))
    await asyncio.gather(
        *(converse(ws, i, now + ramp_s * i / count, until, hard, samples) for i, ws in enumerate(sockets))
    )


async def sequential_chats(url: str, user: str, count: int, timeout_s: float) -> Samples:
    """``count`` chats one after another on one socket: time to first token on an idle server."""
    samples = Samples()
    ws = await open_socket(url, user, samples, timeout_s)
    if ws is None:
        return samples
    try:
        for turn in range(count):
            async with asyncio.timeout(timeout_s):
                await chat(ws, f"idle-{turn}", QUESTIONS[turn % len(QUESTIONS)], samples)
    except (TimeoutError, ConnectionClosed) as exc:
        samples.errors[f"idle chat {type(exc).__name__}"] += 1
    finally:
        await close_sockets([ws])
    return samples
