"""A run's state in Redis: create, claim, append (log + publish, atomically), stop, read.

All writes are Lua scripts, so each is atomic: a reader never sees an event in the log that was not
published, nor one published that is not in the log; a run gets exactly one terminal event; and an
append from a stale attempt (a worker whose run was handed to another) is refused — the fence.
Redis errors are translated to :class:`shared.errors.StoreUnavailable` here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.errors import ConversationBusy, ConversationNotFound, RunNotFound, StoreUnavailable, TooManyRuns
from shared.keys import Keys
from shared.protocol import EVENT_STATUS, TERMINAL_STATUSES, event_body

P = ParamSpec("P")
T = TypeVar("T")

# Shared by every script that may append: KEYS = meta, log, channel, conversation.
# Returns the new seq, or a negative refusal: -1 unknown run, -2 already terminal, -3 stale attempt.
_APPEND_FN = """
local function append(meta, log, channel, conv, run_id, attempt, body, terminal_status, retention, now, eid)
  local status = redis.call('HGET', meta, 'status')
  if not status then return -1 end
  -- A retried call whose first try did run (the reply was lost) must not append twice.
  if eid ~= '' and redis.call('HGET', meta, 'last_eid') == eid then
    return tonumber(redis.call('HGET', meta, 'seq'))
  end
  if status == 'completed' or status == 'stopped' or status == 'failed' then return -2 end
  if tonumber(redis.call('HGET', meta, 'attempt')) ~= tonumber(attempt) then return -3 end
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local payload = '{"seq":' .. seq .. ',' .. string.sub(body, 2)
  redis.call('XADD', log, seq .. '-0', 'e', payload)
  redis.call('PUBLISH', channel, payload)
  if eid ~= '' then redis.call('HSET', meta, 'last_eid', eid) end
  if terminal_status ~= '' then
    redis.call('HSET', meta, 'status', terminal_status, 'ended_at', now)
    redis.call('EXPIRE', meta, retention)
    redis.call('EXPIRE', log, retention)
    if redis.call('HGET', conv, 'active_run') == run_id then
      redis.call('HDEL', conv, 'active_run')
    end
    local user_runs = redis.call('HGET', meta, 'user_runs_key')
    if user_runs then redis.call('SREM', user_runs, run_id) end
  end
  return seq
end
"""

# KEYS: meta, log, channel, conv. ARGV: run_id, attempt, body, terminal_status, retention, now, eid
APPEND_SCRIPT = (
    _APPEND_FN
    + """
return append(KEYS[1], KEYS[2], KEYS[3], KEYS[4],
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"""
)

# KEYS: meta, conv, user_runs. ARGV: run_id, user, conversation_id, is_new_conversation, content, now,
# conv_ttl, max_runs_per_user
CREATE_SCRIPT = """
local owner = redis.call('HGET', KEYS[2], 'owner')
if ARGV[4] == '1' then
  if owner then return 'conversation_not_found' end
  redis.call('HSET', KEYS[2], 'owner', ARGV[2], 'created_at', ARGV[6])
elseif owner ~= ARGV[2] then
  return 'conversation_not_found'
end
if redis.call('HGET', KEYS[2], 'active_run') then return 'conversation_busy' end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[8]) then
  if ARGV[4] == '1' then redis.call('DEL', KEYS[2]) end
  return 'too_many_runs'
end
redis.call('HSET', KEYS[1], 'run_id', ARGV[1], 'user', ARGV[2], 'conversation_id', ARGV[3],
  'status', 'queued', 'seq', 0, 'attempt', 0, 'content', ARGV[5], 'created_at', ARGV[6],
  'user_runs_key', KEYS[3])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[2], 'active_run', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return 'ok'
"""

# KEYS: meta. ARGV: worker_id, now. Returns {attempt, user, conversation_id, content} or false.
CLAIM_SCRIPT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return false end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'claimed_at', ARGV[2])
local f = redis.call('HMGET', KEYS[1], 'user', 'conversation_id', 'content')
return {attempt, f[1], f[2], f[3]}
"""

# KEYS: meta, log, channel, conv, control. ARGV: run_id, user, stopped_body, retention, now
# Returns the status after the request: 'not_found', a terminal status, or 'stopping'.
STOP_SCRIPT = (
    _APPEND_FN
    + """
local f = redis.call('HMGET', KEYS[1], 'status', 'user', 'attempt')
if not f[1] or f[2] ~= ARGV[2] then return 'not_found' end
if f[1] == 'completed' or f[1] == 'stopped' or f[1] == 'failed' then return f[1] end
redis.call('HSET', KEYS[1], 'stop_requested', '1')
if f[1] == 'queued' then
  -- Nobody runs it yet: end it here and now; a worker that picks the message up later skips it.
  append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], f[3], ARGV[3], 'stopped', ARGV[4], ARGV[5], '')
  return 'stopped'
end
redis.call('PUBLISH', KEYS[5], ARGV[1])
return 'stopping'
"""
)


