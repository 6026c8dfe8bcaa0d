"""A small asyncio Python client for chatgw (used by the tests, the benchmarks and `chatgw chat`)."""

from client.connection import ChatgwConnection, RunTranscript
from client.resilient import ClientError, ConnectionState, FollowedRun, ResilientClient

__all__ = [
    "ChatgwConnection",
    "ClientError",
    "ConnectionState",
    "FollowedRun",
    "ResilientClient",
    "RunTranscript",
]
