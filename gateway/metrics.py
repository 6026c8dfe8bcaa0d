"""Prometheus metrics of one gateway process, served at /metrics. Built in the lifespan (own registry)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Frame-level latencies: 1 ms to 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sockets = Gauge("chatgw_gateway_sockets", "Open client WebSockets.", registry=r)
        self.frames_received = Counter(
            "chatgw_gateway_frames_received", "Client frames received, by type.", ["type"], registry=r
        )
        self.errors_sent = Counter(
            "chatgw_gateway_errors", "Error frames sent, by code.", ["code"], registry=r
        )
        self.closes = Counter(
            "chatgw_gateway_closes", "Sockets closed by the gateway, by code.", ["code"], registry=r
        )
        self.runs_started = Counter("chatgw_gateway_runs_started", "Runs accepted and queued.", registry=r)
        self.hub_channels = Gauge("chatgw_gateway_hub_channels", "Run channels subscribed.", registry=r)
        self.pubsub_reconnects = Gauge(
            "chatgw_gateway_pubsub_reconnects", "Times the pub/sub connection was re-established.", registry=r
        )
        self.first_token = Histogram(
            "chatgw_gateway_first_token_seconds",
            "chat frame received to the run's first token frame queued for that socket.",
            buckets=FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.relay = Histogram(
            "chatgw_gateway_relay_seconds",
            "A live run event's ts (worker clock) to its frame written to the socket; sampled.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stop = Histogram(
            "chatgw_gateway_stop_seconds",
            "stop frame received to the run's run.stopped frame queued for that socket.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Cluster-wide (every gateway reports the same figures): see gateway/queue_depth.py.
        self.runs_waiting = Gauge(
            "chatgw_queue_waiting_runs", "Runs queued and not yet claimed by a worker.", registry=r
        )
        self.oldest_waiting = Gauge(
            "chatgw_queue_oldest_waiting_seconds",
            "Age of the oldest run waiting for a worker (0: none waiting).",
            registry=r,
        )

    def track_hub(self, channels: Callable[[], float], reconnects: Callable[[], float]) -> None:
        self.hub_channels.set_function(channels)
        self.pubsub_reconnects.set_function(reconnects)

    def render(self) -> bytes:
        return generate_latest(self.registry)
