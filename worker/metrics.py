"""Prometheus metrics of one worker process, served on CHATGW_WORKER_METRICS_PORT when it is set.

Built at worker boot (``WorkerRuntime.metrics``), never at import. Who calls what (docs/observability.md):

- ``observe_dispatch(seconds)`` — worker/execute.py ``admit_run``, right after the claim returned
  a ``Claim`` (not ``RunWaiting``/None), for ``claim.attempt == 1`` only: seconds = claim time minus
  ``claim.created_at`` (the run hash field ``create_run`` writes, with the gateway's clock). Later
  attempts would count the earlier attempts' run time as dispatch.
- ``observe_first_token(seconds)`` — worker/execute.py ``_execute_claimed``, in ``on_token`` once the
  first token went to the emitter: seconds since the claim (retrieval + the LLM's first token).
- ``run_failed(code)`` — worker/execute.py ``_execute_claimed``, after the terminal event
  (``emitter.emit(*terminal)``) was written, when it is a ``run.failed``: ``code`` =
  ``terminal[1]["error"]["code"]``. Also
  worker/supervision.py ``sweep_orphans`` and ``hand_back`` when ``requeue`` returns ``failed``
  (``worker_lost``; wired already).
- ``runs``, ``tokens``, ``duration``, ``requeued``, ``active``: wired already (execute, runtime, supervision).
- ``answer_cache`` — worker/answer_cache.py ``AnswerCache.open``, once per eligible run (a first turn
  with the cache on): ``hit``, ``similar`` (semantic match) or ``miss``.
- ``billed_tokens`` — worker/billing.py ``Billing.bill``, before the terminal event: the tokens billed to
  the user's daily usage, labelled by tier (never by user).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

DISPATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter(
            "chatgw_worker_runs", "Runs finished here, by terminal event.", ["outcome"], registry=r
        )
        self.tokens = Counter("chatgw_worker_tokens", "Tokens streamed.", registry=r)
        self.requeued = Counter(
            "chatgw_worker_requeued",
            "Runs handed to a new attempt by this worker's sweeper.",
            ["reason"],
            registry=r,
        )
        self.active = Gauge("chatgw_worker_active_runs", "Runs executing in this process.", registry=r)
        self.duration = Histogram(
            "chatgw_worker_run_seconds",
            "Wall time of a run attempt.",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=r,
        )
        self.dispatch = Histogram(
            "chatgw_worker_dispatch_seconds",
            "Run created (gateway) to claimed by a worker, first attempts only.",
            buckets=DISPATCH_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "chatgw_worker_first_token_seconds",
            "Run claimed to its first token emitted (retrieval plus the model's first token).",
            buckets=FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.failures = Counter(
            "chatgw_worker_run_failures", "Runs ended with run.failed, by error code.", ["code"], registry=r
        )
        self.answer_cache = Counter(
            "chatgw_worker_answer_cache",
            "First-turn questions looked up in the answer cache, by result (hit, similar, miss).",
            ["result"],
            registry=r,
        )
        self.billed_tokens = Counter(
            "chatgw_worker_billed_tokens",
            "Tokens billed to users' daily usage, by tier (cached answers cost nothing).",
            ["tier"],
            registry=r,
        )

    def observe_dispatch(self, seconds: float) -> None:
        # created_at comes from the gateway's clock, the claim from ours: skew must not go negative.
        self.dispatch.observe(max(0.0, seconds))

    def observe_first_token(self, seconds: float) -> None:
        self.first_token.observe(max(0.0, seconds))

    def run_failed(self, code: str) -> None:
        self.failures.labels(code).inc()

    def serve(self, port: int, host: str = "0.0.0.0") -> None:  # scraped from other hosts
        start_http_server(port, addr=host, registry=self.registry)
