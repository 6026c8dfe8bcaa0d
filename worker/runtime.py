"""Everything a worker process holds for its runs, created at worker boot (never at import)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.broker import Capacity, DoorbellRedisBroker
from shared.errors import StoreUnavailable
from shared.keys import Keys
from shared.redis_factory import async_redis
from shared.runqueue import RunQueue
from shared.runstore import Claim, RunStore
from shared.settings import Settings
from shared.tiers import Tiers
from shared.usage import UsageLedger
from worker.agent.embeddings import build_embedder
from worker.agent.faiss_retriever import FaissRetriever
from worker.agent.graph import build_graph
from worker.agent.llm import build_chat_model
from worker.agent.memory import open_checkpointer
from worker.agent.retrieval import NullRetriever, Retriever
from worker.answer_cache import AnswerCache, corpus_version
from worker.appender import Appender
from worker.billing import Billing
from worker.metrics import WorkerMetrics
from worker.outages import OutageLog
from worker.supervision import hand_back, renew_leases, sweep_orphans

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TTL_S = 10
# A heartbeat answered this late means Redis hung meanwhile (paused, or its host stalled).
HEARTBEAT_SLOW_S = 2.0


def build_llm(settings: Settings) -> BaseChatModel:
    # Once per worker process: the OpenAI client's connection pool is shared by all its runs, and a
    # misconfigured model is a ConfigError here, at boot, not at the first chat.
    return build_chat_model(settings)


def build_retriever(settings: Settings) -> Retriever:
    """FAISS over CHATGW_INDEX_PATH; ConfigError (the worker does not start) on an embedder mismatch."""
    if settings.retrieval_k == 0:
        return NullRetriever()
    return FaissRetriever(settings.index_path, build_embedder(settings))


@dataclass
class WorkerRuntime:
    settings: Settings
    keys: Keys
    redis: Redis
    store: RunStore
    graph: Any
    runs: RunQueue
    capacity: Capacity
    appender: Appender
    tiers: Tiers  # each tier's limits (max tokens per run) and queue
    answers: AnswerCache  # first-turn answers given before (docs/tiers.md)
    billing: Billing  # what each run cost its user today
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    active: dict[str, asyncio.Task[Any]] = field(default_factory=dict)  # run_id -> its agent task
    attempts: dict[str, int] = field(default_factory=dict)  # run_id -> the attempt running here
    run_tasks: set[asyncio.Task[None]] = field(default_factory=set)  # every run executing here
    accepting: bool = True  # False once draining: messages go back to the queue
    _slots: asyncio.Semaphore | None = None
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    outages: OutageLog = field(default_factory=OutageLog)  # when Redis was unreachable from here
    _background: list[asyncio.Task[None]] = field(default_factory=list)
    _memory: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)  # checkpointer

    @classmethod
    async def create(
        cls, settings: Settings, broker: DoorbellRedisBroker, capacity: Capacity
    ) -> WorkerRuntime:
        keys = Keys(settings.key_prefix)
        redis = async_redis(settings)
        tiers = Tiers(settings)
        runs = RunQueue(broker, redis, tiers)
        metrics = WorkerMetrics()
        store = RunStore(
            redis, keys, retention_s=settings.run_retention_s, conversation_ttl_s=settings.conversation_ttl_s
        )
        # Conversation memory, shared by every worker: any of them can continue any conversation.
        memory = contextlib.AsyncExitStack()
        checkpointer = await memory.enter_async_context(open_checkpointer(settings))
        retriever = build_retriever(settings)
        graph = build_graph(
            build_llm(settings),
            retriever,
            k=settings.retrieval_k,
            checkpointer=checkpointer,
            history_budget_chars=settings.history_budget_chars,
        )
        runtime = cls(
            settings=settings,
            keys=keys,
            redis=redis,
            store=store,
            graph=graph,
            runs=runs,
            capacity=capacity,
            appender=Appender(store),
            tiers=tiers,
            answers=AnswerCache(settings, redis, keys, metrics, corpus=corpus_version(retriever)),
            billing=Billing(UsageLedger(redis, keys), tiers, metrics),
            metrics=metrics,
        )
        runtime._memory = memory
        runtime._slots = asyncio.Semaphore(capacity.limit)
        runtime.metrics.active.set_function(lambda: len(runtime.run_tasks))
        if settings.worker_metrics_port is not None:
            runtime.metrics.serve(settings.worker_metrics_port)
        runtime._background = [
            asyncio.create_task(runtime._listen_for_stops(), name="stop-listener"),
            asyncio.create_task(runtime._heartbeat(), name="heartbeat"),
            asyncio.create_task(runtime._keep_leases(), name="leases"),
            asyncio.create_task(runtime._sweep(), name="sweeper"),
        ]
        return runtime

    # -- run slots: the asyncio semaphore bounds runs on this loop; Capacity mirrors it for the
    # -- consumer thread, which fetches messages only while there is room.

    async def take_slot(self) -> None:
        assert self._slots is not None
        await self._slots.acquire()
        self.capacity.take()

    def release_slot(self) -> None:
        assert self._slots is not None
        self.capacity.release()
        self._slots.release()

    def start(self, claim: Claim, run: Coroutine[Any, Any, None]) -> None:
        """Run a claimed run on the loop in a slot already taken; frees the slot when it ends."""
        self.attempts[claim.run_id] = claim.attempt
        task = asyncio.get_running_loop().create_task(run, name=f"run-{claim.run_id}")
        self.run_tasks.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self.run_tasks.discard(task)
            if self.attempts.get(claim.run_id) == claim.attempt:
                del self.attempts[claim.run_id]
            self.release_slot()
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("run %s: unexpected error", claim.run_id, exc_info=exc)

        task.add_done_callback(finished)

    async def close(self) -> None:
        await self.appender.close()
        await self.store.close()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.keys.worker(self.worker_id))
        await self.redis.aclose()
        try:
            await self._memory.aclose()  # runs have ended by now: nothing writes to the checkpointer
        except Exception:
            log.warning("closing the conversation store failed", exc_info=True)

    def cancel_run(self, run_id: str) -> bool:
        task = self.active.get(run_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def _listen_for_stops(self) -> None:
        """One pub/sub connection per worker process for stop requests (payload: run_id)."""
        delay = 0.05
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.control_channel())
                delay = 0.05
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message["type"] != "message":
                        continue
                    if self.cancel_run(str(message["data"])):
                        log.info("stop requested: cancelled run %s", message["data"])
            except asyncio.CancelledError:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            except (RedisError, OSError) as exc:
                log.warning("stop listener lost Redis (%s); reconnecting", exc)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                # Stops published while we were away are still recorded on the run: check them.
                await self._recheck_stop_flags()

    async def _recheck_stop_flags(self) -> None:
        for run_id in list(self.active):
            with contextlib.suppress(Exception):
                if await self.store.stop_requested(run_id):
                    self.cancel_run(run_id)

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.run_lease_s / 3)
            try:
                await renew_leases(self)
            except StoreUnavailable:
                log.warning("cannot renew leases: Redis unreachable")

    async def _sweep(self) -> None:
        interval = self.settings.sweep_interval_s
        while True:
            # Jitter spreads the sweeps of many workers; the scripts make overlaps harmless.
            await asyncio.sleep(interval * (0.5 + random.random()))
            try:
                await sweep_orphans(self)
            except StoreUnavailable:
                pass
            except Exception:
                log.exception("sweeper failed; continuing")

    async def drain(self, grace_s: float) -> None:
        """Take no new runs; let those in flight finish for ``grace_s``, then hand the rest to other
        workers (``run.retrying``) and wait for their tasks to wind down."""
        self.accepting = False
        self.capacity.close()
        if self.run_tasks:
            await asyncio.wait(list(self.run_tasks), timeout=grace_s)
        if self.run_tasks:
            log.info("grace period over; handing back %d runs", len(self.run_tasks))
            await hand_back(self)
            await asyncio.wait(list(self.run_tasks), timeout=10)

    async def _heartbeat(self) -> None:
        key = self.keys.worker(self.worker_id)
        while True:
            # The heartbeat doubles as this process's view of Redis's reachability (for the sweeper).
            started = time.time()
            try:
                await self.redis.set(key, str(len(self.active)), ex=HEARTBEAT_TTL_S)
            except (RedisError, OSError):
                self.outages.failed()
            else:
                if time.time() - started > HEARTBEAT_SLOW_S:
                    self.outages.failed(started)
                self.outages.reached()
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
