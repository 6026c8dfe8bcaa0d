"""A run's state in Redis: create, claim, append (log + publish, atomically), stop, read.

All writes are Lua scripts, so each is atomic: a reader never sees an event in the log that was not
published, nor one published that is not in the log; a run gets exactly one terminal event; and an
append from a stale attempt (a worker whose run was handed to another) is refused — the fence.
Redis errors are translated to :class:`shared.errors.StoreUnavailable` here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.conversations import conversation_title
from shared.errors import (
    ConversationBusy,
    ConversationNotFound,
    ErrorCode,
    RunNotFound,
    StoreUnavailable,
    TooManyRuns,
)
from shared.keys import Keys
from shared.protocol import EVENT_STATUS, TERMINAL_STATUSES, event_body
from shared.redis_packed import PackedConnection, pack
from shared.store_errors import translate_redis_errors

# Shared by every script that may append. K = {meta, log, channel, conv, leases} (key names).
# Returns the new seq, or a negative refusal: -1 unknown run, -2 already terminal, -3 stale attempt.
_APPEND_FN = """
local function append(K, run_id, attempt, body, terminal_status, retention, now, eid)
  local f = redis.call('HMGET', K.meta, 'status', 'last_eid', 'attempt', 'seq')
  local status = f[1]
  if not status then return -1 end
  -- A retried call whose first try did run (the reply was lost) must not append twice.
  if eid ~= '' and f[2] == eid then return tonumber(f[4]) end
  if status == 'completed' or status == 'stopped' or status == 'failed' then return -2 end
  -- The fence: only the current attempt may write.
  if tonumber(f[3]) ~= tonumber(attempt) then return -3 end
  local seq = redis.call('HINCRBY', K.meta, 'seq', 1)
  local payload = '{"seq":' .. seq .. ',' .. string.sub(body, 2)
  redis.call('XADD', K.log, seq .. '-0', 'e', payload)
  redis.call('PUBLISH', K.channel, payload)
  if eid ~= '' then redis.call('HSET', K.meta, 'last_eid', eid) end
  if terminal_status ~= '' then
    redis.call('HSET', K.meta, 'status', terminal_status, 'ended_at', now)
    redis.call('EXPIRE', K.meta, retention)
    redis.call('EXPIRE', K.log, retention)
    redis.call('ZREM', K.leases, run_id)
    if redis.call('HGET', K.conv, 'active_run') == run_id then
      redis.call('HDEL', K.conv, 'active_run')
      -- on_busy=enqueue: the next run still waiting becomes the active one (its message is polling).
      local waiting = redis.call('HGET', K.conv, 'waiting_key')
      while waiting do
        local next_meta = redis.call('LPOP', waiting)
        if not next_meta then break end
        if redis.call('HGET', next_meta, 'status') == 'waiting' then
          redis.call('HSET', next_meta, 'status', 'queued')
          redis.call('HSET', K.conv, 'active_run', redis.call('HGET', next_meta, 'run_id'))
          break
        end
      end
    end
    local user_runs = redis.call('HGET', K.meta, 'user_runs_key')
    if user_runs then redis.call('SREM', user_runs, run_id) end
  end
  return seq
end
local K = {meta = KEYS[1], log = KEYS[2], channel = KEYS[3], conv = KEYS[4], leases = KEYS[5]}
"""

# KEYS: run keys. ARGV: run_id, attempt, body, terminal_status, retention, now, eid
APPEND_SCRIPT = (
    _APPEND_FN
    + """
