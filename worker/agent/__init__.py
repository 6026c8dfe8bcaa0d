"""The agent a worker runs: a LangGraph graph (retrieve → generate) over a pluggable chat model."""

from worker.agent.graph import AgentResult, AgentState, build_graph, build_messages, stream_agent
from worker.agent.offline import OfflineChatModel
from worker.agent.retrieval import NullRetriever, Retriever

__all__ = [
    "AgentResult",
    "AgentState",
    "NullRetriever",
    "OfflineChatModel",
    "Retriever",
    "build_graph",
    "build_messages",
    "stream_agent",
]
