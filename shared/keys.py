"""Every Redis key and channel chatgw uses, built from one configurable prefix.

Nothing else in the code base spells a key. Layout (``P`` is ``CHATGW_KEY_PREFIX``):

| key | type | what |
|---|---|---|
| ``P:run:{run_id}`` | hash | run metadata: user, conversation_id, status, seq, attempt, content, ... |
| ``P:run:{run_id}:log`` | stream | the run's events; entry id ``{seq}-0``, field ``e`` = the event JSON |
| ``P:run:{run_id}:events`` | pub/sub channel | live copy of every event appended to the log |
| ``P:conv:{conversation_id}`` | hash | conversation owner and its active run |
| ``P:conv:{conversation_id}:waiting`` | list | runs queued behind the active one (on_busy=enqueue) |
| ``P:conv:{conversation_id}:runs`` | sorted set | the conversation's runs, by creation (deleted with it) |
| ``P:conversations:activity`` | sorted set | every conversation, scored by last activity (expiry) |
| ``P:user:{user}:conversations`` | sorted set | the user's conversations, scored by last activity (listing) |
| ``P:user:{user}:runs`` | set | the user's runs in flight (concurrent-run quota) |
| ``P:user:{user}:chat:{ref}`` | string with TTL | the run a chat frame (id + content) started |
| ``P:user:{user}:socket_slots`` | hash | the user's open sockets: socket_id → its gateway (socket cap) |
| ``P:user:{user}:rate`` | string | the user's message rate-limit state |
| ``P:user:{user}:usage`` | hash with TTL | the user's billed tokens today (UTC ``day``, ``tokens``) |
| ``P:runs:leases`` | sorted set | runs being worked on (or re-queued), scored by lease deadline |
| ``P:gateway:{gateway_id}`` | pub/sub channel | a gateway's own channel (keeps its pub/sub connection open) |
| ``P:gateways`` | sorted set | live gateways' socket-slot leases, scored by expiry (Redis ms) |
| ``P:gateway:{gateway_id}:users`` | set | users with a socket slot on that gateway (swept when it dies) |
| ``P:control`` | pub/sub channel | stop requests for workers (payload: run_id) |
| ``P:workers:{worker_id}`` | string with TTL | a live worker's heartbeat |
| ``P:dramatiq:*`` | (Dramatiq's own) | the run queues, one per tier (``chat-runs.<tier>``) |
| ``P:cache:answer:{digest}`` | string with TTL | a cached first-turn answer (JSON): question + context |
| ``P:cache:questions:{context}`` | sorted set | cached questions of a context, by time (semantic matching) |
| ``P:cache:vectors:{context}`` | hash | their question embeddings: digest → float32 vector, base64 |
| ``P:stats:queue`` | string with TTL | runs waiting for a worker, cached for the gateways' metrics |
| ``P:stats:queue:lock`` | string with TTL | the gateway computing ``P:stats:queue`` this interval |

The log and metadata of a finished run expire ``CHATGW_RUN_RETENTION_S`` after its terminal event;
a run in flight has no TTL.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    def run(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    def run_log(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:log"

    def run_channel(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:events"

    def run_id_from_channel(self, channel: str) -> str | None:
        """The run a channel of ours carries; None for any other channel."""
        head = f"{self.prefix}:run:"
        tail = ":events"
        if not (channel.startswith(head) and channel.endswith(tail)) or len(channel) <= len(head) + len(tail):
            return None
        return channel[len(head) : -len(tail)]

    def gateway_channel(self, gateway_id: str) -> str:
        return f"{self.prefix}:gateway:{gateway_id}"

    def gateways(self) -> str:
        return f"{self.prefix}:gateways"

    def gateway_users(self, gateway_id: str) -> str:
        return f"{self.prefix}:gateway:{gateway_id}:users"

    def conversation(self, conversation_id: str) -> str:
        return f"{self.prefix}:conv:{conversation_id}"

    def conversation_waiting(self, conversation_id: str) -> str:
        return f"{self.prefix}:conv:{conversation_id}:waiting"

    def conversation_runs(self, conversation_id: str) -> str:
        return f"{self.prefix}:conv:{conversation_id}:runs"

    def conversations_activity(self) -> str:
        return f"{self.prefix}:conversations:activity"

    def user_conversations(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:conversations"

    def user_runs(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:runs"

    def user_chat_ref(self, user: str, client_ref: str) -> str:
        return f"{self.prefix}:user:{user}:chat:{client_ref}"

    def user_sockets(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:socket_slots"

    def user_rate(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:rate"

    def user_usage(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:usage"

    def leases(self) -> str:
        return f"{self.prefix}:runs:leases"

    def control_channel(self) -> str:
        return f"{self.prefix}:control"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:workers:{worker_id}"

    def workers_pattern(self) -> str:
        return f"{self.prefix}:workers:*"

    def dramatiq_namespace(self) -> str:
        return f"{self.prefix}:dramatiq"

    def answer(self, digest: str) -> str:
        return f"{self.prefix}:cache:answer:{digest}"

    def answer_questions(self, context: str) -> str:
        return f"{self.prefix}:cache:questions:{context}"

    def answer_vectors(self, context: str) -> str:
        return f"{self.prefix}:cache:vectors:{context}"

    def queue_stats(self) -> str:
        return f"{self.prefix}:stats:queue"

    def queue_stats_lock(self) -> str:
        return f"{self.prefix}:stats:queue:lock"


# Dramatiq names shared by the gateway (which enqueues) and the worker (which consumes).
RUN_QUEUE = "chat-runs"
RUN_ACTOR = "run_chat"


def run_queue(tier: str) -> str:
    """The Dramatiq queue of a tier's runs (shared/tiers.py orders them)."""
    return f"{RUN_QUEUE}.{tier}"
