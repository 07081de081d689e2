"""`channeld emulate wukongim`: serve a local WuKongIM on one port until cancelled."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from channels.emulator import cli
from channels.wukongim.emulator.server import (
    DEFAULT_BOTS,
    DEFAULT_VERSION,
    DEFAULT_WEBHOOK,
    WuKongIMEmulator,
)
from channels.wukongim.emulator.state import Bot

DEFAULT_LISTEN = "127.0.0.1:5001"  # the real server's HTTP API port
OPTIONS: list[cli.Option] = [
    ("--webhook", DEFAULT_WEBHOOK, "webhook.httpAddr: where messages are pushed ('' for nowhere)"),
    ("--token", "", "managerToken: API calls must send it in the `token` header ('' for none)"),
    ("--version", DEFAULT_VERSION, "the version /varz reports (before v2.2.4: no event API)"),
    ("--push-interval", 0.5, "webhook.msgNotifyEventPushInterval in seconds"),
    ("--count-per-push", 100, "webhook.msgNotifyEventCountPerPush: a batch this full goes at once"),
    ("--retry-max", 5, "webhook.msgNotifyEventRetryMaxCount: pushes of a message before it drops"),
    ("--retry-pause", 1.0, "seconds the pusher sleeps after a failed push"),
]


class _Command(cli.Command[WuKongIMEmulator]):
    """The shared command with WuKongIM's `--bot UID` in place of `--app ID:SECRET`."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--listen", default=self.default_listen, help="HOST:PORT (port 0: any free port)"
        )
        parser.add_argument(
            "--bot",
            action="append",
            type=Bot,
            metavar="UID",
            help="a bot uid the emulator knows (repeatable; default aibot)",
        )
        for flag, default, help_text in OPTIONS:
            parser.add_argument(flag, type=type(default), default=default, help=help_text)

    async def run(self, args: argparse.Namespace, **options: Any) -> int:
        """Serves as `args` say; 1 when the address cannot be bound, else 0."""
        try:
            await self.serve(args.listen, args.bot, **options)
        except OSError as exc:
            print(f"cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        return 0


COMMAND = _Command(
    WuKongIMEmulator,
    default_listen=DEFAULT_LISTEN,
    default_apps=DEFAULT_BOTS,
    app=Bot,
    app_metavar="UID",
    app_help="a bot uid",
)
serve = COMMAND.serve
add_arguments = COMMAND.add_arguments


async def main(args: argparse.Namespace) -> int:
    """Entry point of `channeld emulate wukongim`; returns the exit code."""
    return await COMMAND.run(
        args,
        webhook=args.webhook,
        token=args.token or None,
        version=args.version,
        push_interval=args.push_interval,
        count_per_push=args.count_per_push,
        retry_max=args.retry_max,
        retry_pause=args.retry_pause,
    )
