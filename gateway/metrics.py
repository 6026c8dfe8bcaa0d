"""Prometheus metrics of one gateway process, served at /metrics. Built in the lifespan (own registry)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


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

    def track_hub(self, channels: Callable[[], float], reconnects: Callable[[], float]) -> None:
        self.hub_channels.set_function(channels)
        self.pubsub_reconnects.set_function(reconnects)

    def render(self) -> bytes:
        return generate_latest(self.registry)
