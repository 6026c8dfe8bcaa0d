"""Dramatiq middleware that owns the worker's resources for the life of the worker process."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread

from shared.broker import Capacity
from shared.errors import ConfigError
from shared.settings import Settings
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class RuntimeMiddleware(dramatiq.Middleware):
    """Builds the WorkerRuntime on the AsyncIO middleware's event loop at boot; closes it at shutdown.

    Must come *after* ``dramatiq.middleware.AsyncIO`` in the broker's middleware list. Dramatiq runs
    ``before_*`` hooks in list order and ``after_*`` hooks in reverse, so the runtime is built in
    ``before_worker_boot`` once the loop exists — before any worker thread can take a message — and
    closed in ``after_worker_shutdown`` before AsyncIO stops the loop.
    """

    def __init__(self, settings: Settings, capacity: Capacity) -> None:
        self.settings = settings
        self.capacity = capacity
        self._runtime: WorkerRuntime | None = None

    @property
    def runtime(self) -> WorkerRuntime:
        if self._runtime is None:
            raise RuntimeError("the worker runtime is used before worker boot")
        return self._runtime

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            raise RuntimeError("RuntimeMiddleware needs dramatiq's AsyncIO middleware before it")
        try:
            self._runtime = loop_thread.run_coroutine(
                WorkerRuntime.create(self.settings, broker, self.capacity)
            )
        except Exception as exc:
            # Dramatiq would log this and start consuming anyway, taking runs it cannot serve. Nothing
            # is in flight yet, so leave now, loudly.
            log.critical("worker cannot start: %s", exc, exc_info=not isinstance(exc, ConfigError))
            print(f"chatgw worker: {exc}", file=sys.stderr, flush=True)
            os._exit(2)
        log.info(
            "worker %s ready (concurrency %d)", self._runtime.worker_id, self.settings.worker_concurrency
        )

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # Runs live on the loop, not in Dramatiq's threads: wait here until each has finished or been
        # handed back, before Dramatiq stops its threads and consumers.
        loop_thread = get_event_loop_thread()
        if self._runtime is not None and loop_thread is not None:
            loop_thread.run_coroutine(self._runtime.drain(self.settings.worker_shutdown_grace_s))

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        loop_thread = get_event_loop_thread()
        if self._runtime is not None and loop_thread is not None:
            loop_thread.run_coroutine(self._runtime.close())
            self._runtime = None
