"""Settings: defaults, CHATGW_* environment variables, .env, and ConfigError naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.errors import ChatgwError, ConfigError
from shared.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CHATGW_* variable from the caller's environment and no .env from the repository."""
    for name in list(os.environ):
        if name.startswith("CHATGW_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_error(**overrides: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    return info.value


# ---------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    ("field", "default"),
    [
        ("redis_url", None),
        ("key_prefix", "chatgw"),
        ("host", "127.0.0.1"),
        ("port", 8000),
        ("auth", "dev"),
        ("auth_timeout_s", 5.0),
        ("max_frame_bytes", 64 * 1024),
        ("max_content_chars", 16_000),
        ("outbound_queue_size", 1024),
        ("ws_ping_interval_s", 30.0),
        ("ws_ping_timeout_s", 20.0),
        ("handshake_timeout_s", 10.0),
        ("max_connections", 15_000),
        ("run_retention_s", 3600),
        ("conversation_ttl_s", 30 * 24 * 3600),
        ("run_timeout_s", 300.0),
        ("worker_concurrency", 256),
        ("worker_shutdown_grace_s", 30.0),
        ("llm", "offline"),
        ("log_level", "info"),
    ],
)
def test_default(field: str, default: object) -> None:
    settings = load_settings()
    assert getattr(settings, field) == default


def test_defaults_need_no_environment_at_all() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.port = 1  # type: ignore[misc]


# ---------------------------------------------------------------- environment


@pytest.mark.parametrize(
    ("var", "value", "field", "expected"),
    [
        ("CHATGW_REDIS_URL", "redis://db:6379/2", "redis_url", "redis://db:6379/2"),
        ("CHATGW_REDIS_URL", "rediss://db:6380/0", "redis_url", "rediss://db:6380/0"),
        ("CHATGW_REDIS_URL", "unix:///tmp/redis.sock", "redis_url", "unix:///tmp/redis.sock"),
        ("CHATGW_REDIS_URL", "", "redis_url", None),
        ("CHATGW_KEY_PREFIX", "staging.v2_x-1", "key_prefix", "staging.v2_x-1"),
        ("CHATGW_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("CHATGW_PORT", "9001", "port", 9001),
        ("CHATGW_PORT", "0", "port", 0),
        ("CHATGW_AUTH_TIMEOUT_S", "2.5", "auth_timeout_s", 2.5),
        ("CHATGW_MAX_FRAME_BYTES", "1024", "max_frame_bytes", 1024),
        ("CHATGW_MAX_CONTENT_CHARS", "10", "max_content_chars", 10),
        ("CHATGW_OUTBOUND_QUEUE_SIZE", "8", "outbound_queue_size", 8),
        ("CHATGW_RUN_RETENTION_S", "60", "run_retention_s", 60),
        ("CHATGW_RUN_TIMEOUT_S", "1.5", "run_timeout_s", 1.5),
        ("CHATGW_WORKER_CONCURRENCY", "4", "worker_concurrency", 4),
        ("CHATGW_LOG_LEVEL", "debug", "log_level", "debug"),
    ],
)
def test_environment_variable_is_read(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(var, value)
    assert getattr(load_settings(), field) == expected


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("chatgw_port", "9100")
    if os.environ.get("CHATGW_PORT") == "9100":
        pytest.skip("the platform's environment is case-insensitive")
    assert load_settings().port == 9100


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "1234")
    monkeypatch.setenv("KEY_PREFIX", "nope")
    settings = load_settings()
    assert settings.port == 8000 and settings.key_prefix == "chatgw"


def test_unknown_chatgw_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATGW_NO_SUCH_SETTING", "x")
    assert load_settings().port == 8000


def test_environment_is_read_at_load_time_not_import_time(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().port == 8000
    monkeypatch.setenv("CHATGW_PORT", "8123")
    assert load_settings().port == 8123


def test_keyword_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATGW_PORT", "9001")
    assert load_settings(port=9002).port == 9002


# ---------------------------------------------------------------- .env


def test_dotenv_in_the_working_directory_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text("CHATGW_PORT=7007\nCHATGW_KEY_PREFIX=fromdotenv\n", encoding="utf-8")
    settings = load_settings()
    assert settings.port == 7007 and settings.key_prefix == "fromdotenv"


def test_environment_wins_over_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("CHATGW_PORT=7007\n", encoding="utf-8")
    monkeypatch.setenv("CHATGW_PORT", "7008")
    assert load_settings().port == 7008


def test_dotenv_in_another_directory_is_not_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = clean_env / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".env").write_text("CHATGW_PORT=7007\n", encoding="utf-8")
    assert load_settings().port == 8000


def test_invalid_value_in_dotenv_is_a_config_error(clean_env: Path) -> None:
    (clean_env / ".env").write_text("CHATGW_PORT=notaport\n", encoding="utf-8")
    assert "CHATGW_PORT" in config_error().message


# ---------------------------------------------------------------- invalid values


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CHATGW_PORT", "abc"),
        ("CHATGW_PORT", "-1"),
        ("CHATGW_PORT", "65536"),
        ("CHATGW_PORT", "80.5"),
        ("CHATGW_KEY_PREFIX", "a b"),
        ("CHATGW_KEY_PREFIX", ""),
        ("CHATGW_KEY_PREFIX", "a:b"),
        ("CHATGW_KEY_PREFIX", "x" * 65),
        ("CHATGW_KEY_PREFIX", "préfixe"),
        ("CHATGW_REDIS_URL", "http://x"),
        ("CHATGW_REDIS_URL", "localhost:6379"),
        ("CHATGW_AUTH", "basic"),
        ("CHATGW_AUTH_TIMEOUT_S", "0"),
        ("CHATGW_AUTH_TIMEOUT_S", "soon"),
        ("CHATGW_MAX_FRAME_BYTES", "10"),
        ("CHATGW_MAX_CONTENT_CHARS", "0"),
        ("CHATGW_OUTBOUND_QUEUE_SIZE", "1"),
        ("CHATGW_RUN_RETENTION_S", "0"),
        ("CHATGW_RUN_TIMEOUT_S", "-5"),
        ("CHATGW_WORKER_CONCURRENCY", "0"),
        ("CHATGW_LLM", "gpt"),
        ("CHATGW_LOG_LEVEL", "verbose"),
    ],
)
def test_invalid_value_raises_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    err = config_error()
    assert isinstance(err, ChatgwError)
    assert err.message.startswith(f"invalid setting {var}"), err.message
    assert "\n" not in err.message, "one line per bad variable"
    assert str(err) == err.message


