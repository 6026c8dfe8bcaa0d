"""Fake upstream services for tests (no network beyond 127.0.0.1)."""

from tests.fakes.openai_server import FakeOpenAIServer

__all__ = ["FakeOpenAIServer"]
