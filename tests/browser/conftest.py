"""The web chat in a real browser: Debian's chromium driven by Playwright, against a real stack.

The tests skip, saying why, only when no browser can be had (Playwright missing, or no chromium:
`apt-get install -y chromium`, which .ci/run does). A failed test leaves a screenshot and the page's
console in tests/artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.testing.stack import ROOT, Stack

CORPUS = Path(__file__).parent / "corpus"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Slow enough to stop, cut or reload an answer in its middle; fast enough for a short suite.
TOKEN_DELAY_MS = "15"


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHATGW_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


# Module scope, not session: while Playwright's sync API is up, its event loop counts as running on
# this thread, and pytest-asyncio's tests after this module could not start their own.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: pip install -e '.[dev]'")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium browser: apt-get install -y chromium (.ci/run installs it)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=executable, headless=True, args=CHROMIUM_ARGS
            )
        except Error as exc:
            pytest.skip(f"chromium at {executable} does not start: {exc.message.splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def webchat_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker and one gateway for the module, answering from tests/browser/corpus."""
    stack = Stack(redis_url, tmp_path_factory.mktemp("webchat"), CHATGW_OFFLINE_TOKEN_DELAY_MS=TOKEN_DELAY_MS)
    ingest = subprocess.run(
        [sys.executable, "-m", "cli.main", "ingest", str(CORPUS)],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    try:
        stack.start_both()  # inside: a gateway that fails to start must not orphan the worker
        yield stack
    finally:
        stack.stop()  # also deletes the stack's keys


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (light theme, no stored state); on failure, its screenshot and console."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
            try:
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            except Exception as exc:  # a crashed page still gets its console saved
                console.append(f"(no screenshot: {exc})")
            (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(console), encoding="utf-8")
        context.close()
