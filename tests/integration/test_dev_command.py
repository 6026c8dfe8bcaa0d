"""`chatgw dev` — the README's one-command run — works on its own, from any folder, and stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cli.embedded_redis import free_port
from client import ChatgwConnection
from shared.testing.stack import ROOT, wait_for


def dev_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATGW_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "CHATGW_OFFLINE_TOKEN_DELAY_MS": "1",
            "CHATGW_DATA_DIR": str(tmp_path / "data"),
            "TMPDIR": str(tmp_path / "tmp"),  # to see what it leaves in the temp folder
            **extra,
        }
    )
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return env


async def test_chatgw_dev_runs_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    elsewhere = tmp_path / "elsewhere"  # any folder: files go to CHATGW_DATA_DIR, not here
    elsewhere.mkdir()
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "dev", "--port", str(port)],
            cwd=elsewhere,
            env=dev_env(tmp_path),
            stdout=out,
            stderr=out,
        )
    try:
        wait_for(
            lambda: "chatgw is running" in log.read_text() or dev.poll() is not None, 60, what="dev ready"
        )
        output = log.read_text()
        assert "embedded Redis" in output and "ingested the sample corpus" in output
        assert f"wscat -c ws://127.0.0.1:{port}/ws -H 'Authorization: Bearer dev:alice'" in output
        assert "http://localhost:*" in output, "says which browser origins may connect"
        assert f"data:  {tmp_path / 'data'}" in output
        assert "worker" in output and "ready" in output, "the banner waits for the worker too"
        async with await ChatgwConnection.open(
            f"ws://127.0.0.1:{port}/ws", "dev:alice", origin="http://localhost:5173"
        ) as conn:
            accepted = await conn.chat("How does resume work after a dropped connection?")
            run = await conn.follow(accepted["run_id"], timeout=60)
        assert run.terminal is not None and run.terminal["type"] == "run.completed"
        sources = next(e for e in run.events if e["type"] == "retrieval")["sources"]
        assert sources and sources[0]["id"].startswith("resume.md"), (
            "a grounded answer from the sample corpus"
        )
        assert "[Reconnecting and resuming a run" in run.terminal["content"], "cited, extractive answer"
        children = [int(p) for p in Path(f"/proc/{dev.pid}/task/{dev.pid}/children").read_text().split()]
        assert len(children) == 3, "redis-server, worker and gateway"
        stopping_at = len(log.read_text())
        dev.send_signal(signal.SIGINT)
        assert dev.wait(60) == 0
        shutdown = log.read_text()[stopping_at:]
        assert "chatgw dev: stopped" in shutdown
        # In order (gateway, then worker, then Redis), so nobody complains about a lost connection.
        assert shutdown.index("Finished server process") < shutdown.index("Worker has been shut down")
        assert "WARNING" not in shutdown and "ERROR" not in shutdown and "Traceback" not in shutdown, shutdown
        # Nothing is left behind: no process, nothing in the temp folder or the current folder.
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
        assert not list((tmp_path / "tmp").iterdir())
        assert not list(elsewhere.iterdir())
        assert {p.name for p in (tmp_path / "data").iterdir()} >= {"index", "checkpoints.sqlite", "redis"}
    finally:
        if dev.poll() is None:
            dev.kill()


def test_a_busy_port_is_reported_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", "dev", "--port", str(port)],
            cwd=tmp_path,
            env=dev_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert f"--port {port + 1}" in done.stderr
    assert "chatgw is running" not in done.stdout and "embedded Redis" not in done.stdout
    assert not (tmp_path / "data").exists(), "nothing was started or written"
    assert time.monotonic() - started < 30


def test_bad_settings_and_help_from_the_command_line(tmp_path: Path) -> None:
    env = dev_env(tmp_path, CHATGW_ALLOWED_ORIGINS="http://localhost:5173,localhost:3000")
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "dev"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "chatgw: invalid setting CHATGW_ALLOWED_ORIGINS='http://localhost:5173,localhost:3000': "
        "'localhost:3000' is not an origin: use scheme://host[:port] such as http://localhost:5173, "
        "comma-separated"
    ]
    helped = subprocess.run(
        [sys.executable, "-m", "cli.main", "dev", "--help"], env=env, capture_output=True, text=True
    )
    assert helped.returncode == 0
    for text in ("--port", "--host", "CHATGW_PORT", "8000", "CHATGW_REDIS_URL", "CHATGW_DATA_DIR"):
        assert text in helped.stdout
