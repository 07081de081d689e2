"""`channeld emulate easemob`: serve a local Easemob app on one port until cancelled."""

from __future__ import annotations

import argparse

from channels.easemob.emulator.server import (
    DEFAULT_APP,
    DEFAULT_BOTS,
    DEFAULT_CALLBACK,
    DEFAULT_CALLBACK_SECRET,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_ORG,
    DEFAULT_TOKEN_TTL,
    EasemobEmulator,
)
from channels.easemob.emulator.state import Bot
from channels.emulator import cli

DEFAULT_LISTEN = "127.0.0.1:8792"
OPTIONS: list[cli.Option] = [
    ("--org", DEFAULT_ORG, "org_name: the first half of the app key org#app"),
    ("--app", DEFAULT_APP, "app_name: the second half of the app key"),
    ("--client-id", DEFAULT_CLIENT_ID, "the app's client_id (for /token)"),
    ("--client-secret", DEFAULT_CLIENT_SECRET, "the app's client_secret (for /token)"),
    ("--callback", DEFAULT_CALLBACK, "the callback rules' URL ('' sends no callbacks)"),
    ("--callback-secret", DEFAULT_CALLBACK_SECRET, "the callback rules' secret (signs security)"),
    ("--callbacks", "both", "which callbacks a user's message fires: pre, post or both"),
    ("--rewrite", False, "enable message rewriting (off: rewrites are refused with 403)"),
    ("--token-ttl", DEFAULT_TOKEN_TTL, "seconds an app token lives at most (console setting)"),
    ("--presend-wait-ms", 200, "the pre-send rule's wait time for a verdict, in ms"),
    ("--rate-limit", 100, "REST sends (and rewrites) a second before 429 (0: no limit)"),
    ("--settle", 3.0, "seconds without a rewrite after which `channeld chat` shows a reply final"),
]


# `--app` is the Easemob app name here: the bot users are named by `--bot-user`
COMMAND = cli.Command(
    EasemobEmulator,
    default_listen=DEFAULT_LISTEN,
    default_apps=DEFAULT_BOTS,
    app=Bot,
    app_metavar="NAME",
    app_help="a bot user the emulator knows (repeatable; default aibot)",
    options=OPTIONS,
    app_flag="--bot-user",
    split_app=False,
)
serve = COMMAND.serve
add_arguments = COMMAND.add_arguments


async def main(args: argparse.Namespace) -> int:
    """Entry point of `channeld emulate easemob`; returns the exit code."""
    return await COMMAND.run(
        args,
        org=args.org,
        app=args.app,
        client_id=args.client_id,
        client_secret=args.client_secret,
        callback=args.callback,
        callback_secret=args.callback_secret,
        callbacks=args.callbacks,
        rewrite=args.rewrite,
        token_ttl=args.token_ttl,
        presend_wait=args.presend_wait_ms / 1000,
        rate_limit=args.rate_limit,
        settle=args.settle,
    )
