"""Settings for every chatgw process, read from ``CHATGW_*`` environment variables and ``.env``.

Load them once at process start with :func:`load_settings` and pass the object on; nothing reads the
environment at import time. Invalid values fail at start with one line per bad variable, naming it.

List settings take JSON (``["a","b"]``) or comma-separated values (``a,b``). Files chatgw writes live in
one per-user data directory, ``CHATGW_DATA_DIR``, whatever the current folder is.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import platformdirs
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from shared.errors import ConfigError
from shared.protocol import ON_BUSY_CHOICES, OnBusy
from shared.tiers import TIER_RE

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_.:%\[\]-]+$")  # a name, an IPv4 or an IPv6 address; no scheme or path
_ORIGIN_RE = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s]+$", re.IGNORECASE)


def default_data_dir() -> Path:
    """Per user, e.g. ~/.local/share/chatgw on Linux: the same folder from wherever chatgw runs."""
    return Path(platformdirs.user_data_dir("chatgw", appauthor=False))


def parse_list(value: str) -> list[str]:
    """A list setting: a JSON array of strings, or comma-separated values (blanks dropped)."""
    text = value.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            raise ValueError('is not a valid JSON list; use comma-separated values or ["a", "b"]') from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError("must be a JSON list of strings or comma-separated values")
        return items
    return [item.strip() for item in text.split(",") if item.strip()]


class TierOverrides(BaseModel):
    """One tier's entry in ``CHATGW_TIER_LIMITS``: what it changes from the global limits."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    rate_limit_per_minute: int | None = Field(None, ge=1)
    rate_limit_burst: int | None = Field(None, ge=1)
    max_runs_per_user: int | None = Field(None, ge=1)
    max_run_tokens: int | None = Field(None, ge=1)


def _json_object(text: str, example: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc.msg}); e.g. {example}") from None


def parse_tier_limits(value: Any) -> dict[str, TierOverrides]:
    """``CHATGW_TIER_LIMITS``: JSON, tier → overrides; errors name the tier and the field."""
    example = '{"pro": {"max_runs_per_user": 20, "rate_limit_per_minute": 120}}'
    raw = _json_object(value, example) if isinstance(value, str) else value
    if not isinstance(raw, dict):
        raise ValueError(f"must be a JSON object of tier → limits, e.g. {example}")
    parsed: dict[str, TierOverrides] = {}
    for tier, overrides in raw.items():
        try:
            parsed[str(tier)] = TierOverrides.model_validate(overrides)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join([str(tier), *(str(p) for p in first["loc"])])
            fields = ", ".join(TierOverrides.model_fields)
            raise ValueError(f"{where}: {first['msg']} (fields: {fields})") from None
    return parsed


def parse_token_budget(value: Any) -> int | dict[str, int] | None:
    """``CHATGW_DAILY_TOKEN_BUDGET``: unset, a number for every tier, or JSON tier → number."""
    example = '20000, or {"free": 20000, "pro": 500000}'
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("{"):
            value = _json_object(text, example)
        elif text.isdigit():
            value = int(text)
        else:
            raise ValueError(f"must be a whole number of tokens or a JSON object per tier, e.g. {example}")
    if value is None:
        return None
    budgets = value if isinstance(value, dict) else {"": value}
    for tier, budget in budgets.items():
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            where = f"{tier}: " if tier else ""
            raise ValueError(f"{where}a budget must be a whole number of tokens ≥ 0, e.g. {example}")
    return value if isinstance(value, int) else {str(k): int(v) for k, v in value.items()}


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list


