"""Tiers (docs/tiers.md): the turn rule between tier queues, each tier's limits from settings, tier
settings that are refused with one clear line, and tiers in dev tokens and JWT claims."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway.auth import Authenticator
from shared.errors import AuthError, ConfigError
from shared.keys import run_queue
from shared.settings import Settings, load_settings
from shared.tiers import Tiers, next_queue, parse_dev_token

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CHATGW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env


def settings(**overrides: Any) -> Settings:
    return load_settings(**overrides)


# ---------------------------------------------------------------- whose turn


def test_no_queue_has_a_run() -> None:
    assert next_queue([None, None], 30_000) is None


def test_a_higher_tier_goes_first_within_the_aging_window() -> None:
    # pro (rank 0) queued 10 s after the oldest free run: still first with 30 s of aging.
    assert next_queue([1_010_000, 1_000_000], 30_000) == 0


def test_a_lower_tier_run_that_waited_longer_than_the_aging_goes_first() -> None:
    assert next_queue([1_040_000, 1_000_000], 30_000) == 1


def test_a_tie_goes_to_the_higher_tier() -> None:
    assert next_queue([1_030_000, 1_000_000], 30_000) == 0


def test_an_empty_queue_never_has_the_turn() -> None:
    assert next_queue([None, 5], 30_000) == 1
    assert next_queue([5, None], 30_000) == 0


def test_each_tier_step_adds_the_aging_once_more() -> None:
    # Three tiers: the lowest needs 2 x aging over the top to go first, 1 x over the middle.
    assert next_queue([100_000, None, 45_000], 30_000) == 0  # 45 + 60 > 100
    assert next_queue([100_000, None, 35_000], 30_000) == 2  # 35 + 60 < 100
    assert next_queue([None, 100_000, 65_000], 30_000) == 2  # 65 + 60 < 100 + 30
    assert next_queue([None, 100_000, 75_000], 30_000) == 1  # 75 + 60 > 100 + 30


def test_zero_aging_is_first_come_first_served() -> None:
    assert next_queue([2, 1], 0) == 1


# ---------------------------------------------------------------- tiers from settings


def test_default_tiers_share_the_global_limits() -> None:
    tiers = Tiers(settings())
    assert tiers.names == ("free", "pro") and tiers.default == "free"
    free, pro = tiers.limits("free"), tiers.limits("pro")
    assert free == pro
    assert (
        free.rate_limit_per_minute,
        free.rate_limit_burst,
        free.max_runs_per_user,
        free.max_run_tokens,
    ) == (
        30,
        10,
        5,
        2000,
    )
    assert free.daily_token_budget is None


def test_tier_limits_override_only_what_they_name() -> None:
    tiers = Tiers(settings(tier_limits='{"pro": {"max_runs_per_user": 20, "max_run_tokens": 4000}}'))
    pro, free = tiers.limits("pro"), tiers.limits("free")
    assert (pro.max_runs_per_user, pro.max_run_tokens, pro.rate_limit_per_minute) == (20, 4000, 30)
    assert (free.max_runs_per_user, free.max_run_tokens) == (5, 2000)


def test_a_budget_number_applies_to_every_tier_and_a_map_per_tier() -> None:
    every = Tiers(settings(daily_token_budget="5000"))
    assert every.limits("free").daily_token_budget == every.limits("pro").daily_token_budget == 5000
    mapped = Tiers(settings(daily_token_budget='{"free": 100}'))
    assert mapped.limits("free").daily_token_budget == 100
    assert mapped.limits("pro").daily_token_budget is None


def test_queues_are_named_per_tier_highest_priority_first() -> None:
    tiers = Tiers(settings(tiers="free,plus,pro"))
    assert tiers.queues() == [run_queue("pro"), run_queue("plus"), run_queue("free")]
    assert run_queue("pro") == "chat-runs.pro"


def test_an_unknown_tier_is_served_as_the_default() -> None:
    # A run created under settings that had a tier these do not: it still reaches a consumed queue.
    tiers = Tiers(settings())
    assert tiers.resolve("gold") == "free" and tiers.resolve(None) == "free"
    assert tiers.queue("gold") == run_queue("free")
    assert tiers.limits("gold") == tiers.limits("free")


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("CHATGW_TIERS", "free,Pro", "CHATGW_TIERS='free,Pro': 'Pro' is not a tier name"),
        ("CHATGW_TIERS", "free,free", "a tier is listed twice"),
        ("CHATGW_DEFAULT_TIER", "gold", "CHATGW_DEFAULT_TIER='gold' is not one of CHATGW_TIERS (free, pro)"),
        ("CHATGW_TIER_LIMITS", "nope", "CHATGW_TIER_LIMITS='nope': is not valid JSON"),
        ("CHATGW_TIER_LIMITS", '{"gold": {}}', "CHATGW_TIER_LIMITS names tier 'gold'"),
        ("CHATGW_TIER_LIMITS", '{"pro": {"max_runs": 3}}', "pro.max_runs: Extra inputs are not permitted"),
        (
            "CHATGW_TIER_LIMITS",
            '{"pro": {"max_run_tokens": 0}}',
            "pro.max_run_tokens: Input should be greater",
        ),
        ("CHATGW_DAILY_TOKEN_BUDGET", "lots", "CHATGW_DAILY_TOKEN_BUDGET='lots': must be a whole number"),
        ("CHATGW_DAILY_TOKEN_BUDGET", '{"free": -1}', "free: a budget must be a whole number of tokens"),
        ("CHATGW_DAILY_TOKEN_BUDGET", '{"gold": 5}', "CHATGW_DAILY_TOKEN_BUDGET names tier 'gold'"),
        ("CHATGW_CACHE_SIMILARITY", "2", "CHATGW_CACHE_SIMILARITY='2'"),
    ],
)
def test_bad_tier_settings_are_one_line_naming_the_variable(
    env: str, value: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert expected in message and "\n" not in message, message


def test_an_unset_budget_is_no_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATGW_DAILY_TOKEN_BUDGET", "")
    assert load_settings().daily_token_budget is None


# ---------------------------------------------------------------- tiers in tokens


def test_dev_token_forms() -> None:
    assert parse_dev_token("dev:alice") == ("alice", None)
    assert parse_dev_token("dev:alice:pro") == ("alice", "pro")
    assert parse_dev_token("dev:alice:pro:x") is None
    assert parse_dev_token("jwt:alice") is None


def test_a_dev_token_names_its_tier_or_gets_the_default() -> None:
    auth = Authenticator(settings())
    assert auth.authenticate("dev:alice").tier == "free"
    assert auth.authenticate("dev:alice:pro").tier == "pro"
    assert auth.authenticate("dev:alice:pro").user == "alice"


@pytest.mark.parametrize("token", ["dev:alice:gold", "dev:alice:", "dev:alice:PRO"])
def test_a_dev_token_with_an_unknown_tier_is_refused(token: str) -> None:
    with pytest.raises(AuthError) as err:
        Authenticator(settings()).authenticate(token)
    assert "unknown tier" in err.value.message and "free, pro" in err.value.message


def _jwt(**claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "alice", "iat": now, "exp": now + 60, **claims}, SECRET, algorithm="HS256")


def test_a_jwt_tier_comes_from_its_claim() -> None:
    auth = Authenticator(settings(auth="jwt", jwt_secret=SECRET))
    assert auth.authenticate(_jwt()).tier == "free"
    assert auth.authenticate(_jwt(tier="pro")).tier == "pro"
    custom = Authenticator(settings(auth="jwt", jwt_secret=SECRET, jwt_tier_claim="plan"))
    assert custom.authenticate(_jwt(plan="pro", tier="free")).tier == "pro"


@pytest.mark.parametrize("tier", ["gold", 3, ["pro"], ""])
def test_a_jwt_with_an_unknown_tier_is_refused(tier: object) -> None:
    auth = Authenticator(settings(auth="jwt", jwt_secret=SECRET))
    with pytest.raises(AuthError) as err:
        auth.authenticate(_jwt(tier=tier))
    assert "unknown tier" in err.value.message
