"""A small asyncio Python client for chatgw (used by the tests, the benchmarks and `chatgw chat`)."""

from client.connection import ChatgwConnection, RunTranscript

__all__ = ["ChatgwConnection", "RunTranscript"]
