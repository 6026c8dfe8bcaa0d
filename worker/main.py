"""`chatgw worker`: one Dramatiq worker process consuming chat runs.

Runs execute as tasks on one event loop (up to ``CHATGW_WORKER_CONCURRENCY`` at once); Dramatiq's
threads only hand messages to it, so two of them are plenty, and an idle worker sleeps on the broker's
doorbell instead of waking every few milliseconds.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from dramatiq import Worker
from dramatiq.middleware import AsyncIO, Retries, ShutdownNotifications, TimeLimit

from shared.broker import Capacity, DoorbellRedisBroker, make_broker
from shared.settings import Settings
from shared.tiers import Tiers
from worker.actors import declare_actors
from worker.middleware import RuntimeMiddleware
from worker.runtime import build_llm

log = logging.getLogger(__name__)

DISPATCH_THREADS = 2
# How long Dramatiq's idle threads block before looking at their queue again: with the doorbell this
# only bounds how fast they notice shutdown, so it can be long (and an idle worker cheap).
WORKER_TIMEOUT_MS = 1000


def build_worker_broker(settings: Settings) -> tuple[DoorbellRedisBroker, RuntimeMiddleware]:
    capacity = Capacity(settings.worker_concurrency)
    runtime = RuntimeMiddleware(settings, capacity)
    broker = make_broker(
        settings,
        middleware=[TimeLimit(), ShutdownNotifications(), Retries(max_retries=0), AsyncIO(), runtime],
        capacity=capacity,
    )
    declare_actors(broker, runtime, default_queue=Tiers(settings).queue(None))
    for queue in broker.run_queues:  # one per tier (docs/tiers.md); the broker takes them in turn
        broker.declare_queue(queue)
    return broker, runtime


def run_worker(settings: Settings) -> None:
    build_llm(settings)  # a misconfigured LLM fails here, with a clear ConfigError, before anything runs
    broker, _ = build_worker_broker(settings)
    worker = Worker(broker, worker_threads=DISPATCH_THREADS, worker_timeout=WORKER_TIMEOUT_MS)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker.start()
    log.info("chatgw worker consuming %s", ", ".join(broker.run_queues))
    stop.wait()
    # The runtime drains first (RuntimeMiddleware.before_worker_shutdown): runs finish or are handed back.
    worker.stop(timeout=int((settings.worker_shutdown_grace_s + 15) * 1000))
    broker.close()
