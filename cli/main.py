"""`chatgw` — run the gateway, a worker, or everything at once for local development."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cli.ingest import add_parser as add_ingest_parser
from cli.ingest import cmd_ingest
from cli.token import add_parser as add_token_parser
from cli.token import cmd_token
from shared.errors import ConfigError
from shared.settings import Settings, load_settings


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )


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
        timeout_graceful_shutdown=5,
    )
    return 0


def cmd_worker(settings: Settings) -> int:
    from worker.main import run_worker

    settings.require_redis_url  # noqa: B018
    run_worker(settings)
    return 0


def cmd_dev(settings: Settings) -> int:
    from cli.dev import run_dev

    return run_dev(settings)


COMMANDS = {"gateway": cmd_gateway, "worker": cmd_worker, "dev": cmd_dev}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatgw", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="gateway + worker (+ embedded Redis when CHATGW_REDIS_URL is unset)")
    sub.add_parser("gateway", help="the WebSocket gateway (production process)")
    sub.add_parser("worker", help="a Dramatiq worker running chat runs (production process)")
    add_token_parser(sub)
    add_ingest_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        _setup_logging(settings)
        if args.command == "token":
            return cmd_token(settings, args)
        if args.command == "ingest":
            return cmd_ingest(settings, args)
        return COMMANDS[args.command](settings)
    except ConfigError as exc:
        print(f"chatgw: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
