"""Settings for every chatgw process, read from ``CHATGW_*`` environment variables and ``.env``.

Load them once at process start with :func:`load_settings` and pass the object on; nothing reads the
environment at import time. Invalid values fail at start with a message naming the variable.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHATGW_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Redis. None means "not configured": `chatgw dev` then starts an embedded Redis.
    redis_url: str | None = None
    key_prefix: str = Field("chatgw", description="Prefix of every Redis key chatgw writes.")

    # Gateway.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    auth: Literal["dev"] = "dev"
    auth_timeout_s: float = Field(5.0, gt=0, le=300)
    max_frame_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_content_chars: int = Field(16_000, ge=1, le=1_000_000)
    outbound_queue_size: int = Field(1024, ge=8, le=1_000_000)
    ws_ping_interval_s: float = Field(20.0, gt=0)
    ws_ping_timeout_s: float = Field(20.0, gt=0)

    # Runs.
    run_retention_s: int = Field(3600, ge=1, description="How long a finished run stays resumable.")
    conversation_ttl_s: int = Field(30 * 24 * 3600, ge=60)
    run_timeout_s: float = Field(300.0, gt=0, description="Hard ceiling on one run's wall time.")

    # Worker.
    worker_concurrency: int = Field(16, ge=1, le=1024, description="Runs one worker process serves at once.")
    worker_shutdown_grace_s: float = Field(30.0, ge=0)

    # Agent.
    llm: Literal["offline"] = "offline"
    offline_token_delay_ms: float = Field(20.0, ge=0, le=60_000)
    offline_max_tokens: int = Field(200, ge=1, le=100_000)

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX_RE.match(value):
            raise ValueError("must be 1-64 characters of letters, digits, '_', '.' or '-'")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @property
    def require_redis_url(self) -> str:
        if self.redis_url is None:
            raise ConfigError(
                "CHATGW_REDIS_URL is not set: point it at Redis (redis://host:6379/0), "
                "or use `chatgw dev`, which starts an embedded Redis"
            )
        return self.redis_url


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and ``.env``); raise ConfigError with a clear message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            lines.append(f"CHATGW_{field.upper()}: {err['msg']}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None
