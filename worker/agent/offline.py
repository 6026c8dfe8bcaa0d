"""A deterministic, dependency-free chat model that really streams, so chatgw runs with no API key.

It answers with the sentences of the retrieved sources that best match the question, cited
(worker/agent/extractive.py), or says that nothing matched. It reads the last human message (the
question) and the retrieved context, which :func:`format_context` places in a system message between
:data:`CONTEXT_START` and :data:`CONTEXT_END`, one source per line as ``id<TAB>title<TAB>snippet``
(line breaks in a snippet written ``\\n``). Tokens are words with their trailing whitespace, so
joining the streamed tokens gives exactly the final answer.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from shared.protocol import Source
from worker.agent.extractive import cite, select_sentences
from worker.agent.memory import STOPPED_SUFFIX

CONTEXT_START = "<context>"
CONTEXT_END = "</context>"
_TOKEN_RE = re.compile(r"\S+\s*")
_WS_RE = re.compile(r"\s+")
_QUOTE_WORDS = 12  # an earlier question is quoted only in part
_NOTHING_MATCHED = (
    "No documents matched your question, so I have nothing to quote. I am chatgw's offline model: I "
    "answer only with sentences from the indexed documents (add yours with `chatgw ingest PATH`). For "
    "open-ended answers, configure a real model: CHATGW_LLM=openai with CHATGW_LLM_BASE_URL and "
    "CHATGW_LLM_MODEL (docs/llm.md)."
)


def _flat(text: str) -> str:
    # Tabs and newlines are the context format's separators, so they cannot survive inside a field.
    return _WS_RE.sub(" ", text).strip()


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": ""} | dict.fromkeys(
    "\v\f\x1c\x1d\x1e\x85\u2028\u2029", " "
)
_UNESCAPE_RE = re.compile(r"\\(.)")


def _escape(text: str) -> str:
    # A snippet keeps its line breaks (its Markdown structure: code blocks, tables, lists), written as
    # \n the way JSON and every model read them, so the one-line-per-source format still holds.
    return "".join(_ESCAPES.get(c, c) for c in text.strip())


def _unescape(text: str) -> str:
    return _UNESCAPE_RE.sub(lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)


def format_context(sources: Sequence[Source]) -> str:
    """The context block of the system prompt, which :func:`parse_context` reads back."""
    lines = [f"{_flat(s.id)}\t{_flat(s.title)}\t{_escape(s.snippet)}" for s in sources]
    return "\n".join([CONTEXT_START, *lines, CONTEXT_END])


def parse_context(text: str) -> list[Source]:
    """Sources found between the context markers of a system prompt (none if there are no markers)."""
    start = text.find(CONTEXT_START)
    end = text.find(CONTEXT_END, start + 1)
    if start < 0 or end < 0:
        return []
    sources = []
    for line in text[start + len(CONTEXT_START) : end].splitlines():
        fields = line.split("\t")
        if len(fields) == 3:
            sources.append(Source(id=fields[0], title=fields[1], snippet=_unescape(fields[2])))
    return sources


def previous_turn(messages: Sequence[BaseMessage]) -> tuple[str, bool] | None:
    """The question of the turn before the current one and whether its answer was interrupted."""
    humans = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
    if len(humans) < 2:
        return None
    start, end = humans[-2], humans[-1]
    # Judged from the text, the only thing a real model would see of it.
    interrupted = any(
        isinstance(m, AIMessage) and m.text.endswith(STOPPED_SUFFIX) for m in messages[start:end]
    )
    return messages[start].text, interrupted


def _quote(question: str) -> str:
    """A question in quotes, ending with its own punctuation (never "...documents?".)."""
    words = question.split()
    text = " ".join(words[:_QUOTE_WORDS]) + (" ..." if len(words) > _QUOTE_WORDS else "")
    return f'"{text}"' if text[-1] in ".!?" else f'"{text}."'


def compose_answer(
    question: str,
    sources: Sequence[Source],
    earlier: tuple[str, bool] | None = None,
    *,
    max_words: int = 200,
) -> str:
    """The full answer: a pure function of the question, the sources, the previous turn and the cap.

    2-4 sentences of the sources that best match the question, with citations (worker/agent/
    extractive.py), chosen to fit in ``max_words``. ``earlier`` (see :func:`previous_turn`) is
    mentioned first, so conversation memory is visible offline.
    """
    q = _flat(question)
    if not q:
        return "I did not receive a question. Send a message and I will answer it."
    lead = ""
    if earlier is not None:
        previous, interrupted = earlier
        lead = f"Earlier you asked: {_quote(_flat(previous))}"
        lead += " My answer to it was interrupted. " if interrupted else " "
    budget = max(1, max_words - len(lead.split()))
    sentences = select_sentences(q, sources, budget)
    if not sentences:
        return lead + _NOTHING_MATCHED
    return lead + cite(sentences, sources)


def _usage(messages: Sequence[BaseMessage], output_tokens: int) -> UsageMetadata:
    # "Tokens" are words here; good enough for the usage numbers a run reports.
    prompt = sum(len(m.text.split()) for m in messages)
    return UsageMetadata(
        input_tokens=prompt, output_tokens=output_tokens, total_tokens=prompt + output_tokens
    )


class OfflineChatModel(BaseChatModel):
    """Same input, same answer; ``_astream`` sleeps ``token_delay_s`` between words so stop is testable."""

    token_delay_s: float = Field(default=0.02, ge=0)
    max_tokens: int = Field(default=200, ge=1)

    @property
    def _llm_type(self) -> str:
        return "chatgw-offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"token_delay_s": self.token_delay_s, "max_tokens": self.max_tokens}

    def tokenize(self, messages: Sequence[BaseMessage]) -> tuple[list[str], bool]:
        """The answer's tokens (at most ``max_tokens``) and whether the answer was cut short."""
        question = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        sources = [s for m in messages if isinstance(m, SystemMessage) for s in parse_context(m.text)]
        answer = compose_answer(question, sources, previous_turn(messages), max_words=self.max_tokens)
        tokens = _TOKEN_RE.findall(answer)
        if len(tokens) <= self.max_tokens:
            return tokens, False
        tokens = tokens[: self.max_tokens]
        tokens[-1] = tokens[-1].rstrip()
        return tokens, True

    def _chunks(self, messages: list[BaseMessage]) -> Iterator[ChatGenerationChunk]:
        tokens, truncated = self.tokenize(messages)
        for word in tokens[:-1]:
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))
        # Usage and finish_reason ride on the last chunk, as with hosted models.
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content=tokens[-1], usage_metadata=_usage(messages, len(tokens)), chunk_position="last"
            ),
            generation_info={"finish_reason": "length" if truncated else "stop"},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tokens, truncated = self.tokenize(messages)
        message = AIMessage(content="".join(tokens), usage_metadata=_usage(messages, len(tokens)))
        info = {"finish_reason": "length" if truncated else "stop"}
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # No delay: a non-streaming call has nobody to show partial output to.
        return self._generate(messages, stop, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for i, chunk in enumerate(self._chunks(messages)):
            if i and self.token_delay_s:
                time.sleep(self.token_delay_s)
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for i, chunk in enumerate(self._chunks(messages)):
            if i and self.token_delay_s:
                # The cancellation point: stopping a run cancels the task awaiting here.
                await asyncio.sleep(self.token_delay_s)
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
