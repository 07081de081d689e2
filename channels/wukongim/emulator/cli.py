"""`channeld emulate wukongim`: serve a local WuKongIM on one port until cancelled."""

from __future__ import annotations

import argparse

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


COMMAND = cli.Command(
    WuKongIMEmulator,
    default_listen=DEFAULT_LISTEN,
    default_apps=DEFAULT_BOTS,
    app=Bot,
    app_metavar="UID",
    app_help="a bot uid the emulator knows (repeatable; default aibot)",
    options=OPTIONS,
    app_flag="--bot",
    split_app=False,
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
