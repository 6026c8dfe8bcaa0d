"""`chatgw dev` — the README's one-command run — works on its own and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cli.embedded_redis import free_port
from client import ChatgwConnection
from shared.testing.stack import ROOT, wait_for


async def test_chatgw_dev_runs_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATGW_")}
    env.update({"CHATGW_PORT": str(port), "PYTHONPATH": str(ROOT), "CHATGW_OFFLINE_TOKEN_DELAY_MS": "1"})
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "dev"], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        wait_for(
            lambda: "chatgw is running" in log.read_text() or dev.poll() is not None, 60, what="dev ready"
        )
        output = log.read_text()
        assert "embedded Redis" in output and "ingested the sample corpus" in output
        assert f"wscat -c ws://127.0.0.1:{port}/ws -H 'Authorization: Bearer dev:alice'" in output
        async with await ChatgwConnection.open(f"ws://127.0.0.1:{port}/ws", "dev:alice") as conn:
            accepted = await conn.chat("How does resume work after a dropped connection?")
            run = await conn.follow(accepted["run_id"], timeout=60)
        assert run.terminal is not None and run.terminal["type"] == "run.completed"
        sources = next(e for e in run.events if e["type"] == "retrieval")["sources"]
        assert sources and sources[0]["id"].startswith("resume.md"), (
            "a grounded answer from the sample corpus"
        )
        children = [int(p) for p in Path(f"/proc/{dev.pid}/task/{dev.pid}/children").read_text().split()]
        assert len(children) == 3, "redis-server, worker and gateway"
        dev.send_signal(signal.SIGINT)
        assert dev.wait(30) == 0
        assert "chatgw dev: stopped" in log.read_text()
        # Nothing is left behind: the embedded Redis, the worker and the gateway are gone.
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    finally:
        if dev.poll() is None:
            dev.kill()
