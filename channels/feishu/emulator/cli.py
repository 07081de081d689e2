"""`channeld emulate feishu`: serve a local Feishu/Lark on one port until cancelled."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from channels.feishu.emulator.server import (
    DEFAULT_APP_ID,
    DEFAULT_APPS,
    FeishuEmulator,
)
from channels.feishu.emulator.state import AppSpec, FeishuApp, to_app

DEFAULT_LISTEN = "127.0.0.1:8789"


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(
    listen: str = DEFAULT_LISTEN,
    apps: Iterable[AppSpec] = DEFAULT_APPS,
    *,
    out: TextIO | None = None,
    **options: Any,
) -> None:
    """Runs an emulator until cancelled, printing its URL, credentials and a channel snippet."""
    out = out or sys.stdout
    host, port = _split_listen(listen)
    app_list = [to_app(a) for a in apps]
    emulator = FeishuEmulator(app_list, **options)
    url = await emulator.start(host, port)
    try:
        print(f"Feishu emulator listening on {url}", file=out)
        for app in app_list:
            # These are the emulator's own throwaway credentials, printed so a user can copy them.
            print(
                f"  app app_id={app.app_id} app_secret={app.app_secret} "
                f"bot={app.bot_name!r} bot_open_id={app.bot_open_id}",
                file=out,
            )
        first = app_list[0]
        print("  channel config for channeld.toml:", file=out)
        print("    [[channels]]", file=out)
        print('    id = "feishu-emulated"', file=out)
        print('    type = "feishu"', file=out)
        print(f'    app_id = "{first.app_id}"', file=out)
        print(f'    app_secret = "{first.app_secret}"', file=out)
        print(f'    domain = "{url}"', file=out)
        print(f"  control plane: {url}/_emulator/state", file=out, flush=True)
        await asyncio.Event().wait()
    finally:
        await emulator.stop()


def _app_arg(value: str) -> FeishuApp:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise argparse.ArgumentTypeError("expected APP_ID:SECRET[:BOT_NAME]")
    return FeishuApp(*parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `channeld emulate feishu`."""
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help="HOST:PORT (port 0: any free port)"
    )
    parser.add_argument(
        "--app",
        action="append",
        type=_app_arg,
        metavar="APP_ID:SECRET[:BOT_NAME]",
        help=f"an app the emulator accepts (repeatable; default {DEFAULT_APP_ID})",
    )
    parser.add_argument(
        "--ping-interval", type=float, default=120.0, help="PingInterval handed to clients"
    )
    parser.add_argument(
        "--reconnect-interval", type=float, default=120.0, help="ReconnectInterval for clients"
    )
    parser.add_argument(
        "--reconnect-nonce", type=float, default=30.0, help="ReconnectNonce (jitter) for clients"
    )
    parser.add_argument(
        "--token-ttl", type=int, default=7200, help="tenant_access_token lifetime in seconds"
    )
    parser.add_argument(
        "--streaming-timeout",
        type=float,
        default=600.0,
        help="seconds after which a card's streaming mode closes by itself",
    )
    parser.add_argument(
        "--redelivery",
        default="15,300,3600,21600",
        help="seconds between pushes of an unacked event (comma-separated; empty: never)",
    )
    parser.add_argument(
        "--group-msg-scope",
        action="store_true",
        help="deliver group messages that do not @ the bot (the im:message.group_msg scope)",
    )


async def main(args: argparse.Namespace) -> int:
    """Entry point of `channeld emulate feishu`; returns the exit code."""
    try:
        schedule = [float(s) for s in str(args.redelivery).split(",") if s.strip()]
    except ValueError:
        print(f"--redelivery must be numbers, got {args.redelivery!r}", file=sys.stderr)
        return 2
    try:
        await serve(
            args.listen,
            args.app or DEFAULT_APPS,
            ping_interval=args.ping_interval,
            reconnect_interval=args.reconnect_interval,
            reconnect_nonce=args.reconnect_nonce,
            token_ttl=args.token_ttl,
            streaming_timeout=args.streaming_timeout,
            redelivery_schedule=schedule,
            group_msg_scope=args.group_msg_scope,
        )
    except OSError as exc:
        print(f"cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
