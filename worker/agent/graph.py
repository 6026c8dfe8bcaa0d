"""The agent graph (START → retrieve → generate → END) and :func:`stream_agent`, which runs it and
hands the worker sources first, then tokens as the model produces them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Required, TypeAlias, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from shared.protocol import Source
from worker.agent.llm import check_finished, system_prompt_of, translate_llm_error
from worker.agent.memory import DEFAULT_HISTORY_BUDGET_CHARS, remember_turn, select_history, turn_info
from worker.agent.offline import format_context
from worker.agent.retrieval import Retriever

RETRIEVE = "retrieve"
GENERATE = "generate"

SYSTEM_PROMPT = (
    "You are chatgw's assistant. Answer the user's question from the context below and say so when "
    "it does not contain the answer. Each context line is: id<TAB>title<TAB>snippet."
)

CONTEXT_FORMAT = "Each context line is: id<TAB>title<TAB>snippet."


class AgentState(TypedDict, total=False):
    question: Required[str]
    sources: list[dict[str, str]]  # Source.model_dump(): plain data, so any checkpointer can store it
    answer: str
    # Past turns; only grows across runs when the graph has a checkpointer and a thread_id.
    messages: Annotated[list[AnyMessage], add_messages]


AgentGraph: TypeAlias = CompiledStateGraph[AgentState, None, AgentState, AgentState]


@dataclass(frozen=True, slots=True)
class AgentResult:
    content: str
    usage: dict[str, int] | None = None  # prompt_tokens / completion_tokens, when the model reports them
    truncated: bool = False  # the model stopped at its token limit


def build_messages(
    question: str,
    sources: Sequence[Source],
    history: Sequence[BaseMessage] | None = None,
    *,
    system_prompt: str | None = None,
) -> list[BaseMessage]:
    """System prompt with the context block, earlier turns, then the question (last, as models expect).

    ``system_prompt`` (CHATGW_SYSTEM_PROMPT) replaces the default instructions; the line describing
    the context format is kept, since the operator's prompt cannot know it.
    """
    instructions = SYSTEM_PROMPT if system_prompt is None else f"{system_prompt}\n{CONTEXT_FORMAT}"
    system = SystemMessage(content=f"{instructions}\n{format_context(sources)}")
    return [system, *(history or ()), HumanMessage(content=question)]


def build_graph(
    llm: BaseChatModel,
    retriever: Retriever,
    k: int = 3,
    checkpointer: Checkpointer = None,
    *,
    history_budget_chars: int = DEFAULT_HISTORY_BUDGET_CHARS,
) -> AgentGraph:
    async def retrieve(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        sources = await retriever.retrieve(state["question"], k)
        if (hooks := _hooks_of(config)) is not None:
            await hooks.on_sources(sources)
        found = [s.model_dump() for s in sources]
        turn_info(config).sources = found  # for a stopped turn, which never reaches generate's end
        return {"sources": found}

    async def generate(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        sources = [Source.model_validate(s) for s in state.get("sources", [])]
        # Earlier turns only (this turn's messages are added when we return), trimmed to the budget.
        history = select_history(state.get("messages", []), history_budget_chars)
        messages = build_messages(state["question"], sources, history, system_prompt=system_prompt_of(llm))
        hooks = _hooks_of(config)
        try:
            if hooks is None:
                reply: BaseMessage = await llm.ainvoke(messages, config)
            else:
                reply = await _stream_reply(llm, messages, hooks, config)
        except Exception as exc:
            # Model-client errors enter our code here: they become AgentError(llm_*) for run.failed.
            if (error := translate_llm_error(exc)) is None:
                raise
            raise error from exc
        check_finished(reply)
        messages = remember_turn(
            state.get("messages", []),
            state["question"],
            reply,
            turn=turn_info(config),
            sources=state.get("sources", []),
            stopped=False,
            budget_chars=history_budget_chars,
        )
        return {"answer": reply.text, "messages": messages}

    builder = StateGraph(AgentState)
    builder.add_node(RETRIEVE, retrieve)
    builder.add_node(GENERATE, generate)
    builder.add_edge(START, RETRIEVE)
    builder.add_edge(RETRIEVE, GENERATE)
    builder.add_edge(GENERATE, END)
    return builder.compile(checkpointer=checkpointer)


@dataclass(slots=True)
class RunHooks:
    """How one run's graph hands sources and tokens to the worker, and what it learns on the way."""

    on_sources: Callable[[list[Source]], Awaitable[None]]
    on_token: Callable[[str], Awaitable[None]]
    usage: UsageMetadata | None = None
    truncated: bool = False


HOOKS_KEY = "chatgw_hooks"  # in config["configurable"]; not a primitive, so never checkpointed


def _hooks_of(config: RunnableConfig) -> RunHooks | None:
    hooks = (config.get("configurable") or {}).get(HOOKS_KEY)
    return hooks if isinstance(hooks, RunHooks) else None


async def _stream_reply(
    llm: BaseChatModel, messages: list[BaseMessage], hooks: RunHooks, config: RunnableConfig
) -> AIMessage:
    """Stream the model's answer into ``hooks.on_token``; return it whole, as ``ainvoke`` would.

    Tokens reach the worker straight from here, not through LangGraph's stream_mode="messages",
    whose per-token callback machinery cost more CPU than everything else a token does in chatgw.
    The config still carries the caller's own callbacks (tracing), if any.
    """
    parts: list[str] = []
    metadata: dict[str, Any] = {}
    async for chunk in llm.astream(messages, config):
        if chunk.usage_metadata:
            hooks.usage = add_usage(hooks.usage, chunk.usage_metadata)
        if chunk.response_metadata:
            metadata.update(chunk.response_metadata)
        if text := chunk.text:
            parts.append(text)
            await hooks.on_token(text)
    hooks.truncated = metadata.get("finish_reason") == "length"
    return AIMessage(content="".join(parts), usage_metadata=hooks.usage, response_metadata=metadata)


async def stream_agent(
    graph: AgentGraph,
    question: str,
    *,
    on_sources: Callable[[list[Source]], Awaitable[None]],
    on_token: Callable[[str], Awaitable[None]],
    config: RunnableConfig | None = None,
) -> AgentResult:
    """Run the graph once: ``on_sources`` (always, possibly with []) before the first ``on_token``.

    Cancelling the caller's task cancels the model mid-stream; CancelledError propagates.
    """
    hooks = RunHooks(on_sources, on_token)
    base: RunnableConfig = config or {}
    run_config: RunnableConfig = {**base, "configurable": {**base.get("configurable", {}), HOOKS_KEY: hooks}}
    state = await graph.ainvoke(
        {"question": question},
        run_config,
        # One checkpoint write per run, when it ends, instead of one per graph step.
        durability="exit" if graph.checkpointer else None,
    )
    usage = hooks.usage
    reported = (
        {"prompt_tokens": usage["input_tokens"], "completion_tokens": usage["output_tokens"]}
        if usage
        else None
    )
    return AgentResult(content=state.get("answer", ""), usage=reported, truncated=hooks.truncated)