class AppendRefused(Exception):
    """The append script refused an event; ``reason`` says why. Internal to worker code paths."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_REFUSALS = {-1: "unknown_run", -2: "already_terminal", -3: "stale_attempt"}


@dataclass(frozen=True, slots=True)
class Claim:
    run_id: str
    attempt: int
    user: str
    conversation_id: str
    content: str


@dataclass(frozen=True, slots=True)
class RunMeta:
    run_id: str
    user: str
    conversation_id: str
    status: str
    seq: int
    attempt: int
    stop_requested: bool

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def _translate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class RunStore:
    """Async access to runs. The Redis client (``decode_responses=True``) is created by the caller."""

    def __init__(self, redis: Redis, keys: Keys, *, retention_s: int, conversation_ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_s = retention_s
        self.conversation_ttl_s = conversation_ttl_s
        self._append = redis.register_script(APPEND_SCRIPT)
        self._create = redis.register_script(CREATE_SCRIPT)
        self._claim = redis.register_script(CLAIM_SCRIPT)
        self._stop = redis.register_script(STOP_SCRIPT)

    @_translate
    async def create_run(
        self,
        *,
        run_id: str,
        user: str,
        conversation_id: str,
        new_conversation: bool,
        content: str,
        max_runs_per_user: int = 1_000_000,
    ) -> None:
        k = self.keys
        result = await self._create(
            keys=[k.run(run_id), k.conversation(conversation_id), k.user_runs(user)],
            args=[
                run_id,
                user,
                conversation_id,
                "1" if new_conversation else "0",
                content,
                repr(time.time()),
                self.conversation_ttl_s,
                max_runs_per_user,
            ],
        )
        if result == "conversation_not_found":
            raise ConversationNotFound(f"conversation {conversation_id} not found")
        if result == "too_many_runs":
            raise TooManyRuns(f"you already have {max_runs_per_user} runs in flight; wait for one to end")
        if result == "conversation_busy":
            raise ConversationBusy(
                f"conversation {conversation_id} already has a run in flight; stop it or wait for it to end"
            )

    @_translate
    async def claim(self, run_id: str, worker_id: str) -> Claim | None:
        """Move a queued run to running and start a new attempt; None when it is not queued."""
        result = await self._claim(keys=[self.keys.run(run_id)], args=[worker_id, repr(time.time())])
        if not result:
            return None
        attempt, user, conversation_id, content = result
        return Claim(run_id, int(attempt), str(user), str(conversation_id), str(content))

    @_translate
    async def append(
        self,
        run_id: str,
        conversation_id: str,
        attempt: int,
        event_type: str,
        fields: dict[str, Any] | None = None,
        *,
        event_id: str = "",
    ) -> int:
        """Append one event to the run's log and publish it; return its seq or raise AppendRefused.

        ``event_id`` makes a retried call idempotent: the same id twice in a row appends once.
        """
        now = time.time()
        body = event_body(event_type, run_id, conversation_id, now, **(fields or {}))
        k = self.keys
        seq = int(
            await self._append(
                keys=[
                    k.run(run_id),
                    k.run_log(run_id),
                    k.run_channel(run_id),
                    k.conversation(conversation_id),
                ],
                args=[
                    run_id,
                    attempt,
                    body,
                    EVENT_STATUS.get(event_type, ""),
                    self.retention_s,
                    repr(now),
                    event_id,
                ],
            )
        )
        if seq < 0:
            raise AppendRefused(_REFUSALS.get(seq, str(seq)))
        return seq

    @_translate
    async def request_stop(self, run_id: str, user: str) -> str:
        """Stop a run on behalf of ``user``. Returns 'stopping' or the terminal status; RunNotFound."""
        meta = await self.get_meta(run_id)
        if meta is None or meta.user != user:
            raise RunNotFound(f"run {run_id} not found")
        k = self.keys
        body = event_body("run.stopped", run_id, meta.conversation_id, time.time(), content="")
        result = str(
            await self._stop(
                keys=[
                    k.run(run_id),
                    k.run_log(run_id),
                    k.run_channel(run_id),
                    k.conversation(meta.conversation_id),
                    k.control_channel(),
                ],
                args=[run_id, user, body, self.retention_s, repr(time.time())],
            )
        )
        if result == "not_found":
            raise RunNotFound(f"run {run_id} not found")
        return result

    @_translate
    async def get_meta(self, run_id: str) -> RunMeta | None:
        raw = await self.redis.hgetall(self.keys.run(run_id))
        fields = {str(k): str(v) for k, v in (raw or {}).items()}
        if "status" not in fields:
            return None
        return RunMeta(
            run_id=run_id,
            user=fields.get("user", ""),
            conversation_id=fields.get("conversation_id", ""),
            status=fields["status"],
            seq=int(fields.get("seq", 0)),
            attempt=int(fields.get("attempt", 0)),
            stop_requested=fields.get("stop_requested") == "1",
        )

    @_translate
    async def read_log(self, run_id: str, after_seq: int, count: int | None = None) -> list[tuple[int, str]]:
        """Events with seq > after_seq, in order, as (seq, raw JSON)."""
        entries = await self.redis.xrange(
            self.keys.run_log(run_id), min=f"{after_seq + 1}-0", max="+", count=count
        )
        out: list[tuple[int, str]] = []
        for entry_id, fields in entries or []:
            out.append((int(str(entry_id).split("-", 1)[0]), str((fields or {})["e"])))
        return out

    @_translate
    async def stop_requested(self, run_id: str) -> bool:
        return bool(await self.redis.hget(self.keys.run(run_id), "stop_requested") == "1")
