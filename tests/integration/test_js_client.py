"""The JavaScript client's own tests (tests/js/, node's built-in runner) against a live gateway and
worker, run from pytest so that the README's test command (and .ci/run) covers them too."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from shared.testing.stack import ROOT

NODE_TESTS = ROOT / "tests" / "js"


def node_major(node: str) -> int:
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.match(r"v(\d+)", version.strip())
    return int(match.group(1)) if match else 0


@pytest.mark.timeout(300)
def test_node_client_tests_pass(redis_url: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript client's tests need Node 20 or later")
    major = node_major(node)
    if major < 20:
        pytest.skip(f"node {major} is too old: the JavaScript client's tests need Node 20 or later")
    # Node 20 has a WebSocket global only behind this flag; 22 and later have it built in.
    flags = ["--experimental-websocket"] if major < 22 else []
    env = {
        **os.environ,
        "CHATGW_TEST_REDIS_URL": redis_url,
        "CHATGW_TEST_PYTHON": sys.executable,
    }
    result = subprocess.run(
        [node, *flags, "--test", "--test-reporter=tap", str(NODE_TESTS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert re.search(r"^# pass [1-9]", output, re.MULTILINE), output[-3000:]
    assert re.search(r"^# fail 0$", output, re.MULTILINE), output[-3000:]
