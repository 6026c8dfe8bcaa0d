"""A user's conversations in Redis: the list by last activity, titles, and deleting one.

A conversation is the hash ``P:conv:{id}`` (owner, title, created_at, last_activity, active_run) and
three indexes that the create script in shared/runstore.py updates with every new run:
``P:user:{user}:conversations`` (the user's list), ``P:conversations:activity`` (every conversation,
for expiry), both scored by last activity, and ``P:conv:{id}:runs`` (its runs, whose logs go with it).
Its turns are not here: they are its memory, in the checkpointer (shared/transcript.py).

Deleting one takes two steps around deleting its memory: :meth:`ConversationStore.begin_delete`
marks it (no run may start in it from then on) and names its runs; :meth:`ConversationStore.finish_delete`
removes its keys. A delete cut short in between is completed by a retry, or by expiry.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.errors import StoreUnavailable
from shared.keys import Keys
from shared.protocol import TERMINAL_STATUSES

TITLE_CHARS = 80
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CURSOR_MAX_CHARS = 200

# KEYS: conv, conv_runs, conversations_activity. ARGV: conversation_id, user ('' = expiry), cutoff
# (expiry: last activity at or before it), now.
# A user's delete needs the owner; expiry needs the conversation unused since the cutoff and no run in
# flight (one that outlived the TTL postpones it). Marks the conversation deleting (the create script
# refuses new runs in it) and returns {'ok', owner or '', run ids...}; else {'not_found'} or {'active'}.
BEGIN_DELETE_SCRIPT = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if ARGV[2] ~= '' then
  if owner ~= ARGV[2] then return {'not_found'} end
else
  local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if not score then return {'not_found'} end
  if tonumber(score) > tonumber(ARGV[3]) then return {'active'} end
  if redis.call('HEXISTS', KEYS[1], 'active_run') == 1 then
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
    return {'active'}
  end
end
if owner then redis.call('HSET', KEYS[1], 'deleting', '1') end
local result = {'ok', owner or ''}
for _, run_id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do result[#result + 1] = run_id end
return result
"""

# KEYS: conv, conv_waiting, conv_runs, conversations_activity, user_conversations, then each run's
# meta and log. ARGV: conversation_id.
FINISH_DELETE_SCRIPT = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
for i = 6, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""

_FIELDS = ("owner", "title", "created_at", "last_activity", "active_run")


def conversation_title(content: str) -> str:
    """A conversation's title: its first question on one line, cut at a word to about 80 characters."""
    text = " ".join(content.split())
    if len(text) <= TITLE_CHARS:
        return text
    cut = text[: TITLE_CHARS - 1]
    space = cut.rfind(" ")
    if space >= TITLE_CHARS // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where a page of a user's conversations ended: the last one's activity score and id."""

    score: float
    conversation_id: str

    def encode(self) -> str:
        raw = f"{self.score!r}|{self.conversation_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> PageCursor:
        """Raise ValueError for anything that is not a cursor :meth:`encode` made."""
        if not text or len(text) > _CURSOR_MAX_CHARS:
            raise ValueError("not a cursor")
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True).decode()
            score_text, _, conversation_id = raw.partition("|")
            score = float(score_text)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise ValueError("not a cursor") from None
        if not math.isfinite(score) or not _ID_RE.match(conversation_id):
            raise ValueError("not a cursor")
        return cls(score, conversation_id)


@dataclass(frozen=True, slots=True)
class ConversationMeta:
    id: str
    owner: str
    title: str
    created_at: float | None
    last_activity: float | None
    active_run: str | None


@dataclass(frozen=True, slots=True)
class Doomed:
    """A conversation marked for deletion: its owner ('' when its hash had expired) and runs."""

    owner: str
    run_ids: list[str]


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc


