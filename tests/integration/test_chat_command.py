"""`chatgw chat` as a person runs it: it says what the connection is doing, resumes an answer across a
gateway restart, and gives up with one clear line (never a traceback) when no gateway answers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli.embedded_redis import free_port
from shared.testing.stack import ROOT, Stack, wait_for


class Terminal:
    """`chatgw chat` in a subprocess: stdin written line by line, stdout and stderr collected."""

    def __init__(self, url: str, *, wait_s: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATGW_")}
        env["PYTHONPATH"] = str(ROOT)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "chat",
                "--url",
                url,
                "--token",
                "dev:carol",
                "--wait",
                str(wait_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream: object, sink: list[str]) -> None:
        while chunk := stream.read(1):  # type: ignore[attr-defined]
            sink.append(chunk)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, text: str, timeout: float = 30.0) -> None:
        wait_for(lambda: text in self.stdout or self.process.poll() is not None, timeout, what=repr(text))
        assert text in self.stdout, f"{text!r} not in:\n{self.stdout}\n{self.stderr}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def test_no_gateway_says_so_and_gives_up_with_one_line() -> None:
    port = free_port()
    term = Terminal(f"ws://127.0.0.1:{port}/ws", wait_s=3)
    try:
        started = time.monotonic()
        assert term.process.wait(30) == 1
        took = time.monotonic() - started
    finally:
        term.close()
    assert f"connecting to ws://127.0.0.1:{port}/ws (is `chatgw dev` running?)" in term.stdout
    assert "reconnecting in" in term.stdout
    assert term.stderr.strip() == (
        f"chatgw chat: no answer from ws://127.0.0.1:{port}/ws for 3 s; is `chatgw dev` running? "
        "Start it, or point --url at a gateway (--wait sets how long to try)"
    )
    assert "Traceback" not in term.stdout + term.stderr
    assert 2.5 < took < 25


@pytest.mark.timeout(180)
def test_an_answer_survives_a_gateway_restart(redis_url: str, tmp_path: Path) -> None:
    stack = Stack(redis_url, tmp_path, CHATGW_OFFLINE_TOKEN_DELAY_MS="150")
    port = free_port()
    try:
        stack.start_worker()
        stack.start_gateway(port=port)
        term = Terminal(f"ws://127.0.0.1:{port}/ws")
        try:
            term.expect(f"connected to ws://127.0.0.1:{port}/ws")
            term.type("Tell me something long")
            term.expect("No documents matched")  # the answer is streaming
            stack.gateways[0].stop()  # closes the socket with 1012 mid-answer
            term.expect("connection lost; reconnecting in")
            stack.start_gateway(port=port)
            term.expect("connected, resuming 1 run")
            term.expect("(docs/llm.md).", timeout=60)
            term.type("/quit")
            assert term.process.wait(30) == 0
        finally:
            term.close()
        answer = term.stdout.split("connected, resuming 1 run]")[0]
        assert "Traceback" not in term.stdout + term.stderr
        assert answer.count("No documents matched") == 1, "resumed, not restarted"
    finally:
        stack.stop()
