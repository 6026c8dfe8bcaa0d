"""The baseline of ``python -m bench.compare``: the model runs *inside* the WebSocket request.

One uvicorn process, no Redis, no worker, nothing persisted: the textbook "stream the LLM from the
request handler" design chatgw is compared with. It answers with the same offline model chatgw's
workers run (``OfflineChatModel``, same ``CHATGW_OFFLINE_TOKEN_DELAY_MS`` and
``CHATGW_OFFLINE_MAX_TOKENS``, streamed through LangChain's ``astream``) over the same retrieval
(the workers' ``build_retriever`` over ``CHATGW_INDEX_PATH``), so for the same question both designs
stream the same words.

It speaks the subset of chatgw's protocol the load client uses, with the same frame shapes:
``chat {content, id}`` → ``run.accepted {id, run_id, conversation_id}``, then
``token {seq, run_id, conversation_id, ts, text}`` events and ``run.completed {seq, ts, content}``.
Chats on one socket are answered one after another. ``Authorization: Bearer dev:<user>`` is accepted
and ignored.

    CHATGW_PORT=8100 CHATGW_INDEX_PATH=data/index python -m bench.baseline_app
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from shared.settings import Settings, load_settings
from worker.agent.offline import OfflineChatModel, format_context
from worker.runtime import build_retriever


class InRequestModel:
    """Retrieval and the offline model, called from the request handler."""

    def __init__(self, settings: Settings) -> None:
        self.k = settings.retrieval_k
        self.retriever = build_retriever(settings)  # whatever retriever the workers build
        self.model = OfflineChatModel(
            token_delay_s=settings.offline_token_delay_ms / 1000, max_tokens=settings.offline_max_tokens
        )

    async def messages(self, question: str) -> list[BaseMessage]:
        # The offline model reads only the context block and the question: the same answer as chatgw's.
        sources = await self.retriever.retrieve(question, self.k)
        return [SystemMessage(content=format_context(sources)), HumanMessage(content=question)]


async def _send(websocket: WebSocket, frame: dict[str, Any]) -> None:
    await websocket.send_text(orjson.dumps(frame).decode())


def _reply_id(frame: dict[str, Any]) -> dict[str, Any]:
    # As in chatgw: a reply carries the request's id, and a field without a value is left out.
    return {"id": frame["id"]} if frame.get("id") is not None else {}


async def answer(websocket: WebSocket, agent: InRequestModel, frame: dict[str, Any]) -> None:
    """Stream one answer on the socket: run.accepted, token events, run.completed."""
    run = {"run_id": uuid.uuid4().hex, "conversation_id": uuid.uuid4().hex}
    await _send(websocket, {"type": "run.accepted", **_reply_id(frame), **run})
    parts: list[str] = []
    seq = 0
    async for chunk in agent.model.astream(await agent.messages(frame["content"])):
        if text := chunk.text:
            seq += 1
            parts.append(text)
            await _send(websocket, {"seq": seq, "type": "token", **run, "ts": time.time(), "text": text})
    await _send(
        websocket,
        {"seq": seq + 1, "type": "run.completed", **run, "ts": time.time(), "content": "".join(parts)},
    )


def create_app(settings: Settings) -> FastAPI:
    agent = InRequestModel(settings)
    app = FastAPI()

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                frame = orjson.loads(await websocket.receive_text())
                if frame.get("type") == "chat" and isinstance(frame.get("content"), str):
                    await answer(websocket, agent, frame)
                else:
                    error = {"code": "bad_frame", "message": "the baseline only answers chat frames"}
                    await _send(websocket, {"type": "error", **_reply_id(frame), **error})
        except WebSocketDisconnect:
            return

    return app


def main() -> None:
    import uvicorn

    settings = load_settings()
    uvicorn.run(  # the options chatgw's gateway runs with (cli/main.py), so the two servers match
        create_app(settings),
        host="127.0.0.1",
        port=settings.port,
        ws="websockets-sansio",
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