class ConversationStore:
    """Async access to conversations. The Redis client (``decode_responses=True``) is the caller's."""

    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self._begin_delete = redis.register_script(BEGIN_DELETE_SCRIPT)
        self._finish_delete = redis.register_script(FINISH_DELETE_SCRIPT)

    async def get(self, user: str, conversation_id: str) -> ConversationMeta | None:
        """The conversation if ``user`` owns it (None: unknown, expired or another user's)."""
        with _store_errors():
            values = await self.redis.hmget(self.keys.conversation(conversation_id), list(_FIELDS))
        meta = _meta(conversation_id, values)
        return meta if meta is not None and meta.owner == user else None

    async def page(
        self, user: str, limit: int, after: PageCursor | None = None
    ) -> tuple[list[ConversationMeta], PageCursor | None]:
        """Up to ``limit`` of the user's conversations, newest activity first, after ``after``; and the
        cursor of the next page (None: this was the last)."""
        key = self.keys.user_conversations(user)
        oldest = time.time() - self.ttl_s
        found: list[tuple[ConversationMeta, PageCursor]] = []
        cursor = after
        with _store_errors():
            while len(found) <= limit:
                entries = await self._entries_after(key, cursor, oldest, limit + 1 - len(found))
                if not entries:
                    break
                pipe = self.redis.pipeline(transaction=False)
                for conversation_id, _ in entries:
                    pipe.hmget(self.keys.conversation(conversation_id), list(_FIELDS))
                stale = []
                for (conversation_id, score), values in zip(entries, await pipe.execute(), strict=True):
                    cursor = PageCursor(score, conversation_id)
                    meta = _meta(conversation_id, values)
                    if meta is None or meta.owner != user:
                        stale.append(conversation_id)  # expired (or deleted) since it was listed
                    else:
                        found.append((meta, cursor))
                if stale:
                    await self.redis.zrem(key, *stale)
        page = [meta for meta, _ in found[:limit]]
        return page, (found[limit - 1][1] if len(found) > limit else None)

    async def _entries_after(
        self, key: str, after: PageCursor | None, oldest: float, count: int
    ) -> list[tuple[str, float]]:
        """The next ``count`` entries in (score desc, id desc) order strictly after ``after``."""
        if after is None:
            raw = await self.redis.zrange(
                key, "+inf", f"({oldest!r}", desc=True, byscore=True, offset=0, num=count, withscores=True
            )
            return [(str(member), float(score)) for member, score in cast(list[tuple[str, float]], raw)]
        # Entries with the cursor's own score come first, in descending id order: skip those at or
        # before the cursor's id.
        ties = int(await self.redis.zcount(key, after.score, after.score))
        raw = await self.redis.zrange(
            key,
            repr(after.score),
            f"({oldest!r}",
            desc=True,
            byscore=True,
            offset=0,
            num=count + ties,
            withscores=True,
        )
        entries = [(str(member), float(score)) for member, score in cast(list[tuple[str, float]], raw)]
        return [
            (member, score)
            for member, score in entries
            if score < after.score or member < after.conversation_id
        ][:count]

    async def begin_delete(self, conversation_id: str, user: str) -> Doomed | None:
        """Mark the user's conversation for deletion; None when it is not theirs (or gone)."""
        result = await self._begin(conversation_id, user, cutoff=0.0)
        return result if isinstance(result, Doomed) else None

    async def begin_expiry(self, conversation_id: str, cutoff: float) -> Doomed | None:
        """Mark a conversation unused since ``cutoff`` for deletion; None when it is in use (or gone)."""
        result = await self._begin(conversation_id, "", cutoff=cutoff)
        return result if isinstance(result, Doomed) else None

    async def _begin(self, conversation_id: str, user: str, *, cutoff: float) -> Doomed | str:
        k = self.keys
        with _store_errors():
            result = await self._begin_delete(
                keys=[
                    k.conversation(conversation_id),
                    k.conversation_runs(conversation_id),
                    k.conversations_activity(),
                ],
                args=[conversation_id, user, repr(cutoff), repr(time.time())],
            )
        status, *rest = [str(item) for item in result]
        if status != "ok":
            return status
        owner, *run_ids = rest
        return Doomed(owner, run_ids)

    async def finish_delete(self, conversation_id: str, doomed: Doomed) -> None:
        """Remove the conversation's keys, its runs' metadata and logs, and its index entries."""
        k = self.keys
        keys = [
            k.conversation(conversation_id),
            k.conversation_waiting(conversation_id),
            k.conversation_runs(conversation_id),
            k.conversations_activity(),
            # Without an owner (its hash expired) the user's list drops it lazily (page()).
            k.user_conversations(doomed.owner) if doomed.owner else k.conversations_activity(),
        ]
        for run_id in doomed.run_ids:
            keys += [k.run(run_id), k.run_log(run_id)]
        with _store_errors():
            await self._finish_delete(keys=keys, args=[conversation_id])

    async def runs_in_flight(self, run_ids: list[str]) -> list[str]:
        """Those of ``run_ids`` that have not ended (one round trip)."""
        if not run_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hget(self.keys.run(run_id), "status")
        with _store_errors():
            statuses = await pipe.execute()
        return [
            run_id
            for run_id, status in zip(run_ids, statuses, strict=True)
            if status is not None and status not in TERMINAL_STATUSES  # None: expired or deleted
        ]

    async def unused_since(self, cutoff: float, limit: int = 100) -> list[str]:
        """Conversations whose last activity is at or before ``cutoff`` (Unix time), oldest first."""
        with _store_errors():
            found = await self.redis.zrangebyscore(
                self.keys.conversations_activity(), "-inf", repr(cutoff), start=0, num=limit
            )
        return [str(conversation_id) for conversation_id in found]


def _meta(conversation_id: str, values: Sequence[Any]) -> ConversationMeta | None:
    owner, title, created_at, last_activity, active_run = values
    if owner is None:
        return None
    return ConversationMeta(
        id=conversation_id,
        owner=str(owner),
        title=str(title or ""),
        created_at=float(created_at) if created_at else None,
        last_activity=float(last_activity) if last_activity else None,
        active_run=str(active_run) if active_run else None,
    )
