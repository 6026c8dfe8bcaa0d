"""The Dramatiq Redis broker both sides build: the gateway to enqueue runs, the worker to consume."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dramatiq.brokers.redis import RedisBroker

from shared.keys import Keys
from shared.settings import Settings


def make_broker(settings: Settings, *, middleware: Sequence[Any] | None = None) -> RedisBroker:
    return RedisBroker(  # type: ignore[no-untyped-call]
        url=settings.require_redis_url,
        namespace=Keys(settings.key_prefix).dramatiq_namespace(),
        middleware=list(middleware) if middleware is not None else [],
    )
