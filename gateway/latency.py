"""Latencies the gateway measures on its own frames: relay, time to first token, stop.

Hot path: nothing here parses an event. A stored event always starts
``{"seq":N,"type":"...","run_id":"...","conversation_id":"...","ts":...`` (``event_body`` puts ``type``,
``run_id``, ``conversation_id`` and ``ts`` first and the append script splices ``seq`` in front), and
identifiers are at most 64 characters of ``[A-Za-z0-9_-]``. So the type is a ``startswith`` after
the first comma and the ``ts`` a bounded ``str.find`` within the first :data:`TS_WINDOW` characters.

- Relay (``chatgw_gateway_relay_seconds``): event ``ts`` to the frame written to the socket, measured
  by the socket writer on one frame in :data:`RELAY_SAMPLE_EVERY` (a counter per frame, the rest per
  sample). Events stamped before the socket last started following a run are replays (a resume, a
  retried chat), not relay latency, and are skipped. ``ts`` is the worker's clock: the figure includes
  clock skew between worker and gateway hosts (keep them on NTP), and is clamped at 0.
- Time to first token (``chatgw_gateway_first_token_seconds``) and stop (``chatgw_gateway_stop_seconds``):
  a :class:`RunTiming` rides on the follower of the run and sees each batch of frames queued for the
  socket until it has nothing left to time; then the follower drops it (one ``is None`` per batch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Histogram

    from gateway.metrics import GatewayMetrics

RELAY_SAMPLE_EVERY = 8
# '{"seq":' + 16 digits + ',"type":"' + type + '","run_id":"' + 64 + '","conversation_id":"' + 64 + '","ts":'
TS_WINDOW = 256
_EVENT_HEAD = '{"seq":'
_TS_KEY = '"ts":'


def event_ts(frame: str) -> float | None:
    """The ``ts`` of a run event frame, None for any other frame; reads only the frame's head."""
    if not frame.startswith(_EVENT_HEAD):
        return None
    start = frame.find(_TS_KEY, len(_EVENT_HEAD), TS_WINDOW)
    if start < 0:
        return None
    start += len(_TS_KEY)
    end = frame.find(",", start, start + 32)
    if end < 0:
        end = frame.find("}", start, start + 32)
    try:
        return float(frame[start:end])
    except ValueError:
        return None


def is_event(frame: str, event_type: str) -> bool:
    """Whether ``frame`` is a run event of ``event_type`` (``{"seq":N,"type":"<event_type>",...``)."""
    if not frame.startswith(_EVENT_HEAD):
        return False
    comma = frame.find(",", len(_EVENT_HEAD), 32)
    return comma > 0 and frame.startswith(f'"type":"{event_type}"', comma + 1)


class RelaySampler:
    """One socket's relay probe, called by its writer after every frame it wrote."""

    __slots__ = ("_countdown", "_every", "_histogram", "live_since")

    def __init__(self, histogram: Histogram, every: int = RELAY_SAMPLE_EVERY) -> None:
        self._histogram = histogram
        self._every = every
        self._countdown = every
        self.live_since = time.time()

    def following(self) -> None:
        """The socket starts following a run: events stamped before now are a replay."""
        self.live_since = time.time()

    def written(self, frame: str) -> None:
        self._countdown -= 1
        if self._countdown:
            return
        self._countdown = self._every
        ts = event_ts(frame)
        if ts is not None and ts >= self.live_since:
            self._histogram.observe(max(0.0, time.time() - ts))


class RunTiming:
    """What one socket times on one run it follows: chat → first token, stop → run.stopped."""

    __slots__ = ("_metrics", "chat_at", "stop_at")

    def __init__(self, metrics: GatewayMetrics, *, chat_at: float | None = None) -> None:
        self._metrics = metrics
        self.chat_at = chat_at  # time.monotonic() of the chat frame; None: not waiting for a token
        self.stop_at: float | None = None  # time.monotonic() of the stop frame

    def stop_requested(self) -> None:
        self.stop_at = time.monotonic()

    def sent(self, frames: Sequence[str], finished: bool) -> bool:
        """``frames`` were queued for the socket (``finished``: the last one ends the run).
        Returns True when there is nothing left to time."""
        if self.chat_at is not None:
            for frame in frames:
                if is_event(frame, "token"):
                    self._metrics.first_token.observe(time.monotonic() - self.chat_at)
                    self.chat_at = None
                    break
        if finished:
            if self.stop_at is not None and frames and is_event(frames[-1], "run.stopped"):
                self._metrics.stop.observe(time.monotonic() - self.stop_at)
            self.chat_at = self.stop_at = None
        return self.chat_at is None and self.stop_at is None