def test_every_invalid_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATGW_PORT", "abc")
    monkeypatch.setenv("CHATGW_KEY_PREFIX", "a b")
    monkeypatch.setenv("CHATGW_REDIS_URL", "http://x")
    message = config_error().message
    for var in ("CHATGW_PORT", "CHATGW_KEY_PREFIX", "CHATGW_REDIS_URL"):
        assert f"invalid setting {var}=" in message
    assert len(message.splitlines()) == 3


def test_config_error_message_explains_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATGW_REDIS_URL", "http://x")
    assert "redis://" in config_error().message
    monkeypatch.delenv("CHATGW_REDIS_URL")
    monkeypatch.setenv("CHATGW_KEY_PREFIX", "a b")
    assert "letters, digits" in config_error().message


def test_invalid_keyword_override_is_a_config_error() -> None:
    assert config_error(port="abc").message.startswith("invalid setting CHATGW_PORT='abc': ")


def test_config_error_is_not_a_pydantic_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("CHATGW_PORT", "abc")
    err = config_error()
    assert not isinstance(err, ValidationError)
    assert err.__cause__ is None and err.__suppress_context__


# ---------------------------------------------------------------- require_redis_url


def test_require_redis_url_when_unset_is_a_config_error() -> None:
    settings = load_settings()
    with pytest.raises(ConfigError) as info:
        _ = settings.require_redis_url
    assert "CHATGW_REDIS_URL" in info.value.message


def test_require_redis_url_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATGW_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert load_settings().require_redis_url == "redis://127.0.0.1:6379/0"


# ---------------------------------------------------------------- lists and the data directory


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://localhost:5173", ["http://localhost:5173"]),
        (
            "http://localhost:5173, https://app.example.com",
            ["http://localhost:5173", "https://app.example.com"],
        ),
        ("http://a.example,,", ["http://a.example"]),
        ('["http://a.example", "http://b.example"]', ["http://a.example", "http://b.example"]),
        ("", []),
    ],
)
def test_list_settings_take_commas_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CHATGW_ALLOWED_ORIGINS", value)
    monkeypatch.setenv("CHATGW_JWT_ALGORITHMS", "HS256,RS256")
    settings = load_settings()
    assert settings.allowed_origins == expected
    assert settings.jwt_algorithms == ["HS256", "RS256"]


@pytest.mark.parametrize("value", ['["http://a.example"', '{"a": 1}', "[1, 2]", "localhost:5173"])
def test_a_bad_list_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CHATGW_ALLOWED_ORIGINS", value)
    message = config_error().message
    assert message.startswith("invalid setting CHATGW_ALLOWED_ORIGINS=") and "\n" not in message


def test_an_empty_optional_setting_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATGW_WORKER_METRICS_PORT", "")
    monkeypatch.setenv("CHATGW_LLM_BASE_URL", " ")
    settings = load_settings()
    assert settings.worker_metrics_port is None and settings.llm_base_url is None


def test_files_live_in_the_per_user_data_directory(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.data_dir.is_absolute() and settings.data_dir.name == "chatgw"
    assert settings.index_path == settings.data_dir / "index"
    assert settings.checkpoint_path == settings.data_dir / "checkpoints.sqlite"
    # Whatever the current folder: the same paths from anywhere.
    elsewhere = clean_env / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_settings().index_path == settings.index_path


def test_data_dir_is_made_absolute_and_explicit_paths_win(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATGW_DATA_DIR", "mydata")
    settings = load_settings()
    assert settings.data_dir == clean_env / "mydata"
    assert settings.index_path == clean_env / "mydata" / "index"
    monkeypatch.setenv("CHATGW_INDEX_PATH", "/srv/index")
    monkeypatch.setenv("CHATGW_CHECKPOINT_PATH", "/srv/memory.sqlite")
    settings = load_settings()
    assert settings.index_path == Path("/srv/index") and settings.checkpoint_path == Path(
        "/srv/memory.sqlite"
    )


def test_a_data_dir_that_is_a_file_is_refused(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / "afile").write_text("x")
    monkeypatch.setenv("CHATGW_DATA_DIR", str(clean_env / "afile"))
    assert config_error().message.startswith("invalid setting CHATGW_DATA_DIR=")


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATGW_LLM", "openai")
    monkeypatch.setenv("CHATGW_LLM_API_KEY", "sk-very-secret")
    monkeypatch.setenv("CHATGW_PORT", "x")
    assert "sk-very-secret" not in config_error().message
