"""Take docs/img/webchat.png: the web chat with real answers from the sample corpus, light theme.

    .venv/bin/python scripts/webchat_screenshot.py [--out docs/img/webchat.png] [--dark]

Starts a worker and a gateway of its own (Redis on 127.0.0.1:6379, or CHATGW_REDIS_URL), ingests
worker/corpus into a temporary index and drives Debian's chromium with Playwright.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from shared.testing.stack import ROOT, Stack

QUESTIONS = ["What happens to an answer when a gateway restarts?"]
OTHER_CONVERSATIONS = ["How do I scale out the workers?", "Which LLM servers can chatgw use?"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "webchat.png")
    parser.add_argument("--dark", action="store_true", help="the dark theme instead")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    redis_url = os.environ.get("CHATGW_REDIS_URL", "redis://127.0.0.1:6379/0")
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(redis_url, Path(tmp), CHATGW_OFFLINE_TOKEN_DELAY_MS="5")
        ingest = [sys.executable, "-m", "cli.main", "ingest", str(ROOT / "worker" / "corpus")]
        subprocess.run(ingest, cwd=ROOT, env=stack.env(), check=True, capture_output=True)
        stack.start_both()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(
                    viewport={"width": 1280, "height": 800},
                    device_scale_factor=1,
                    color_scheme="dark" if args.dark else "light",
                )
                page.goto(stack.gateways[0].http + "/")
                page.fill("#signin-user", "alice")
                page.click("#signin-form button[type=submit]")
                page.wait_for_selector("#connection[data-status=connected]")
                for question in OTHER_CONVERSATIONS:
                    ask(page, question)
                    page.click("#new-chat")
                for question in QUESTIONS:
                    ask(page, question)
                sources = page.locator("article.turn").last.locator(".sources summary")
                if sources.count():
                    sources.click()
                page.evaluate("document.getElementById('messages').scrollTop = 1e9")
                page.mouse.move(0, 799)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            stack.stop()
    print(f"wrote {args.out}")
    return 0


def ask(page: Any, question: str) -> None:
    before = page.locator("article.turn").count()
    page.fill("#input", question)
    page.press("#input", "Enter")
    page.wait_for_selector(f"article.turn:nth-of-type({before + 1})[data-status=completed]")


if __name__ == "__main__":
    sys.exit(main())
