"""Issue 9's 45 s Redis outage with 20 runs streaming, at the default outage budget (30 s) and lease
(10 s): every run ends run.completed once Redis is back, retried where needed, with 0 seq violations.
(tests/integration/test_redis_faults.py runs the same path in seconds, with shrunk settings.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.testing.own_redis import OwnRedis
from tests.integration.test_redis_faults import _outage_while_runs_stream, assert_completed_after_retries


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OwnRedis]:
    data = tmp_path / "redis"
    data.mkdir()
    own = OwnRedis(data)
    try:
        yield own
    finally:
        own.close()


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_a_45_s_outage_with_20_runs_streaming(server: OwnRedis, tmp_path: Path) -> None:
    finished = await _outage_while_runs_stream(
        server, tmp_path, runs=20, outage_s=45, CHATGW_OFFLINE_TOKEN_DELAY_MS="60"
    )
    assert_completed_after_retries(finished)
