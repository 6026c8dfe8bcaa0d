"""The pure helpers of bench/compare.py and bench/procstat.py (no servers, no timing)."""

from __future__ import annotations

import math
import os
from typing import Any

import pytest

from bench.compare import HoldRule, markdown
from bench.loadclient import WORD_RE, Samples, _Run, count_words
from bench.procstat import (
    p50_p99,
    parse_stat_cpu_ticks,
    parse_status_rss_kib,
    percentile,
    sample,
)
from worker.agent.offline import _TOKEN_RE


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 … 1, unsorted on purpose
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))
    assert p50_p99([]) == {"p50": None, "p99": None}
    assert p50_p99([1.234, 5.678], digits=1) == {"p50": 1.2, "p99": 5.7}


def test_stat_parsing_survives_a_command_name_with_spaces_and_parentheses() -> None:
    fields = ["S", *map(str, range(4, 14)), "250", "50", *map(str, range(16, 53))]
    assert parse_stat_cpu_ticks(f"4242 (a) b (c)) {' '.join(fields)}") == 300


def test_status_parsing() -> None:
    assert parse_status_rss_kib("Name:\tx\nVmRSS:\t  12345 kB\nThreads:\t3\n") == 12345
    assert parse_status_rss_kib("Name:\tzombie\n") == 0


def test_sample_reads_our_own_process() -> None:
    mine = sample(os.getpid())
    assert mine is not None
    assert mine.cpu_s > 0
    assert mine.rss_kib > 1024
    assert sample(2**22 + 1) is None  # above the kernel's pid_max default: no such process


def test_words_are_counted_like_the_offline_model_tokenizes() -> None:
    assert WORD_RE.pattern == _TOKEN_RE.pattern
    assert count_words("You ") == 1
    assert count_words("You asked: ") == 2  # a coalesced event counts every word
    assert count_words("") == 0


def _level(**changes: Any) -> dict[str, Any]:
    level: dict[str, Any] = {
        "concurrency": 100,
        "sockets_open": 100,
        "runs_completed": 900,
        "relay_ms": {"p50": 1.0, "p99": 12.0},
        "ttft_ms": {"p50": 5.0, "p99": 80.0},
        "pace_ms": {"per_run": {"p50": 20.5, "p99": 24.0}, "per_run_at_source": {"p50": 20.1, "p99": 20.5}},
        "tokens_lost": 0,
        "runs_content_mismatch": 0,
        "errors": {},
    }
    level.update(changes)
    return level


def test_hold_rule_holds_a_good_level() -> None:
    assert HoldRule().failures(_level(), model_pace_ms=20) == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"relay_ms": {"p50": 1.0, "p99": 50.1}}, "relay p99"),
        ({"ttft_ms": {"p50": 5.0, "p99": 1001.0}}, "TTFT p99"),
        ({"pace_ms": {"per_run": {"p50": 20.5, "p99": 25.5}, "per_run_at_source": {}}}, "pace p99"),
        ({"relay_ms": {"p50": None, "p99": None}}, "relay p99 None"),
        ({"tokens_lost": 3}, "3 tokens lost"),
        ({"runs_content_mismatch": 1}, "1 runs differ"),
        ({"errors": {"socket closed 4008": 2}}, "errors"),
        ({"sockets_open": 99}, "only 99 of 100 sockets"),
        ({"runs_completed": 0}, "no run completed"),
    ],
)
def test_hold_rule_names_what_failed(changes: dict[str, Any], reason: str) -> None:
    failures = HoldRule().failures(_level(**changes), model_pace_ms=20)
    assert len(failures) == 1
    assert reason in failures[0]


def test_markdown_table_renders_missing_numbers() -> None:
    level = _level(
        tokens_per_s=0,
        cpu_us_per_token={"gateway": None, "servers_total": None},
        rss_mib={"gateway": 70.0},
        client_cpu_pct_of_core=1.0,
        held=False,
    )
    results = {
        "settings": {"token_delay_ms": 20.0},
        "designs": {"chatgw": {"idle": {"ttft_ms": {"p50": None, "p99": None}}, "levels": [level]}},
    }
    table = markdown(results)
    assert "| 100 | chatgw |" in table
    assert "n/a (" in table


def test_a_retried_run_is_checked_against_its_last_attempt() -> None:
    samples = Samples()
    run = _Run(sent=100.0)
    run.on_token("You ", ts=100.01, now=100.02, samples=samples)
    run.on_token("asked ", ts=100.03, now=100.04, samples=samples)
    run.on_retry(samples)
    run.on_token("You ", ts=101.0, now=101.01, samples=samples)
    run.on_token("asked: yes", ts=101.02, now=101.03, samples=samples)
    run.on_end({"type": "run.completed", "content": "You asked: yes"}, samples)
    assert (samples.runs_retried, samples.words_lost, samples.runs_content_mismatch) == (1, 0, 0)
    assert samples.words == 5  # every word the client was shown counts as delivered


def test_missing_words_are_counted_as_lost() -> None:
    samples = Samples()
    run = _Run(sent=100.0)
    run.on_token("You ", ts=100.01, now=100.02, samples=samples)
    run.on_end({"type": "run.completed", "content": "You asked: yes"}, samples)
    assert (samples.words_lost, samples.runs_content_mismatch) == (2, 1)
    failed = _Run(sent=100.0)
    failed.on_end({"type": "run.failed", "error": {"code": "worker_lost"}}, samples)
    assert samples.errors == {"run.failed worker_lost": 1}
