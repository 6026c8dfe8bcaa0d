"""`chatgw chat`: a terminal chat over the resilient client (reconnects and resumes by itself).

Type a message and press Enter; the answer streams in. Ctrl-C while an answer streams stops it (the
partial answer is kept); Ctrl-C at the prompt, Ctrl-D or /quit leaves; /new starts a new conversation.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import signal
import sys
import threading

from client import ClientError, ResilientClient


async def _stream_answer(client: ResilientClient, run_id: str) -> None:
    async for event in client.events(run_id, timeout=600):
        kind = event["type"]
        if kind == "retrieval" and event["sources"]:
            titles = ", ".join(source["title"] for source in event["sources"])
            print(f"[sources: {titles}]", flush=True)
        elif kind == "token":
            print(event["text"], end="", flush=True)
        elif kind == "run.retrying":
            print(f"\n[the worker was lost; retrying (attempt {event['attempt']})]", flush=True)
        elif kind == "run.stopped":
            print("\n[stopped]", flush=True)
        elif kind == "run.failed":
            print(f"\n[failed: {event['error']['code']}: {event['error']['message']}]", flush=True)
        elif kind == "run.completed":
            print(" [truncated]" if event.get("truncated") else "", flush=True)


async def chat_loop(url: str, token: str) -> int:
    loop = asyncio.get_running_loop()
    streaming: dict[str, str] = {}  # the run being shown, if any

    lines: asyncio.Queue[str | None] = asyncio.Queue()
    pending: set[asyncio.Task[object]] = set()

    def read_stdin() -> None:
        # A daemon thread: a blocked read never holds the process open at exit.
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    def on_interrupt() -> None:
        if "run_id" in streaming:
            task = loop.create_task(client.stop(streaming["run_id"]))  # the answer ends with run.stopped
            pending.add(task)
            task.add_done_callback(pending.discard)
        else:
            lines.put_nowait(None)

    threading.Thread(target=read_stdin, daemon=True).start()

    async with ResilientClient([url], token) as client:
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        conversation: str | None = None
        print(f"connected to {url}; /new for a new conversation, /quit to leave", flush=True)
        while True:
            print("you> ", end="", flush=True)
            line = await lines.get()
            if line is None:
                print()
                return 0
            line = line.strip()
            if not line:
                continue
            if line == "/quit":
                return 0
            if line == "/new":
                conversation = None
                print("[new conversation]")
                continue
            try:
                accepted = await client.chat(line, conversation)
            except ClientError as exc:
                print(f"[{exc.code}: {exc}]")
                continue
            conversation = accepted["conversation_id"]
            streaming["run_id"] = accepted["run_id"]
            try:
                await _stream_answer(client, accepted["run_id"])
            finally:
                streaming.clear()


def run_chat(url: str | None, token: str | None, host: str, port: int) -> int:
    url = url or f"ws://{host}:{port}/ws"
    token = token or os.environ.get("CHATGW_TOKEN") or f"dev:{getpass.getuser()}"
    try:
        return asyncio.run(chat_loop(url, token))
    except KeyboardInterrupt:
        return 0
    except ClientError as exc:
        print(f"chatgw chat: {exc}", file=sys.stderr)
        return 1
