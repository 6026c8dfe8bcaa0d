"""A small OpenAI-compatible server for tests: streaming chat completions, embeddings, and faults.

Run it in a subprocess (``python -m tests.fakes.openai_server --port 0``: it prints ``listening on
http://127.0.0.1:PORT`` once it accepts connections) or use :class:`FakeOpenAIServer`, which does that
for you. It is written on raw asyncio streams rather than an ASGI framework so that it knows exactly
when it wrote each byte and notices a client hanging up mid-stream at once (a read returning EOF),
which is what the stop tests measure.

Endpoints:

- ``POST /v1/chat/completions``: with ``stream: true``, SSE chunks ``data: {...}``, a final usage
  chunk when ``stream_options.include_usage`` is set, then ``data: [DONE]``; without, one JSON body.
- ``POST /v1/embeddings``: deterministic unit vectors (sha256 of the text), ``float`` or ``base64``.
- ``GET /v1/models``; ``GET /_stats`` (what the server saw, see :class:`Stats`); ``POST /_reset``.

Behaviour of a chat request is a *mode spec*, ``name`` or ``name?key=value&...``, taken from the first
of: a ``#fake:SPEC`` directive in the last user message, the request's model name when it is a spec,
the ``--mode`` flag. Modes:

- ``normal`` (``delay`` s between tokens, ``tokens`` to send; the reply is ``t0 t1 t2 ...``)
- ``status`` (``code``, optional ``retry_after_ms``): an OpenAI-style JSON error with that status
- ``flaky`` (``code``, ``times``): the first ``times`` requests with this exact spec fail, then normal
- ``malformed`` (``after`` tokens, then a chunk that is not JSON)
- ``badshape`` (``after`` tokens, then valid JSON of an unexpected shape)
- ``truncate`` (``after`` tokens, then ``[DONE]`` with no ``finish_reason`` ever sent)
- ``error`` (``after`` tokens, then an in-stream ``{"error": ...}`` event, as vLLM sends)
- ``drop`` (``after`` tokens, then the connection is closed without ending the response)
- ``hang`` (``after`` tokens, or ``after=-1`` for before the response headers; then silence until the
  client gives up)

With ``--api-key K`` any request whose bearer token is not K gets 401, like the real API.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import re
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

MODES = frozenset({"normal", "status", "flaky", "malformed", "badshape", "truncate", "error", "drop", "hang"})
_DIRECTIVE_RE = re.compile(r"#fake:(\S+)")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_ERROR_TYPES = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass
class Defaults:
    mode: str = "normal"
    delay: float = 0.01
    tokens: int = 8
    api_key: str | None = None
    embedding_dim: int = 64
    token_pad: int = 0  # extra characters per token, for tests that need many bytes on the wire


@dataclass
class Stats:
    """What the server saw; served as JSON by ``GET /_stats``. Times are ``time.time()`` seconds."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnects: list[dict[str, Any]] = field(default_factory=list)
    # Token chunks written after the server saw the client hang up: 0 means it stopped at once.
    tokens_sent_after_disconnect: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "disconnects": self.disconnects,
            "tokens_sent_after_disconnect": self.tokens_sent_after_disconnect,
        }


