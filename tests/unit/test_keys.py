"""Redis key layout: one prefix, distinct keys per run, channel names that round-trip."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from shared.keys import RUN_ACTOR, RUN_QUEUE, Keys

PREFIXES = ["chatgw", "test-1", "a", "x.y_z-9", "p" * 64]
RUN_IDS = [uuid.UUID(int=1).hex, "9f1c2a9be0d34c7e9a51b8f3d2c6e710", "run_1", "A-b_c", "r" * 64]


def all_keys(
    keys: Keys, run_id: str = "r1", conversation_id: str = "c1", worker_id: str = "w1", user: str = "u1"
) -> list[str]:
    return [
        keys.run(run_id),
        keys.run_log(run_id),
        keys.run_channel(run_id),
        keys.conversation(conversation_id),
        keys.user_runs(user),
        keys.user_sockets(user),
        keys.user_rate(user),
        keys.leases(),
        keys.gateways(),
        keys.gateway_users(worker_id),
        keys.control_channel(),
        keys.worker(worker_id),
        keys.workers_pattern(),
        keys.dramatiq_namespace(),
    ]


def test_layout_matches_the_documented_table() -> None:
    keys = Keys("P")
    assert all_keys(keys, "R", "C", "W", "U") == [
        "P:run:R",
        "P:run:R:log",
        "P:run:R:events",
        "P:conv:C",
        "P:user:U:runs",
        "P:user:U:socket_slots",
        "P:user:U:rate",
        "P:runs:leases",
        "P:gateways",
        "P:gateway:W:users",
        "P:control",
        "P:workers:W",
        "P:workers:*",
        "P:dramatiq",
    ]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_key_starts_with_the_prefix(prefix: str) -> None:
    for key in all_keys(Keys(prefix)):
        assert key.startswith(prefix + ":"), key


@pytest.mark.parametrize("prefix", PREFIXES)
def test_keys_of_one_run_are_distinct(prefix: str) -> None:
    keys = all_keys(Keys(prefix), run_id="same", conversation_id="same", worker_id="same", user="same")
    assert len(set(keys)) == len(keys)


def test_distinct_runs_get_distinct_keys() -> None:
    keys = Keys("chatgw")
    seen: set[str] = set()
    for run_id in RUN_IDS:
        for key in (keys.run(run_id), keys.run_log(run_id), keys.run_channel(run_id)):
            assert key not in seen, key
            seen.add(key)
    assert len(seen) == 3 * len(RUN_IDS)


def test_distinct_conversations_and_workers_get_distinct_keys() -> None:
    keys = Keys("chatgw")
    assert keys.conversation("c1") != keys.conversation("c2")
    assert keys.worker("w1") != keys.worker("w2")
    assert keys.user_runs("alice") != keys.user_runs("bob")
    assert keys.user_sockets("alice") != keys.user_sockets("bob")
    assert keys.user_rate("alice") != keys.user_rate("bob")


def test_distinct_prefixes_never_share_a_key() -> None:
    a, b = all_keys(Keys("one")), all_keys(Keys("two"))
    assert not set(a) & set(b)


def test_run_key_is_not_confused_with_conversation_key() -> None:
    keys = Keys("chatgw")
    assert keys.run("x") != keys.conversation("x")


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("run_id", RUN_IDS)
def test_run_id_from_channel_round_trips(prefix: str, run_id: str) -> None:
    keys = Keys(prefix)
    assert keys.run_id_from_channel(keys.run_channel(run_id)) == run_id


def test_run_id_from_channel_round_trips_a_prefix_with_colons_and_events_in_it() -> None:
    keys = Keys("run:events")
    assert keys.run_id_from_channel(keys.run_channel("events")) == "events"


def test_worker_keys_match_the_workers_pattern() -> None:
    import fnmatch

    keys = Keys("chatgw")
    assert fnmatch.fnmatchcase(keys.worker("w-17"), keys.workers_pattern())
    assert not fnmatch.fnmatchcase(keys.run("w-17"), keys.workers_pattern())


def test_keys_is_immutable_value() -> None:
    keys = Keys("chatgw")
    assert keys == Keys("chatgw") and hash(keys) == hash(Keys("chatgw"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        keys.prefix = "other"  # type: ignore[misc]


def test_dramatiq_names() -> None:
    assert RUN_QUEUE == "chat-runs"
    assert RUN_ACTOR == "run_chat"
