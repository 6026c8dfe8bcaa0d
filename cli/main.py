"""`chatgw` — run the gateway, a worker, or everything at once for local development."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from shared.errors import ConfigError
from shared.logs import setup_logging, uvicorn_json_log_config
from shared.settings import Settings, env_name, load_settings


def _setup_logging(settings: Settings) -> None:
    setup_logging(settings.log_level, settings.log_format)  # CHATGW_LOG_FORMAT: text or json
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # CPU-feature probing, not news


def _uvicorn_log_config(settings: Settings) -> dict[str, Any]:
    import uvicorn.config

    if settings.log_format == "json":
        return uvicorn_json_log_config()  # uvicorn's loggers hand their records to our JSON handler
    return uvicorn.config.LOGGING_CONFIG


def cmd_gateway(settings: Settings) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.http_guard import ensure_fd_room, guarded_http_protocol

    settings.require_redis_url  # noqa: B018 - fail fast with a clear message
    ensure_fd_room(settings.max_connections)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # Slow or unfinished upgrade requests are closed; beyond the connection cap, HTTP 503 at once.
        http=guarded_http_protocol(
            handshake_timeout_s=settings.handshake_timeout_s, max_connections=settings.max_connections
        ),
        ws="websockets-sansio",  # the legacy implementation holds a refused socket open for 10 s
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        log_level=settings.log_level,
        log_config=_uvicorn_log_config(settings),
        timeout_graceful_shutdown=5,
    )
    return 0


def cmd_worker(settings: Settings) -> int:
    from worker.main import run_worker

    settings.require_redis_url  # noqa: B018
    run_worker(settings)
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from cli.dev import run_dev

    return run_dev(settings)


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from cli.token import cmd_token as run

    return run(settings, args)


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from cli.ingest import cmd_ingest as run

    return run(settings, args)


def cmd_chat(settings: Settings, args: argparse.Namespace) -> int:
    from cli.chat import run_chat

    return run_chat(args.url, args.token, settings.host, settings.port, wait_s=args.wait)


# Each command imports what it needs only when it runs: `chatgw gateway` never loads the agent.
COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "dev": cmd_dev,
    "gateway": lambda settings, args: cmd_gateway(settings),
    "worker": lambda settings, args: cmd_worker(settings),
    "token": cmd_token,
    "ingest": cmd_ingest,
    "chat": cmd_chat,
}

# The settings each command's --help lists (with their defaults, read from Settings itself).
_HELP_SETTINGS: dict[str, tuple[str, ...]] = {
    "dev": ("host", "port", "redis_url", "data_dir", "auth", "allowed_origins", "llm", "log_level"),
    "gateway": ("host", "port", "redis_url", "key_prefix", "auth", "allowed_origins", "log_format"),
    "worker": (
        "redis_url", "key_prefix", "worker_concurrency", "llm", "data_dir", "index_path",
        "checkpoint_path", "database_url", "worker_metrics_port",
    ),
    "ingest": ("data_dir", "index_path", "embeddings", "embeddings_dim", "chunk_size", "chunk_overlap"),
    "chat": ("host", "port"),
    "token": ("auth", "jwt_secret", "jwt_audience", "jwt_issuer"),
}  # fmt: skip
_DERIVED_DEFAULTS = {
    "index_path": "CHATGW_DATA_DIR/index",
    "checkpoint_path": "CHATGW_DATA_DIR/checkpoints.sqlite",
}


def _settings_help(command: str) -> str:
    lines = ["settings (environment variables, or a .env file in the current folder):"]
    for name in _HELP_SETTINGS[command]:
        field = Settings.model_fields[name]
        value = _DERIVED_DEFAULTS.get(name) or field.get_default(call_default_factory=True)
        if isinstance(value, list):
            value = ",".join(value) or "empty"
        lines.append(f"  {env_name(name):<30} default: {'unset' if value is None else value}")
    lines.append("every setting: shared/settings.py; lists take JSON or comma-separated values")
    return "\n".join(lines)


def _subcommand(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str, description: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=_settings_help(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address the gateway listens on (overrides CHATGW_HOST)")
    parser.add_argument("--port", type=int, help="gateway port (overrides CHATGW_PORT; default 8000)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatgw", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev = _subcommand(
        sub,
        "dev",
        "gateway + worker (+ embedded Redis when CHATGW_REDIS_URL is unset)",
        "Run everything locally: an embedded Redis (when CHATGW_REDIS_URL is unset; on a free port), a "
        "worker, and a gateway on http://127.0.0.1:8000 (WebSocket at /ws). The first run ingests the "
        "sample corpus into CHATGW_DATA_DIR/index. In dev auth mode, browser pages on http://localhost:* "
        "and http://127.0.0.1:* may connect. Ctrl-C stops the gateway, then the worker, then Redis.",
    )
    _add_address(dev)
    gateway = _subcommand(
        sub,
        "gateway",
        "the WebSocket gateway (production process)",
        "The WebSocket gateway: /ws, /healthz, /readyz and /metrics on CHATGW_HOST:CHATGW_PORT "
        "(default 127.0.0.1:8000). Needs CHATGW_REDIS_URL.",
    )
    _add_address(gateway)
    _subcommand(
        sub,
        "worker",
        "a Dramatiq worker running chat runs (production process)",
        "A worker: takes chat runs from the Redis queue and runs the agent. Needs CHATGW_REDIS_URL. "
        "Serves /metrics on CHATGW_WORKER_METRICS_PORT when set.",
    )
    token = _subcommand(
        sub,
        "token",
        "print a token for a user (dev token, or HS256 JWT)",
        "Print a token for the configured auth: dev:<user> in dev mode, an HS256 JWT in jwt mode.",
    )
    token.add_argument("--user", required=True, help="the user the token names (its sub)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    ingest = _subcommand(
        sub,
        "ingest",
        "add .md/.txt/.html files to the retrieval index (CHATGW_DATA_DIR/index)",
        "Read .md, .txt and .html files (directories recursively), split, embed and index them into "
        "CHATGW_INDEX_PATH (default CHATGW_DATA_DIR/index, whatever the current folder), where "
        "running workers pick them up. Unchanged files are skipped, changed ones replaced, deleted "
        "ones removed.",
    )
    ingest.add_argument("paths", nargs="*", metavar="PATH", help="files, or directories read recursively")
    ingest.add_argument("--rebuild", action="store_true", help="start from an empty index")
    ingest.add_argument(
        "--sample", action="store_true", help="also ingest the bundled sample corpus (what `chatgw dev` uses)"
    )
    chat = _subcommand(
        sub,
        "chat",
        "chat in the terminal (reconnects and resumes by itself)",
        "Chat in the terminal with a running gateway (start one with `chatgw dev`). Ctrl-C stops an "
        "answer; Ctrl-C at the prompt, Ctrl-D or /quit leaves; /new starts a new conversation.",
    )
    chat.add_argument("--url", help="gateway WebSocket URL (default ws://CHATGW_HOST:CHATGW_PORT/ws)")
    chat.add_argument("--token", help="token (default $CHATGW_TOKEN, else dev:$USER)")
    chat.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up when the gateway has not answered for this long (default 30)",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """Command-line flags that stand for settings (--host, --port)."""
    return {name: getattr(args, name) for name in ("host", "port") if getattr(args, name, None) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(**_overrides(args))
        _setup_logging(settings)
        return COMMANDS[args.command](settings, args)
    except ConfigError as exc:
        for line in exc.message.splitlines():
            print(f"chatgw: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
