"""`chatgw` — run the gateway, a worker, or everything at once for local development."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from shared.errors import ConfigError
from shared.logs import setup_logging, uvicorn_json_log_config
from shared.settings import Settings, load_settings


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

    settings.require_redis_url  # noqa: B018 - fail fast with a clear message
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
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

    return run_chat(args.url, args.token, settings.host, settings.port)


# Each command imports what it needs only when it runs: `chatgw gateway` never loads the agent.
COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "dev": cmd_dev,
    "gateway": lambda settings, args: cmd_gateway(settings),
    "worker": lambda settings, args: cmd_worker(settings),
    "token": cmd_token,
    "ingest": cmd_ingest,
    "chat": cmd_chat,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatgw", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="gateway + worker (+ embedded Redis when CHATGW_REDIS_URL is unset)")
    sub.add_parser("gateway", help="the WebSocket gateway (production process)")
    sub.add_parser("worker", help="a Dramatiq worker running chat runs (production process)")
    token = sub.add_parser("token", help="print a token for a user (dev token, or HS256 JWT)")
    token.add_argument("--user", required=True, help="the user the token names (its sub)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    ingest = sub.add_parser(
        "ingest",
        help="add .md/.txt/.html files to the retrieval index (CHATGW_INDEX_PATH)",
        description="Read .md, .txt and .html files (directories recursively), split, embed and index "
        "them. Unchanged files are skipped, changed ones replaced, deleted ones removed.",
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files, or directories read recursively")
    ingest.add_argument("--rebuild", action="store_true", help="start from an empty index")
    chat = sub.add_parser("chat", help="chat in the terminal (reconnects and resumes by itself)")
    chat.add_argument("--url", help="gateway WebSocket URL (default ws://CHATGW_HOST:CHATGW_PORT/ws)")
    chat.add_argument("--token", help="token (default $CHATGW_TOKEN, else dev:$USER)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        _setup_logging(settings)
        return COMMANDS[args.command](settings, args)
    except ConfigError as exc:
        print(f"chatgw: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
