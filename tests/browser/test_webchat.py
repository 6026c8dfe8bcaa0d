"""The bundled web chat at / in headless chromium: streaming with sources, stop, a gateway restart and
a page reload in the middle of an answer, two conversations at once, busy conversations, and
hostile model output rendered inert."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

from websockets.sync.client import connect

from shared.testing.stack import Stack

Q_RESUME = "How does a browser resume an answer after a dropped connection?"
Q_STOP = "What happens when I press the stop button?"
Q_MARKUP = "What does the markup probe sentence carry in its middle?"
TERMINAL = ("run.completed", "run.stopped", "run.failed")


def run_events(stack: Stack, user: str, run_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every event of a run, from the gateway, to its terminal one: the truth the page must show."""
    events: list[dict[str, Any]] = []
    with connect(stack.gateways[-1].url, additional_headers={"Authorization": f"Bearer dev:{user}"}) as ws:
        ws.send(json.dumps({"type": "resume", "run_id": run_id, "after_seq": 0}))
        while True:
            frame = json.loads(ws.recv(timeout=timeout))
            if "seq" in frame:
                events.append(frame)
                if frame["type"] in TERMINAL:
                    return events


def http_status(stack: Stack, user: str, path: str) -> int:
    request = urllib.request.Request(
        stack.gateways[-1].http + path, headers={"Authorization": f"Bearer dev:{user}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def flat(text: str) -> str:
    return " ".join(text.split())


def sign_in(page: Any, stack: Stack) -> str:
    user = f"u{uuid.uuid4().hex[:10]}"
    page.goto(stack.gateways[-1].http + "/")
    page.fill("#signin-user", user)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#connection[data-status=connected]")
    return user


def ask(page: Any, question: str) -> Any:
    """Type a question and press Enter; returns the locator of its turn (by position: it stays
    that turn while more are added)."""
    turns = page.locator("article.turn")
    before = turns.count()
    page.fill("#input", question)
    page.press("#input", "Enter")
    turn = turns.nth(before)
    turn.locator(".bubble", has_text=question).wait_for()
    return turn


def run_id_of(turn: Any) -> str:
    turn.and_(turn.page.locator("[data-run-id]")).wait_for()
    run_id: str = turn.get_attribute("data-run-id")
    return run_id


def wait_words(turn: Any, words: int) -> None:
    turn.page.wait_for_function(
        "([el, n]) => el.querySelector('.markdown')?.innerText.trim().split(/\\s+/).length >= n",
        arg=[turn.element_handle(), words],
    )


def wait_status(turn: Any, status: str, timeout: float = 30_000) -> None:
    turn.and_(turn.page.locator(f"[data-status={status}]")).wait_for(timeout=timeout)


def page_events(page: Any, run_id: str) -> list[dict[str, Any]]:
    """The events the page's client followed for this run, as it received them."""
    events: list[dict[str, Any]] = page.evaluate("id => window.chatgwApp.client.run(id).events", run_id)
    return events


def assert_shows_exactly(page: Any, turn: Any, stack: Stack, user: str) -> dict[str, Any]:
    """The page followed every event of the run once, in order, and shows its final content."""
    run_id = run_id_of(turn)
    truth = run_events(stack, user, run_id)
    terminal = truth[-1]
    seen = page_events(page, run_id)
    assert [e["seq"] for e in seen] == list(range(1, len(truth) + 1)), "a gap or a duplicate"
    assert seen == truth
    tokens = "".join(e["text"] for e in seen if e["type"] == "token")
    assert tokens == terminal["content"]
    assert flat(turn.locator(".markdown").inner_text()) == flat(terminal["content"])
    return terminal


def test_page_is_served_with_a_strict_content_security_policy(webchat_stack: Stack) -> None:
    with urllib.request.urlopen(webchat_stack.gateways[-1].http + "/", timeout=5) as response:
        policy = response.headers["Content-Security-Policy"]
        body = response.read().decode()
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    assert '<meta name="chatgw-auth" content="dev">' in body
    assert "<script>" not in body and " on" + "click=" not in body


def test_answer_streams_in_with_its_sources(page: Any, webchat_stack: Stack) -> None:
    user = sign_in(page, webchat_stack)
    turn = ask(page, Q_RESUME)
    wait_words(turn, 3)
    assert turn.get_attribute("data-status") == "running"
    assert page.locator("#stop").is_visible()
    wait_status(turn, "completed")
    terminal = assert_shows_exactly(page, turn, webchat_stack, user)
    assert terminal["type"] == "run.completed"
    turn.locator(".sources summary").click()
    assert "Resuming answers" in turn.locator(".sources").inner_text()
    # The conversation is listed under the title its first question gave it.
    assert page.locator("#chat-title").inner_text() == Q_RESUME
    assert page.locator("#conversations .conversation-title").first.inner_text() == Q_RESUME


def test_stop_keeps_the_partial_answer_marked_as_stopped(page: Any, webchat_stack: Stack) -> None:
    user = sign_in(page, webchat_stack)
    turn = ask(page, Q_STOP)
    wait_words(turn, 3)
    page.keyboard.press("Escape")
    wait_status(turn, "stopped")
    terminal = assert_shows_exactly(page, turn, webchat_stack, user)
    assert terminal["type"] == "run.stopped" and terminal["content"]
    assert turn.locator(".answer-status").inner_text() == "Stopped"
    assert not page.locator("#stop").is_visible()
    # Retry asks the same question again, in the same conversation.
    turn.locator("button.retry").click()
    again = page.locator("article.turn").nth(1)
    wait_status(again, "completed")
    assert again.locator(".bubble").inner_text() == Q_STOP


def test_gateway_restart_mid_answer_ends_with_the_exact_answer(page: Any, webchat_stack: Stack) -> None:
    user = sign_in(page, webchat_stack)
    turn = ask(page, Q_RESUME)
    wait_words(turn, 3)
    old = webchat_stack.gateways[-1]
    old.stop()  # SIGTERM: the page's socket closes with 1012
    page.wait_for_selector("#connection:not([data-status=connected])")
    webchat_stack.start_gateway(port=old.port)
    page.wait_for_selector("#connection[data-status=connected]")
    wait_status(turn, "completed")
    assert_shows_exactly(page, turn, webchat_stack, user)


def test_reload_mid_answer_restores_the_conversation_and_finishes(page: Any, webchat_stack: Stack) -> None:
    user = sign_in(page, webchat_stack)
    turn = ask(page, Q_RESUME)
    run_id = run_id_of(turn)
    wait_words(turn, 3)
    page.reload()
    page.wait_for_selector("#connection[data-status=connected]")
    turn = page.locator(f"article.turn[data-run-id='{run_id}']")
    assert turn.locator(".bubble").inner_text() == Q_RESUME
    wait_status(turn, "completed")
    assert_shows_exactly(page, turn, webchat_stack, user)
    assert page.locator("#chat-title").inner_text() == Q_RESUME
    assert (
        page.locator("#conversations .conversation[aria-current=true] .conversation-title").inner_text()
        == Q_RESUME
    )


def test_two_conversations_stream_at_once(page: Any, webchat_stack: Stack) -> None:
    user = sign_in(page, webchat_stack)
    first = ask(page, Q_RESUME)
    first_run = run_id_of(first)
    page.click("#new-chat")
    second = ask(page, Q_STOP)
    second_run = run_id_of(second)
    wait_status(second, "completed")
    page.locator("#conversations .conversation-open", has_text=Q_RESUME).click()
    first = page.locator(f"article.turn[data-run-id='{first_run}']")
    wait_status(first, "completed")
    one = assert_shows_exactly(page, first, webchat_stack, user)
    page.locator("#conversations .conversation-open", has_text=Q_STOP).click()
    two = assert_shows_exactly(
        page, page.locator(f"article.turn[data-run-id='{second_run}']"), webchat_stack, user
    )
    # Both answers were being written at the same time (the events' store times overlap).
    first_tokens = [e["ts"] for e in page_events(page, first_run) if e["type"] == "token"]
    second_tokens = [e["ts"] for e in page_events(page, second_run) if e["type"] == "token"]
    assert second_tokens[0] < one["ts"] and first_tokens[0] < two["ts"]
    # Delete the open one (two clicks on its delete button): gone from the list, the API and the view.
    item = page.locator("#conversations .conversation[aria-current=true]")
    conversation_id = item.get_attribute("data-id")
    item.hover()
    item.locator(".conversation-delete").click()
    item.locator(".conversation-delete.armed").click()
    page.locator("#conversations .conversation").filter(has_text=Q_STOP).wait_for(state="detached")
    assert page.locator("#conversations .conversation").count() == 1
    assert page.locator("#chat-title").inner_text() == "New chat"
    assert http_status(webchat_stack, user, f"/v1/conversations/{conversation_id}") == 404


def test_a_busy_conversation_follows_the_choice_made_for_the_request(page: Any, webchat_stack: Stack) -> None:
    sign_in(page, webchat_stack)
    first = ask(page, Q_RESUME)
    wait_words(first, 2)
    page.select_option("#on-busy", "reject")
    refused = ask(page, Q_STOP)
    wait_status(refused, "refused")
    assert "still answering" in refused.locator(".answer-status").inner_text()
    page.select_option("#on-busy", "enqueue")
    queued = ask(page, "Can any gateway replica serve a resumed answer?")
    wait_status(first, "completed")
    wait_status(queued, "completed")


def test_hostile_model_output_renders_inert(page: Any, webchat_stack: Stack) -> None:
    dialogs: list[str] = []
    requests: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("request", lambda request: requests.append(request.url))
    sign_in(page, webchat_stack)
    turn = ask(page, Q_MARKUP)
    wait_status(turn, "completed")
    answer = turn.locator(".markdown")
    assert "open the probe link" in answer.inner_text()
    assert answer.locator("script, img, iframe, object, embed").count() == 0
    assert page.locator("[onerror], [onclick], a[href^='javascript:' i]").count() == 0
    answer.get_by_text("open the probe link").click()
    turn.locator(".sources summary").click()  # the sources hold the same markup, as text
    assert "<script>" in turn.locator(".sources").inner_text()
    # Nothing to wait for but the absence of a dialog or a request: give one on its way time to land.
    page.wait_for_timeout(200)
    assert dialogs == []
    base = webchat_stack.gateways[-1].http
    strays = [url for url in requests if not url.startswith(base) or "/x" in url.removeprefix(base)]
    assert strays == [], strays
