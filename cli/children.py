"""Child processes of a CLI command that it stops itself, in its own order.

Each child gets its own process group, so the terminal's Ctrl-C (sent to the whole foreground group)
reaches only the parent, which then stops the children one after another. On Linux a child also dies
with its parent (PR_SET_PDEATHSIG), so a parent killed with SIGKILL leaves nothing running.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def detached_options() -> dict[str, Any]:
    """Popen keyword arguments: own process group, and (Linux) terminated when the parent dies."""
    preexec: Callable[[], None] | None = _die_with_parent if sys.platform == "linux" else None
    return {"process_group": 0, "preexec_fn": preexec}


def start_child(args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(args), env=env, **detached_options())


def stop_child(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