return append(K, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"""
)

# KEYS: meta, conv, user_runs, conv_waiting, leases, client_ref, conv_runs, user_conversations,
# conversations_activity. ARGV: run_id, user, conversation_id, is_new_conversation, content, now,
# conv_ttl, max_runs_per_user, enqueue_when_busy ('1' = wait behind
# the active run), unclaimed_deadline (a sweeper re-sends the message if nobody has claimed it by then),
# client_ref_ttl ('' = the chat has no client reference), title (of a new conversation),
# runs_horizon (runs of the conversation created before then have no keys left), tier (the user's:
# its queue, limits and billing; docs/tiers.md). The run records first_turn = is_new_conversation.
# Returns 'ok', 'waiting' (queued behind the active run), 'duplicate RUN CONV' or a refusal.
CREATE_SCRIPT = """
if ARGV[11] ~= '' then
  -- The same client reference again (a retry after a lost reply): the run it already started.
  local seen = redis.call('GET', KEYS[6])
  if seen then return 'duplicate ' .. seen end
end
local owner = redis.call('HGET', KEYS[2], 'owner')
if ARGV[4] == '1' then
  if owner then return 'conversation_not_found' end
  redis.call('HSET', KEYS[2], 'owner', ARGV[2], 'created_at', ARGV[6], 'title', ARGV[12])
elseif owner ~= ARGV[2] or redis.call('HEXISTS', KEYS[2], 'deleting') == 1 then
  return 'conversation_not_found'
end
local busy = redis.call('HGET', KEYS[2], 'active_run')
if busy and ARGV[9] ~= '1' then return 'conversation_busy' end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[8]) then
  if ARGV[4] == '1' then redis.call('DEL', KEYS[2]) end
  return 'too_many_runs'
end
local status = 'queued'
if busy then status = 'waiting' end
redis.call('HSET', KEYS[1], 'run_id', ARGV[1], 'user', ARGV[2], 'conversation_id', ARGV[3],
  'status', status, 'seq', 0, 'attempt', 1, 'content', ARGV[5], 'created_at', ARGV[6],
  'user_runs_key', KEYS[3], 'tier', ARGV[14], 'first_turn', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[10], ARGV[1])
if busy then
  redis.call('RPUSH', KEYS[4], KEYS[1])
  redis.call('HSET', KEYS[2], 'waiting_key', KEYS[4])
  redis.call('EXPIRE', KEYS[4], ARGV[7])
else
  redis.call('HSET', KEYS[2], 'active_run', ARGV[1])
