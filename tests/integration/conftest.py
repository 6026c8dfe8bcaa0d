from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.testing.stack import Stack


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """A fresh key prefix with one worker and one gateway already up."""
    s = Stack(redis_url, tmp_path)
    try:
        s.start_both()  # inside the try: a gateway that fails to start must not leave the worker running
        yield s
    finally:
        s.stop()


@pytest.fixture
def bare_stack(redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """A fresh key prefix with no processes: the test starts what it needs."""
    s = Stack(redis_url, tmp_path)
    try:
        yield s
    finally:
        s.stop()
