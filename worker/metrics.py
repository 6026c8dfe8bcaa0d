"""Prometheus metrics of one worker process, served on CHATGW_WORKER_METRICS_PORT when it is set."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


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

    def serve(self, port: int, host: str = "0.0.0.0") -> None:  # scraped from other hosts
        start_http_server(port, addr=host, registry=self.registry)
