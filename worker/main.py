"""`chatgw worker`: one Dramatiq worker process consuming chat runs."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, Retries, ShutdownNotifications, TimeLimit

from shared.broker import make_broker
from shared.keys import RUN_QUEUE
from shared.settings import Settings
from worker.actors import declare_actors
from worker.middleware import RuntimeMiddleware
from worker.runtime import build_llm

log = logging.getLogger(__name__)


def build_worker_broker(settings: Settings) -> tuple[RedisBroker, RuntimeMiddleware]:
    runtime = RuntimeMiddleware(settings)
    broker = make_broker(
        settings,
        middleware=[TimeLimit(), ShutdownNotifications(), Retries(max_retries=0), AsyncIO(), runtime],
    )
    declare_actors(broker, runtime, settings)
    broker.declare_queue(RUN_QUEUE)
    return broker, runtime


def run_worker(settings: Settings) -> None:
    build_llm(settings)  # a misconfigured LLM fails here, with a clear ConfigError, before anything runs
    broker, _ = build_worker_broker(settings)
    worker = Worker(broker, worker_threads=settings.worker_concurrency, worker_timeout=100)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker.start()
    log.info("chatgw worker consuming %r", RUN_QUEUE)
    stop.wait()
    worker.stop(timeout=int((settings.worker_shutdown_grace_s + 15) * 1000))
    broker.close()