end
redis.call('EXPIRE', KEYS[2], ARGV[7])
-- The conversation's indexes: its runs by creation (deleted with it; runs whose keys have surely
-- expired are dropped), the user's list and the expiry index, both by last activity (entries of the
-- user's conversations expired since are dropped here).
redis.call('HSET', KEYS[2], 'last_activity', ARGV[6])
redis.call('ZADD', KEYS[7], ARGV[6], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. ARGV[13])
redis.call('EXPIRE', KEYS[7], ARGV[7])
redis.call('ZADD', KEYS[8], ARGV[6], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', '(' .. (tonumber(ARGV[6]) - tonumber(ARGV[7])))
redis.call('EXPIRE', KEYS[8], ARGV[7])
redis.call('ZADD', KEYS[9], ARGV[6], ARGV[3])
if ARGV[11] ~= '' then redis.call('SET', KEYS[6], ARGV[1] .. ' ' .. ARGV[3], 'EX', ARGV[11]) end
return status == 'waiting' and 'waiting' or 'ok'
"""

# KEYS: meta, leases. ARGV: run_id, worker_id, now, lease_deadline. Returns {attempt, user,
# conversation_id, content, created_at, tier, first_turn}, 'waiting' (behind another run of its
# conversation), or false.
CLAIM_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'waiting' then return 'waiting' end
if status ~= 'queued' then return false end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[2], 'claimed_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'attempt', 'user', 'conversation_id', 'content', 'created_at',
  'tier', 'first_turn')
return {tonumber(f[1]), f[2], f[3], f[4], f[5], f[6] or '', f[7] or '0'}
"""

# KEYS: meta, leases. ARGV: run_id, attempt, lease_deadline. 1 = renewed, 0 = no longer ours.
RENEW_SCRIPT = """
local f = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if f[1] ~= 'running' or tonumber(f[2]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# KEYS: run keys. ARGV: run_id, now, expected_attempt, max_attempts, retrying_body, failed_body,
# retention, resend_deadline, force ('1' = hand back now, lease or not).
# Returns 'alive', 'gone', 'changed', 'resend' (queued but unclaimed: send the message again),
# 'retry' (next attempt queued: send the message) or 'failed' (out of attempts).
REQUEUE_SCRIPT = (
    _APPEND_FN
    + """
local run_id, now = ARGV[1], tonumber(ARGV[2])
local score = redis.call('ZSCORE', K.leases, run_id)
if not score then return 'gone' end
if ARGV[9] ~= '1' and tonumber(score) > now then return 'alive' end
local f = redis.call('HMGET', K.meta, 'status', 'attempt')
if not f[1] or f[1] == 'completed' or f[1] == 'stopped' or f[1] == 'failed' then
  redis.call('ZREM', K.leases, run_id)
  return 'gone'
end
if tonumber(f[2]) ~= tonumber(ARGV[3]) then return 'changed' end
if f[1] == 'queued' or f[1] == 'waiting' then
  -- Nobody claimed it in time: its message may be lost (e.g. its gateway died before enqueueing).
  redis.call('ZADD', K.leases, ARGV[8], run_id)
  return 'resend'
end
local attempt = tonumber(f[2])
if attempt >= tonumber(ARGV[4]) then
  append(K, run_id, attempt, ARGV[6], 'failed', ARGV[7], ARGV[2], '')
  return 'failed'
end
-- Bump the attempt before anything else: from here on the old attempt is fenced out.
redis.call('HSET', K.meta, 'attempt', attempt + 1, 'status', 'queued')
redis.call('ZADD', K.leases, ARGV[8], run_id)
append(K, run_id, attempt + 1, ARGV[5], '', ARGV[7], ARGV[2], '')
return 'retry'
"""
)

# KEYS: run keys + control channel. ARGV: run_id, user, stopped_body, retention, now
# Returns the status after the request: 'not_found', a terminal status, or 'stopping'.
STOP_SCRIPT = (
    _APPEND_FN
    + """
local f = redis.call('HMGET', K.meta, 'status', 'user', 'attempt')
if not f[1] or f[2] ~= ARGV[2] then return 'not_found' end
if f[1] == 'completed' or f[1] == 'stopped' or f[1] == 'failed' then return f[1] end
redis.call('HSET', K.meta, 'stop_requested', '1')
if f[1] == 'queued' or f[1] == 'waiting' then
  -- Nobody runs it now: end it here; a worker that picks the message up later skips it.
  append(K, ARGV[1], f[3], ARGV[3], 'stopped', ARGV[4], ARGV[5], '')
  return 'stopped'
end
redis.call('PUBLISH', KEYS[6], ARGV[1])
return 'stopping'
"""
)


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One event for :meth:`RunStore.append_batch`: ``body`` comes from :func:`shared.protocol.event_body`."""

    run_id: str
    conversation_id: str
    attempt: int
    body: str
    terminal_status: str  # '' unless the event ends the run
    event_id: str  # makes a retried append idempotent


# A run's keys expire CHATGW_RUN_RETENTION_S after it ends; no run stays in flight this much longer.
RUN_KEYS_HORIZON_S = 86_400.0
BATCH_TIMEOUT_S = 10.0  # a batch of appends with no answer for this long: Redis is unreachable


class AppendRefused(Exception):
    """The append script refused an event; ``reason`` says why. Internal to worker code paths."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_REFUSALS = {-1: "unknown_run", -2: "already_terminal", -3: "stale_attempt"}


@dataclass(frozen=True, slots=True)
class Created:
    run_id: str
    conversation_id: str
    queued: bool
    duplicate: bool


class RunWaiting(Enum):
    """The run is queued behind its conversation's active run (on_busy=enqueue): try later."""

    WAITING = "waiting"


RUN_WAITING = RunWaiting.WAITING


@dataclass(frozen=True, slots=True)
class Claim:
    run_id: str
    attempt: int
    user: str
    conversation_id: str
    content: str
    created_at: float = 0.0  # Unix time the gateway created the run
    tier: str = ""  # the user's tier at create ('' for a run created before tiers existed)
    first_turn: bool = False  # the run opened its conversation: no earlier turns


@dataclass(frozen=True, slots=True)
class RunMeta:
    run_id: str
    user: str
    conversation_id: str
    status: str
    seq: int
    attempt: int
    stop_requested: bool
    created_at: float | None = None  # Unix time the gateway created the run
    ended_at: float | None = None  # Unix time of its terminal event
    tier: str = ""  # the user's tier at create

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


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
        self._renew = redis.register_script(RENEW_SCRIPT)
        self._requeue = redis.register_script(REQUEUE_SCRIPT)
        self._packed: PackedConnection | None = None  # the appends' own connection, opened on first use

    def _run_keys(self, run_id: str, conversation_id: str) -> list[str]:
        k = self.keys
        return [
            k.run(run_id),
            k.run_log(run_id),
            k.run_channel(run_id),
            k.conversation(conversation_id),
            k.leases(),
        ]

    @translate_redis_errors
    async def create_run(
        self,
        *,
        run_id: str,
        user: str,
        conversation_id: str,
        new_conversation: bool,
        content: str,
        max_runs_per_user: int = 1_000_000,
        enqueue_when_busy: bool = False,
        unclaimed_grace_s: float = 30.0,
        client_ref: str | None = None,
        client_ref_ttl_s: int = 600,
        tier: str = "",
    ) -> Created:
        """Create a queued run (``queued``: it waits behind the conversation's active run). With a
        ``client_ref`` seen before, nothing is created: the earlier run comes back as a duplicate.
        Raises ConversationNotFound, ConversationBusy or TooManyRuns."""
        k = self.keys
        result = await self._create(
            keys=[
                k.run(run_id),
                k.conversation(conversation_id),
                k.user_runs(user),
                k.conversation_waiting(conversation_id),
                k.leases(),
                k.user_chat_ref(user, client_ref or ""),
                k.conversation_runs(conversation_id),
                k.user_conversations(user),
                k.conversations_activity(),
            ],
            args=[
                run_id,
                user,
                conversation_id,
                "1" if new_conversation else "0",
                content,
                repr(time.time()),
                self.conversation_ttl_s,
                max_runs_per_user,
                "1" if enqueue_when_busy else "0",
                repr(time.time() + unclaimed_grace_s),
                str(client_ref_ttl_s) if client_ref else "",
                conversation_title(content) if new_conversation else "",
                repr(time.time() - self.retention_s - RUN_KEYS_HORIZON_S),
                tier,
            ],
        )
        if str(result).startswith("duplicate "):
            _, earlier_run, earlier_conversation = str(result).split(" ")
            return Created(earlier_run, earlier_conversation, queued=False, duplicate=True)
        if result == "conversation_not_found":
            raise ConversationNotFound(f"conversation {conversation_id} not found")
        if result == "too_many_runs":
            raise TooManyRuns(f"you already have {max_runs_per_user} runs in flight; wait for one to end")
        if result == "conversation_busy":
            raise ConversationBusy(
                f"conversation {conversation_id} already has a run in flight; stop it or wait for it to end"
            )
        return Created(run_id, conversation_id, queued=result == "waiting", duplicate=False)

    @translate_redis_errors
    async def active_run(self, conversation_id: str) -> str | None:
        found = await self.redis.hget(self.keys.conversation(conversation_id), "active_run")
        return None if found is None else str(found)

    @translate_redis_errors
    async def claim(self, run_id: str, worker_id: str, *, lease_s: float) -> Claim | RunWaiting | None:
        """Move a queued run to running under a lease; RUN_WAITING when it waits behind another run
        of its conversation; None when there is nothing to run (stopped, finished, or taken)."""
        now = time.time()
        result = await self._claim(
            keys=[self.keys.run(run_id), self.keys.leases()],
            args=[run_id, worker_id, repr(now), repr(now + lease_s)],
        )
        if result == "waiting":
            return RUN_WAITING
        if not result:
            return None
        attempt, user, conversation_id, content, created_at, tier, first_turn = result
        return Claim(
            run_id,
            int(attempt),
            str(user),
            str(conversation_id),
            str(content),
            float(created_at or 0),
            tier=str(tier),
            first_turn=first_turn == "1",
        )

    @translate_redis_errors
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
        seq = int(
            await self._append(
                keys=self._run_keys(run_id, conversation_id),
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

    async def append_batch(
        self, requests: list[AppendRequest]
    ) -> list[int | AppendRefused | StoreUnavailable]:
        """Append many events (of many runs) in one round trip.

        Each request gets its own outcome, in order: its seq, the refusal, or StoreUnavailable (the
        whole batch failed to reach Redis; every request may be retried: each carries an event id).
        """
        if self._packed is None:
            self._packed = PackedConnection(self.redis, timeout_s=BATCH_TIMEOUT_S)
        retention = self.retention_s
        now = repr(time.time())
        sha = self._append.sha
        packed = pack(
            [
                (
                    "EVALSHA",
                    sha,
                    5,
                    *self._run_keys(r.run_id, r.conversation_id),
                    r.run_id,
                    r.attempt,
                    r.body,
                    r.terminal_status,
                    retention,
                    now,
                    r.event_id,
                )
                for r in requests
            ]
        )
        try:
            results = await self._packed.execute(packed, len(requests))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            return [StoreUnavailable(f"Redis is unreachable: {exc}")] * len(requests)
        if any(isinstance(result, NoScriptError) for result in results):
            # Redis restarted (or was flushed) since the script was loaded: load it, go again. Safe:
            # every request carries an event id, so one that did run is not appended twice.
            try:
                self._append.sha = await self.redis.script_load(APPEND_SCRIPT)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                return [StoreUnavailable(f"Redis is unreachable: {exc}")] * len(requests)
            return await self.append_batch(requests)
        outcomes: list[int | AppendRefused | StoreUnavailable] = []
        for result in results:
            if isinstance(result, Exception):
                raise result  # an error reply from our own script: a bug, not an outage
            seq = int(result)
            outcomes.append(AppendRefused(_REFUSALS.get(seq, str(seq))) if seq < 0 else seq)
        return outcomes

    async def close(self) -> None:
        if self._packed is not None:
            await self._packed.close()

    @translate_redis_errors
    async def renew_leases(self, attempts: dict[str, int], *, lease_s: float) -> dict[str, bool]:
        """Extend the leases of many runs in one round trip; False for a run no longer ours."""
        deadline = repr(time.time() + lease_s)
        pipe = self.redis.pipeline(transaction=False)
        for run_id, attempt in attempts.items():
            pipe.evalsha(
                self._renew.sha, 2, self.keys.run(run_id), self.keys.leases(), run_id, attempt, deadline
            )
        results = await pipe.execute(raise_on_error=False)
        if any(isinstance(result, NoScriptError) for result in results):
            self._renew.sha = await self.redis.script_load(RENEW_SCRIPT)
            return await self.renew_leases(attempts, lease_s=lease_s)
        renewed: dict[str, bool] = {}
        for run_id, result in zip(attempts, results, strict=True):
            if isinstance(result, Exception):
                raise result
            renewed[run_id] = bool(int(result))
        return renewed

    @translate_redis_errors
    async def request_stop(self, run_id: str, user: str) -> str:
        """Stop a run on behalf of ``user``. Returns 'stopping' or the terminal status; RunNotFound."""
        meta = await self.get_meta(run_id)
        if meta is None or meta.user != user:
            raise RunNotFound(f"run {run_id} not found")
        body = event_body("run.stopped", run_id, meta.conversation_id, time.time(), content="")
        result = str(
            await self._stop(
                keys=[*self._run_keys(run_id, meta.conversation_id), self.keys.control_channel()],
                args=[run_id, user, body, self.retention_s, repr(time.time())],
            )
        )
        if result == "not_found":
            raise RunNotFound(f"run {run_id} not found")
        return result

    @translate_redis_errors
    async def expired_leases(self, limit: int = 100) -> list[tuple[str, float]]:
        """Runs whose lease ran out, with the Unix time it ran out at."""
        found = await self.redis.zrangebyscore(
            self.keys.leases(), "-inf", repr(time.time()), start=0, num=limit, withscores=True
        )
        pairs = cast(list[tuple[str, float]], found)
        return [(str(run_id), float(deadline)) for run_id, deadline in pairs]

    @translate_redis_errors
    async def requeue(
        self,
        run_id: str,
        *,
        max_attempts: int,
        resend_after_s: float,
        force: bool = False,
        reason: str = "worker_lost",
    ) -> str:
        """Hand a run whose worker is gone (lease expired, or ``force``) to the next attempt.

        Returns 'retry' or 'resend' (the caller must enqueue the run), 'failed' (out of attempts:
        the run ended with run.failed — store_unavailable when ``reason`` says the attempt was lost
        to a Redis outage, else worker_lost), or 'alive'/'gone'/'changed' (nothing to do).
        """
        meta = await self.get_meta(run_id)
        if meta is None:
            await self.redis.zrem(self.keys.leases(), run_id)
            return "gone"
        now = time.time()
        retrying = event_body(
            "run.retrying", run_id, meta.conversation_id, now, attempt=meta.attempt + 1, reason=reason
        )
        if reason == ErrorCode.STORE_UNAVAILABLE:
            error = {
                "code": ErrorCode.STORE_UNAVAILABLE,
                "message": f"Redis was unreachable too long; attempt {meta.attempt} was lost, none are left",
            }
        else:
            error = {
                "code": ErrorCode.WORKER_LOST,
                "message": f"the run's worker was lost {meta.attempt} times; giving up",
            }
        failed = event_body("run.failed", run_id, meta.conversation_id, now, error=error)
        return str(
            await self._requeue(
                keys=self._run_keys(run_id, meta.conversation_id),
                args=[
                    run_id,
                    repr(now),
                    meta.attempt,
                    max_attempts,
                    retrying,
                    failed,
                    self.retention_s,
                    repr(now + resend_after_s),
                    "1" if force else "0",
                ],
            )
        )

    @translate_redis_errors
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
            created_at=float(fields["created_at"]) if "created_at" in fields else None,
            ended_at=float(fields["ended_at"]) if "ended_at" in fields else None,
            tier=fields.get("tier", ""),
        )

    @translate_redis_errors
    async def tier_of(self, run_id: str) -> str:
        """The tier a run was created under ('' when unknown): its queue when it is sent again."""
        return str(await self.redis.hget(self.keys.run(run_id), "tier") or "")

    @translate_redis_errors
    async def read_log(self, run_id: str, after_seq: int, count: int | None = None) -> list[tuple[int, str]]:
        """Events with seq > after_seq, in order, as (seq, raw JSON)."""
        entries = await self.redis.xrange(
            self.keys.run_log(run_id), min=f"{after_seq + 1}-0", max="+", count=count
        )
        out: list[tuple[int, str]] = []
        for entry_id, fields in entries or []:
            out.append((int(str(entry_id).split("-", 1)[0]), str((fields or {})["e"])))
        return out

    @translate_redis_errors
    async def stop_requested(self, run_id: str) -> bool:
        return bool(await self.redis.hget(self.keys.run(run_id), "stop_requested") == "1")
