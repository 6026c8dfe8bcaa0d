"""Every setting, given a bad value, stops `chatgw gateway` with exit code 2 and one clear line naming
the variable: no traceback. New settings are covered by their type, or must be listed here."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import uvicorn

from cli.main import main
from shared.settings import Settings, env_name

JWT = {"CHATGW_AUTH": "jwt", "CHATGW_JWT_SECRET": "s" * 32, "CHATGW_REDIS_URL": "redis://127.0.0.1:1/0"}
# Settings whose bad values depend on more than their type, with what they need to be checked.
SPECIAL: dict[str, tuple[str, dict[str, str]]] = {
    "redis_url": ("localhost:6379", {}),
    "key_prefix": ("two words", {}),
    "host": ("http://0.0.0.0", {}),
    "allowed_origins": ("localhost:5173", {}),
    "llm_base_url": ("localhost:11434/v1", {}),
    "embeddings_base_url": ("localhost:11434/v1", {}),
    "database_url": ("mysql://db/chatgw", {}),
    "on_busy_allowed": ("reject,sometimes", {}),
    "tiers": ("free,Gold Plus", {}),
    "default_tier": ("gold", {}),
    "tier_limits": ('{"pro": {"max_runs_per_user": 0}}', {}),
    "daily_token_budget": ("lots", {}),
    "jwt_algorithms": ("HS999", JWT),
    "jwt_secret": ("short", {**JWT, "CHATGW_JWT_SECRET": "short"}),
    "jwt_public_key_file": ("/no/such/key.pem", {**JWT, "CHATGW_JWT_ALGORITHMS": "RS256"}),
    "jwt_jwks_file": ("/no/such/jwks.json", {**JWT, "CHATGW_JWT_ALGORITHMS": "RS256"}),
}
# Settings that accept any text: nothing to refuse.
FREE_TEXT = {
    "jwt_audience", "jwt_issuer", "llm_model", "embeddings_model", "system_prompt", "llm_api_key",
    "embeddings_api_key", "jwt_tier_claim",
}  # fmt: skip


def _plain(annotation: Any) -> Any:
    """``int | None`` → ``int``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def bad_value(field: str, tmp_path: Path) -> tuple[str, dict[str, str]] | None:
    if field in SPECIAL:
        return SPECIAL[field]
    kind = _plain(Settings.model_fields[field].annotation)
    if field in ("data_dir", "index_path"):
        (tmp_path / "a-file").write_text("not a directory")
        return str(tmp_path / "a-file"), {}
    if field == "checkpoint_path":
        return str(tmp_path), {}  # a directory
    if kind is bool:
        return "maybe", {}
    if kind is int:
        return "12abc", {}
    if kind is float:
        return "fast", {}
    if get_origin(kind) is Literal:
        return "no-such-choice", {}
    return None


def test_every_setting_is_covered(tmp_path: Path) -> None:
    uncovered = [f for f in Settings.model_fields if f not in FREE_TEXT and bad_value(f, tmp_path) is None]
    assert not uncovered, f"give these a bad value in SPECIAL, or list them in FREE_TEXT: {uncovered}"


@pytest.mark.parametrize("field", sorted(set(Settings.model_fields) - FREE_TEXT))
def test_a_bad_value_is_one_clear_line_and_exit_code_2(
    field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("CHATGW_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env
    found = bad_value(field, tmp_path)
    assert found is not None
    value, extra = found
    for name, setting in {**extra, env_name(field): value}.items():
        monkeypatch.setenv(name, setting)

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the gateway started with {env_name(field)}={value!r}")

    monkeypatch.setattr(uvicorn, "run", started)  # a guard: a missed bad value must not serve forever
    assert main(["gateway"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("chatgw: ") and env_name(field) in last, err
    assert len(last) < 300