def _allows_none(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHATGW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        enable_decoding=False,  # list settings are parsed by _from_environment: JSON or comma-separated
    )

    # Where chatgw keeps its files (the index, checkpoints, the embedded Redis's folder).
    data_dir: Path = Field(
        default_factory=default_data_dir, description="Per-user data directory (default via platformdirs)."
    )

    # Redis. None means "not configured": `chatgw dev` then starts an embedded Redis.
    redis_url: str | None = None
    key_prefix: str = Field("chatgw", description="Prefix of every Redis key chatgw writes.")
    redis_max_connections: int = Field(
        256, ge=4, le=100_000, description="Connections per Redis pool of a process; callers wait beyond."
    )
    redis_pool_timeout_s: float = Field(
        10.0, gt=0, le=300, description="How long a command waits for a free pooled connection."
    )

    # Gateway.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    auth: Literal["dev", "jwt"] = "dev"
    auth_timeout_s: float = Field(5.0, gt=0, le=300)
    # Dev tokens name any user: refuse them on a non-loopback address unless this is set too.
    dev_auth_allow_nonlocal: bool = False
    jwt_secret: SecretStr | None = Field(None, description="HS256 shared secret.")
    jwt_public_key_file: Path | None = Field(None, description="PEM public key for RS256/ES256.")
    jwt_jwks_file: Path | None = Field(None, description="A local JWKS file (RS256/ES256).")
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # Browser Origins allowed to open /ws. Requests without Origin (non-browser clients) are allowed.
    allowed_origins: list[str] = Field(default_factory=list)
    max_frame_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_content_chars: int = Field(16_000, ge=1, le=1_000_000)
    outbound_queue_size: int = Field(1024, ge=8, le=1_000_000)
    ws_ping_interval_s: float = Field(30.0, gt=0)
    ws_ping_timeout_s: float = Field(20.0, gt=0)
    idle_timeout_s: float = Field(300.0, gt=0, description="Close a socket that sent nothing for this long.")
    handshake_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Close a connection whose upgrade request is not in by then."
    )
    max_connections: int = Field(
        15_000, ge=1, le=1_000_000, description="Open connections per gateway process; beyond, HTTP 503."
    )
    max_follows_per_socket: int = Field(100, ge=1)

    # Limits (per user, across every gateway replica: counted in Redis).
    rate_limit_per_minute: int = Field(30, ge=1, description="chat frames a user may send per minute.")
    rate_limit_burst: int = Field(10, ge=1)
    max_runs_per_user: int = Field(5, ge=1, description="Runs in flight at once per user.")
    max_sockets_per_user: int = Field(10, ge=1)
    max_run_tokens: int = Field(2000, ge=1, description="Tokens per run; then it completes, truncated.")
    on_busy: OnBusy = Field(
        "reject", description="What a chat does to its conversation's run in flight, unless it says."
    )
    # A chat frame may choose its own on_busy among these (the default, CHATGW_ON_BUSY, always).
    on_busy_allowed: list[OnBusy] = Field(
        default_factory=lambda: list(ON_BUSY_CHOICES), description="on_busy values a chat frame may choose."
    )
    chat_dedup_s: int = Field(600, ge=1, description="A chat frame's id is idempotent for this long.")

    # Tiers, priority and costs (docs/tiers.md). The limits above are every tier's defaults.
    tiers: list[str] = Field(
        default_factory=lambda: ["free", "pro"], description="User tiers, lowest priority first."
    )
    default_tier: str = Field("free", description="The tier of a token that names none.")
    jwt_tier_claim: str = Field("tier", description="The JWT claim that holds the user's tier.")
    tier_limits: dict[str, TierOverrides] = Field(
        default_factory=dict,
        description='Per-tier limits, JSON: {"pro": {"max_runs_per_user": 20, "max_run_tokens": 4000}}.',
    )
    priority_aging_s: float = Field(
        30.0, ge=0, le=86_400, description="A queued run counts as this much later per tier below the top."
    )
    daily_token_budget: int | dict[str, int] | None = Field(
        None, description="Tokens per user per UTC day: a number, or JSON per tier; unset: no budget."
    )
    cache: Literal["on", "off"] = Field("on", description="Answer repeated first-turn questions from cache.")
    cache_ttl_s: int = Field(86_400, ge=1, le=30 * 86_400, description="How long a cached answer is reused.")
    cache_similarity: float | None = Field(
        None, gt=0, le=1, description="Also reuse answers to questions this similar (cosine); unset: exact."
    )

    # Runs.
    run_retention_s: int = Field(3600, ge=1, description="How long a finished run stays resumable.")
    conversation_ttl_s: int = Field(
        30 * 24 * 3600, ge=1, description="A conversation unused this long is deleted, memory included."
    )
    conversation_sweep_s: float = Field(
        60.0, gt=0, le=86_400, description="How often gateways look for expired conversations."
    )
    run_timeout_s: float = Field(300.0, gt=0, description="Hard ceiling on one run's wall time.")
    run_lease_s: float = Field(10.0, gt=0, description="A worker renews its run's lease this often x3.")
    sweep_interval_s: float = Field(2.0, gt=0, description="How often orphaned runs are looked for.")
    max_attempts: int = Field(3, ge=1, description="Attempts per run before run.failed(worker_lost).")
    store_outage_budget_s: float = Field(
        30.0, gt=0, le=3600, description="A worker that cannot write a run's events this long gives it up."
    )

    # Worker.
    worker_concurrency: int = Field(
        256, ge=1, le=100_000, description="Runs one worker process executes at once (on its event loop)."
    )
    worker_shutdown_grace_s: float = Field(30.0, ge=0)
    worker_metrics_port: int | None = Field(None, ge=1, le=65535, description="Serve /metrics here.")

    # Agent.
    llm: Literal["offline", "openai"] = "offline"
    offline_token_delay_ms: float = Field(20.0, ge=0, le=60_000)
    offline_max_tokens: int = Field(200, ge=1, le=100_000)
    llm_base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    llm_model: str | None = None
    llm_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("CHATGW_LLM_API_KEY", "OPENAI_API_KEY")
    )
    llm_temperature: float = Field(0.2, ge=0, le=2)
    llm_max_tokens: int | None = Field(1024, ge=1)
    llm_timeout_s: float = Field(60.0, gt=0)
    llm_max_retries: int = Field(2, ge=0, le=10, description="Transient failures retried before 1st token.")
    system_prompt: str = (
        "You are a helpful assistant. Answer using the context when it is relevant and cite the "
        "titles of the sources you used. If the context does not contain the answer, say so."
    )

    # Retrieval.
    embeddings: Literal["offline", "openai"] = "offline"
    embeddings_base_url: str | None = None
    embeddings_model: str | None = None
    embeddings_api_key: SecretStr | None = None
    embeddings_dim: int = Field(1024, ge=16, le=65536, description="Offline hashing embedder's size.")
    # Both default to a path in CHATGW_DATA_DIR (see _derive_paths); set them to put one elsewhere.
    index_path: Path = Field(
        Path("index"), description="FAISS index directory (default CHATGW_DATA_DIR/index)."
    )
    retrieval_k: int = Field(3, ge=0, le=50)
    chunk_size: int = Field(800, ge=100)
    chunk_overlap: int = Field(120, ge=0)

    # Conversation memory.
    database_url: str | None = Field(None, description="PostgreSQL for the checkpointer; else SQLite.")
    checkpoint_path: Path = Field(
        Path("checkpoints.sqlite"),
        description="SQLite checkpoints (default CHATGW_DATA_DIR/checkpoints.sqlite).",
    )
    history_budget_chars: int = Field(
        8000, ge=0, description="Earlier turns sent to the model, newest first."
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per line.")

    @field_validator("*", mode="before")
    @classmethod
    def _from_environment(cls, value: Any, info: ValidationInfo) -> Any:
        """Environment strings: lists as JSON or comma-separated; "" means unset for optional settings."""
        if not isinstance(value, str) or info.field_name is None:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if _is_list(annotation):
            return parse_list(value)
        if value.strip() == "" and _allows_none(annotation):
            return None
        return value

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if not _HOST_RE.match(value) or "://" in value:
            raise ValueError("must be a host name or IP address to listen on, e.g. 127.0.0.1 or 0.0.0.0")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin not in ("*", "null") and not _ORIGIN_RE.match(origin.rstrip("/")):
                raise ValueError(
                    f"{origin!r} is not an origin: use scheme://host[:port] such as http://localhost:5173, "
                    "comma-separated"
                )
        return value

    @field_validator("llm_base_url", "embeddings_base_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. http://localhost:11434/v1")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a PostgreSQL URL, e.g. postgresql://user@host:5432/chatgw")
        return value

    @field_validator("data_dir", "index_path")
    @classmethod
    def _check_directory(cls, value: Path) -> Path:
        value = value.expanduser()
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} is a file; this must be a directory")
        return value

    @field_validator("checkpoint_path")
    @classmethod
    def _check_file(cls, value: Path) -> Path:
        value = value.expanduser()
        if value.is_dir():
            raise ValueError(f"{value} is a directory; this must be a file path")
        return value

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

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        # Absolute, so every process (and `chatgw dev`'s children) agrees whatever its current folder.
        data_dir = self.data_dir.resolve()
        explicit = self.model_fields_set
        derived = {
            "data_dir": data_dir,
            "index_path": self.index_path if "index_path" in explicit else data_dir / "index",
            "checkpoint_path": (
                self.checkpoint_path if "checkpoint_path" in explicit else data_dir / "checkpoints.sqlite"
            ),
        }
        for name, path in derived.items():
            object.__setattr__(self, name, path)  # frozen model: set once, here, before anyone reads it
        return self

    @field_validator("tiers")
    @classmethod
    def _check_tiers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one tier, lowest priority first, e.g. free,pro")
        for tier in value:
            if not TIER_RE.match(tier):
                raise ValueError(f"{tier!r} is not a tier name: 1-32 of a-z, 0-9, '_' or '-'")
        if len(set(value)) != len(value):
            raise ValueError("a tier is listed twice")
        return value

    @field_validator("tier_limits", mode="before")
    @classmethod
    def _parse_tier_limits(cls, value: Any) -> Any:
        return parse_tier_limits(value)

    @field_validator("daily_token_budget", mode="before")
    @classmethod
    def _parse_token_budget(cls, value: Any) -> Any:
        return parse_token_budget(value)

    @model_validator(mode="after")
    def _check_tier_names(self) -> Settings:
        known = f"one of CHATGW_TIERS ({', '.join(self.tiers)})"
        if self.default_tier not in self.tiers:
            raise ValueError(f"CHATGW_DEFAULT_TIER={self.default_tier!r} is not {known}")
        named = [("CHATGW_TIER_LIMITS", t) for t in self.tier_limits]
        if isinstance(self.daily_token_budget, dict):
            named += [("CHATGW_DAILY_TOKEN_BUDGET", t) for t in self.daily_token_budget]
        for variable, tier in named:
            if tier not in self.tiers:
                raise ValueError(f"{variable} names tier {tier!r}, which is not {known}")
        return self

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.llm == "openai" and not self.llm_base_url and self.llm_api_key is None:
            raise ValueError("CHATGW_LLM=openai needs CHATGW_LLM_BASE_URL or an API key (CHATGW_LLM_API_KEY)")
        if self.llm == "openai" and not self.llm_model:
            raise ValueError("CHATGW_LLM=openai needs CHATGW_LLM_MODEL")
        if self.embeddings == "openai" and not self.embeddings_model:
            raise ValueError("CHATGW_EMBEDDINGS=openai needs CHATGW_EMBEDDINGS_MODEL")
        if self.auth == "jwt" and not (self.jwt_secret or self.jwt_public_key_file or self.jwt_jwks_file):
            raise ValueError(
                "CHATGW_AUTH=jwt needs CHATGW_JWT_SECRET, CHATGW_JWT_PUBLIC_KEY_FILE or CHATGW_JWT_JWKS_FILE"
            )
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("CHATGW_CHUNK_OVERLAP must be smaller than CHATGW_CHUNK_SIZE")
        return self

    @property
    def unclaimed_grace_s(self) -> float:
        """A queued run nobody has claimed this long gets its Dramatiq message sent again: the
        message may be lost (its gateway died between creating the run and enqueueing it)."""
        return self.run_lease_s * 3

    @property
    def require_redis_url(self) -> str:
        if self.redis_url is None:
            raise ConfigError(
                "CHATGW_REDIS_URL is not set: point it at Redis (redis://host:6379/0), "
                "or use `chatgw dev`, which starts an embedded Redis"
            )
        return self.redis_url


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and ``.env``); raise ConfigError with one line per bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise ConfigError("\n".join(dict.fromkeys(lines))) from None
    except SettingsError as exc:  # a source could not be read at all (e.g. a malformed .env)
        match = re.search(r'field "(\w+)"', str(exc))
        name = f"CHATGW_{match.group(1).upper()}" if match else "a CHATGW_* variable"
        raise ConfigError(f"invalid setting {name}: {exc}") from None


def env_name(field: str) -> str:
    """The environment variable of a settings field (``port`` → ``CHATGW_PORT``)."""
    return field if field.upper().startswith(("CHATGW_", "OPENAI_")) else f"CHATGW_{field.upper()}"


def _describe(err: Any) -> str:
    message = str(err["msg"]).removeprefix("Value error, ")
    if not err["loc"]:
        return f"invalid settings: {message}"  # a combination of settings, named in the message
    field = str(err["loc"][0])
    name = env_name(field)
    annotation = Settings.model_fields[field].annotation if field in Settings.model_fields else None
    value = err.get("input")
    if isinstance(value, str | int | float) and "SecretStr" not in str(annotation):
        shown = repr(value) if len(str(value)) <= 80 else repr(f"{str(value)[:77]}...")
        return f"invalid setting {name}={shown}: {message}"
    return f"invalid setting {name}: {message}"