class ClientGone(Exception):
    """The client closed the connection while we were answering."""


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One HTTP/1.1 request (Content-Length bodies only: that is what OpenAI clients send)."""
    line = await reader.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Request(method.upper(), target.split("?", 1)[0], headers, body)


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    name, _, query = spec.partition("?")
    return name, dict(parse_qsl(query))


def embed(text: str, dim: int) -> list[float]:
    """A deterministic unit vector: equal texts embed equally, different texts (almost surely) not."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class FakeOpenAI:
    def __init__(self, defaults: Defaults) -> None:
        self.defaults = defaults
        self.stats = Stats()
        self._flaky: dict[str, int] = {}
        self._ids = 0

    # ------------------------------------------------------------------ connection handling

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    break
                keep_alive = await self.dispatch(request, reader, writer)
                if not keep_alive or request.headers.get("connection", "").lower() == "close":
                    break
        except (ClientGone, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def dispatch(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        route = (request.method, request.path.rstrip("/"))
        if route == ("GET", "/_stats"):
            return await self.send_json(writer, 200, self.stats.as_json())
        if route == ("POST", "/_reset"):
            self.stats = Stats()
            self._flaky.clear()
            return await self.send_json(writer, 200, {"ok": True})
        if route == ("GET", "/v1/models"):
            return await self.send_json(
                writer, 200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "me"}]}
            )
        if route == ("POST", "/v1/embeddings"):
            return await self.embeddings(request, writer)
        if route == ("POST", "/v1/chat/completions"):
            return await self.chat(request, reader, writer)
        return await self.send_error(writer, 404, f"no route {request.method} {request.path}")

    # ------------------------------------------------------------------ writing

    async def send_json(
        self, writer: asyncio.StreamWriter, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> bool:
        data = json.dumps(body).encode()
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()
        return True

    async def send_error(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> bool:
        kind, code = _ERROR_TYPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return await self.send_json(writer, status, body, headers)

    # ------------------------------------------------------------------ embeddings

    async def embeddings(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        payload = request.json()
        texts = payload.get("input", [])
        if isinstance(texts, str) or (texts and isinstance(texts[0], int)):
            texts = [texts]
        dim = int(payload.get("dimensions") or self.defaults.embedding_dim)
        as_base64 = payload.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = embed(text if isinstance(text, str) else json.dumps(text), dim)
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(len(str(t).split()) for t in texts)
        self.stats.requests.append(
            {"id": self._next_id(), "t": time.time(), "path": request.path, "model": payload.get("model")}
        )
        return await self.send_json(
            writer,
            200,
            {
                "object": "list",
                "data": data,
                "model": payload.get("model", "fake"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    # ------------------------------------------------------------------ chat completions

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _spec(self, payload: dict[str, Any]) -> str:
        for message in reversed(payload.get("messages", [])):
            if message.get("role") == "user":
                content = message.get("content")
                text = content if isinstance(content, str) else json.dumps(content)
                if found := _DIRECTIVE_RE.search(text):
                    return found.group(1)
                break
        model = str(payload.get("model", ""))
        if parse_spec(model)[0] in MODES:
            return model
        return self.defaults.mode

    async def chat(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        payload = request.json()
        spec = self._spec(payload)
        mode, params = parse_spec(spec)
        record: dict[str, Any] = {
            "id": self._next_id(),
            "t": time.time(),
            "path": request.path,
            "model": payload.get("model"),
            "mode": spec,
            "authorization": request.headers.get("authorization"),
            "stream": bool(payload.get("stream")),
            "include_usage": bool((payload.get("stream_options") or {}).get("include_usage")),
            "messages": payload.get("messages", []),
            "temperature": payload.get("temperature"),
            "max_tokens": payload.get("max_tokens"),
            "max_completion_tokens": payload.get("max_completion_tokens"),
            "prompt_tokens": self._prompt_tokens(payload),
            "status": 200,
            "tokens_sent": 0,
            "completed": False,
        }
        self.stats.requests.append(record)

        key = (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()
        if self.defaults.api_key is not None and key != self.defaults.api_key:
            record["status"] = 401
            # Echo the key as the real API partly does, so tests can check that chatgw never shows it.
            return await self.send_error(writer, 401, f"Incorrect API key provided: {key}.")
        if mode in ("status", "flaky"):
            code = int(params.get("code", "500"))
            failures = self._flaky.get(spec, 0)
            if mode == "status" or failures < int(params.get("times", "1")):
                self._flaky[spec] = failures + 1
                record["status"] = code
                headers = {"retry-after-ms": params["retry_after_ms"]} if "retry_after_ms" in params else None
                message = f"Incorrect API key provided: {key}." if code == 401 else f"fake failure {code}"
                return await self.send_error(writer, code, message, headers)

        watch = asyncio.ensure_future(reader.read(1))
        try:
            if not payload.get("stream"):
                return await self.send_json(writer, 200, self._completion(payload, record))
            await self._stream(payload, record, mode, params, writer, watch)
            record["completed"] = True
            return True
        except ClientGone:
            record["disconnected_at"] = time.time()
            self.stats.disconnects.append(
                {
                    "request": record["id"],
                    "t": record["disconnected_at"],
                    "tokens_sent": record["tokens_sent"],
                }
            )
            return False
        finally:
            watch.cancel()

    def _reply(self, payload: dict[str, Any], count: int) -> tuple[list[str], str]:
        limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
        pad = "x" * self.defaults.token_pad
        tokens = [f"t{i}{pad} " for i in range(count)]
        if limit is not None and int(limit) < count:
            return tokens[: int(limit)], "length"
        return tokens, "stop"

    @staticmethod
    def _prompt_tokens(payload: dict[str, Any]) -> int:
        return sum(len(str(m.get("content", "")).split()) for m in payload.get("messages", []))

    def _completion(self, payload: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        tokens, finish = self._reply(payload, self.defaults.tokens)
        record["tokens_sent"] = len(tokens)
        record["completed"] = True
        prompt = self._prompt_tokens(payload)
        return {
            "id": f"chatcmpl-fake-{record['id']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(tokens)},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": len(tokens),
                "total_tokens": prompt + len(tokens),
            },
        }

    async def _stream(
        self,
        payload: dict[str, Any],
        record: dict[str, Any],
        mode: str,
        params: dict[str, str],
        writer: asyncio.StreamWriter,
        watch: asyncio.Future[bytes],
    ) -> None:
        delay = float(params.get("delay", self.defaults.delay))
        count = int(params.get("tokens", self.defaults.tokens))
        after = int(params.get("after", "2"))

        async def gone_within(timeout: float | None) -> bool:
            """Wait up to ``timeout`` s (None: forever) for the client to hang up; True if it did."""
            done, _ = await asyncio.wait({watch}, timeout=timeout)
            return bool(done) and (watch.exception() is not None or watch.result() == b"")

        if mode == "hang" and after < 0:
            await gone_within(None)
            raise ClientGone

        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        await writer.drain()

        async def event(data: str, *, token: bool = False) -> None:
            if await gone_within(0):
                raise ClientGone
            body = f"data: {data}\n\n".encode()
            writer.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")
            try:
                await writer.drain()
            except ConnectionError as exc:
                raise ClientGone from exc
            if token:
                record["tokens_sent"] += 1
                if watch.done():
                    self.stats.tokens_sent_after_disconnect += 1

        chunk_id = f"chatcmpl-fake-{record['id']}"
        base = {"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time())}
        base["model"] = payload.get("model")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        tokens, finish = self._reply(payload, count)
        if mode != "normal" and mode not in ("status", "flaky"):
            tokens = tokens[: max(after, 0)]
        await event(chunk({"role": "assistant", "content": ""}))
        for i, text in enumerate(tokens):
            if i and delay and await gone_within(delay):
                raise ClientGone
            await event(chunk({"content": text}), token=True)

        if mode == "malformed":
            await event('{"id": "' + chunk_id + '", "choices": [{"delta": {"content": "oops')
        elif mode == "badshape":
            # A delta must be an object: clients fail to read this one.
            await event(json.dumps({**base, "choices": [{"index": 0, "delta": "oops"}]}))
        elif mode == "truncate":
            await event("[DONE]")
        elif mode == "error":
            await event(json.dumps({"error": {"message": "the engine crashed", "type": "server_error"}}))
        elif mode == "drop":
            writer.transport.abort()  # no terminating chunk: the client sees a truncated body
            raise ClientGone
        elif mode == "hang":
            await gone_within(None)
            raise ClientGone
        else:
            await event(chunk({}, finish))
            if record["include_usage"]:
                prompt = self._prompt_tokens(payload)
                usage = {"prompt_tokens": prompt, "completion_tokens": len(tokens)}
                usage["total_tokens"] = prompt + len(tokens)
                await event(json.dumps({**base, "choices": [], "usage": usage}))
            await event("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def serve(defaults: Defaults, host: str, port: int) -> None:
    app = FakeOpenAI(defaults)
    server = await asyncio.start_server(app.handle, host, port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://{host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


class FakeOpenAIServer:
    """The server in a subprocess, for tests: ``base_url``, ``stats()``, ``reset()``, ``stop()``."""

    def __init__(self, *args: str, log_path: Path | None = None) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", *args],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            stderr=open(log_path, "ab") if log_path else subprocess.DEVNULL,  # noqa: SIM115
            text=True,
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line.startswith("listening on "):
            self.popen.kill()
            raise RuntimeError(f"fake OpenAI server did not start: {line!r}")
        self.url = line.removeprefix("listening on ").strip()
        self.base_url = f"{self.url}/v1"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=5) as response:
            return dict(json.load(response))

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/_reset", method="POST"), timeout=5).close()

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()

    def __enter__(self) -> FakeOpenAIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed at start)")
    parser.add_argument("--mode", default="normal", help="default mode spec, e.g. 'status?code=503'")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between streamed tokens")
    parser.add_argument("--tokens", type=int, default=8, help="tokens in a normal reply")
    parser.add_argument("--api-key", default=None, help="refuse (401) any other bearer token")
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--token-pad", type=int, default=0, help="extra characters in every token")
    args = parser.parse_args(argv)
    if parse_spec(args.mode)[0] not in MODES:
        parser.error(f"unknown mode {args.mode!r}; one of {sorted(MODES)}")
    defaults = Defaults(args.mode, args.delay, args.tokens, args.api_key, args.embedding_dim, args.token_pad)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(defaults, args.host, args.port))


if __name__ == "__main__":
    main()
