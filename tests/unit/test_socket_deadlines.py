"""gateway.deadlines.next_deadline: which of a socket's deadlines comes first (pure rule)."""

from __future__ import annotations

import pytest

from gateway.deadlines import Due, Expired, next_deadline

AUTH_DEADLINE = 105.0  # connected at 100 with a 5 s auth timeout
IDLE = 300.0


def due(now: float, *, authenticated: bool, token_in: float | None = None, last_input: float = 100.0) -> Due:
    return next_deadline(
        now=now,
        authenticated=authenticated,
        auth_deadline=AUTH_DEADLINE,
        token_expires_in_s=token_in,
        last_input=last_input,
        idle_timeout_s=IDLE,
    )


def test_an_unauthenticated_socket_waits_for_its_auth_deadline() -> None:
    assert due(101.0, authenticated=False) == Due(wait_s=4.0)
    assert due(105.0, authenticated=False) == Due(expired=Expired.AUTH)


def test_auth_comes_before_idle_when_both_passed() -> None:
    assert due(1000.0, authenticated=False) == Due(expired=Expired.AUTH)


def test_an_authenticated_socket_forgets_the_auth_deadline() -> None:
    assert due(200.0, authenticated=True) == Due(wait_s=200.0)  # idle at 100 + 300


def test_idle_counts_from_the_last_input() -> None:
    assert due(450.0, authenticated=True, last_input=400.0) == Due(wait_s=250.0)
    assert due(700.0, authenticated=True, last_input=400.0) == Due(expired=Expired.IDLE)


@pytest.mark.parametrize(
    ("token_in", "expected"), [(30.0, Due(wait_s=30.0)), (0.0, Due(expired=Expired.TOKEN))]
)
def test_token_expiry_when_it_comes_first(token_in: float, expected: Due) -> None:
    assert due(200.0, authenticated=True, token_in=token_in) == expected


def test_token_expiry_before_idle_when_both_passed() -> None:
    assert due(1000.0, authenticated=True, token_in=-5.0) == Due(expired=Expired.TOKEN)


def test_a_token_expiring_after_the_idle_deadline_waits_for_idle() -> None:
    assert due(200.0, authenticated=True, token_in=10_000.0) == Due(wait_s=200.0)
