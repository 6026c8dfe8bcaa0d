"""Conversations as the HTTP API serves them: listed, read, deleted, and expired when unused.

Three stores meet here: the conversation index in Redis (shared/conversations.py), the runs
(shared/runstore.py) and the conversation memory, the checkpointer (shared/checkpoints.py), which
holds the turns. A conversation's turns are read from its memory and nowhere else.

Deleting a conversation stops its runs first (a stopped run records its partial turn before its
terminal event, so memory is deleted only after every run has ended), then deletes its memory, then
its keys. Expiry does the same to conversations unused for ``CHATGW_CONVERSATION_TTL_S``, in a loop
every gateway runs (:meth:`Conversations.expire_forever`): the index of last activity makes finding
them one range query, and marking one for deletion is atomic, so replicas never race.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver

from shared.conversations import ConversationMeta, ConversationStore, Doomed, PageCursor
from shared.errors import ConversationBusy, RunNotFound, StoreUnavailable
from shared.runstore import RunStore
from shared.transcript import Turn, read_turns

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_WAIT_S = 10.0  # a delete waits this long for the conversation's runs to end
EXPIRY_BATCH = 100


class Conversations:
    def __init__(
        self, runs: RunStore, index: ConversationStore, memory: BaseCheckpointSaver[Any], *, ttl_s: int
    ) -> None:
        self.runs = runs
        self.index = index
        self.memory = memory
        self.ttl_s = ttl_s

    async def page(
        self, user: str, limit: int, after: PageCursor | None
    ) -> tuple[list[ConversationMeta], PageCursor | None]:
        return await self.index.page(user, limit, after)

    async def get(self, user: str, conversation_id: str) -> tuple[ConversationMeta, list[Turn]] | None:
        """The user's conversation and its turns; None when it is not theirs (or does not exist)."""
        meta = await self.index.get(user, conversation_id)
        if meta is None:
            return None
        return meta, await self._memory(read_turns(self.memory, conversation_id))

    async def delete(self, user: str, conversation_id: str) -> bool:
        """Delete the user's conversation (False: not theirs, or does not exist). Raises
        ConversationBusy when its runs did not end within STOP_WAIT_S; the delete may be retried."""
        doomed = await self.index.begin_delete(conversation_id, user)
        if doomed is None:
            return False
        await self._stop_runs(user, conversation_id, doomed.run_ids)
        await self._remove(conversation_id, doomed)
        return True

    async def expire(self, now: float | None = None) -> int:
        """Delete (one batch of) the conversations unused for the TTL; returns how many."""
        cutoff = (time.time() if now is None else now) - self.ttl_s
        expired = 0
        for conversation_id in await self.index.unused_since(cutoff, EXPIRY_BATCH):
            doomed = await self.index.begin_expiry(conversation_id, cutoff)
            if doomed is not None:  # else used since, or a run is in flight
                await self._remove(conversation_id, doomed)
                expired += 1
        return expired

    async def expire_forever(self, interval_s: float) -> None:
        while True:
            try:
                while (expired := await self.expire()) > 0:
                    log.info("deleted %d conversations unused for %d s", expired, self.ttl_s)
                    if expired < EXPIRY_BATCH:
                        break
            except StoreUnavailable as exc:
                log.warning("conversation expiry: %s; trying again later", exc)
            except Exception:
                log.exception("conversation expiry failed; trying again later")
            await asyncio.sleep(interval_s)

    async def _stop_runs(self, user: str, conversation_id: str, run_ids: list[str]) -> None:
        pending = await self.index.runs_in_flight(run_ids)
        for run_id in pending:
            with contextlib.suppress(RunNotFound):  # ended (and expired) meanwhile
                await self.runs.request_stop(run_id, user)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WAIT_S
        while pending := await self.index.runs_in_flight(pending):
            if loop.time() >= deadline:
                raise ConversationBusy(
                    f"conversation {conversation_id}: its run did not stop in time; retry the delete"
                )
            await asyncio.sleep(0.05)

    async def _remove(self, conversation_id: str, doomed: Doomed) -> None:
        # Memory first: if that fails, the keys still name the conversation, so a retry (or expiry)
        # finishes the job instead of leaving memory nothing points to.
        await self._memory(self.memory.adelete_thread(conversation_id))
        await self.index.finish_delete(conversation_id, doomed)

    @staticmethod
    async def _memory(call: Awaitable[T]) -> T:
        """A checkpointer call; its failures (SQLite, PostgreSQL) become StoreUnavailable."""
        try:
            return await call
        except Exception as exc:
            log.warning("the conversation store failed", exc_info=True)
            raise StoreUnavailable(f"the conversation store is unavailable: {type(exc).__name__}") from exc
