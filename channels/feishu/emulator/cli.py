"""`channeld emulate feishu`: serve a local Feishu/Lark on one port until cancelled."""

from __future__ import annotations

import argparse
import sys

from channels.emulator import cli
from channels.feishu.emulator.contact import DENIALS
from channels.feishu.emulator.server import DEFAULT_APP_ID, DEFAULT_APPS, FeishuEmulator
from channels.feishu.emulator.state import FeishuApp

DEFAULT_LISTEN = "127.0.0.1:8790"
OPTIONS: list[cli.Option] = [
    ("--ping-interval", 120.0, "PingInterval handed to clients"),
    ("--reconnect-interval", 120.0, "ReconnectInterval for clients"),
    ("--reconnect-nonce", 30.0, "ReconnectNonce (jitter) for clients"),
    ("--token-ttl", 7200, "tenant_access_token lifetime in seconds"),
    ("--streaming-timeout", 600.0, "seconds after which a card's streaming mode closes by itself"),
    (
        "--redelivery",
        "15,300,3600,21600",
        "seconds between pushes of an unacked event (comma-separated; empty: never)",
    ),
    (
        "--group-msg-scope",
        False,
        "deliver group messages that do not @ the bot (the im:message.group_msg scope)",
    ),
    (
        "--contact-denied",
        "",
        "answer the contacts user-info API as for an app without the permission: 'scope' (no "
        "contacts API scope), 'range' (the sender outside its contacts range) or 'fields' (no "
        "e-mail, mobile and employee number field permissions)",
    ),
]


COMMAND = cli.Command(
    FeishuEmulator,
    default_listen=DEFAULT_LISTEN,
    default_apps=DEFAULT_APPS,
    app=FeishuApp,
    app_metavar="APP_ID:SECRET[:BOT_NAME]",
    app_help=f"an app the emulator accepts (repeatable; default {DEFAULT_APP_ID})",
    options=OPTIONS,
)
serve = COMMAND.serve
add_arguments = COMMAND.add_arguments


async def main(args: argparse.Namespace) -> int:
    """Entry point of `channeld emulate feishu`; returns the exit code."""
    try:
        schedule = [float(s) for s in str(args.redelivery).split(",") if s.strip()]
    except ValueError:
        print(f"--redelivery must be numbers, got {args.redelivery!r}", file=sys.stderr)
        return 2
    if args.contact_denied not in ("", *DENIALS):
        print(f"--contact-denied must be one of {', '.join(DENIALS)}", file=sys.stderr)
        return 2
    return await COMMAND.run(
        args,
        ping_interval=args.ping_interval,
        reconnect_interval=args.reconnect_interval,
        reconnect_nonce=args.reconnect_nonce,
        token_ttl=args.token_ttl,
        streaming_timeout=args.streaming_timeout,
        redelivery_schedule=schedule,
        group_msg_scope=args.group_msg_scope,
        contact_denied=args.contact_denied,
    )
