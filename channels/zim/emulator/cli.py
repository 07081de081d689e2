"""`channeld emulate zim`: serve a local ZEGO ZIM app on one port until cancelled."""

from __future__ import annotations

import argparse
import sys

from channels.emulator import cli
from channels.zim.emulator.server import (
    CALLBACK_MODES,
    DEFAULT_APP_ID,
    DEFAULT_CALLBACK,
    DEFAULT_ROBOTS,
    DEFAULT_SECRET,
    ZimEmulator,
)
from channels.zim.emulator.state import Robot

DEFAULT_LISTEN = "127.0.0.1:8791"
OPTIONS: list[cli.Option] = [
    ("--app-id", DEFAULT_APP_ID, "the AppId API calls must name"),
    ("--server-secret", DEFAULT_SECRET, "the ServerSecret that signs API calls and callbacks"),
    ("--callback-secret", "", "sign callbacks with this instead of the ServerSecret"),
    ("--callback", DEFAULT_CALLBACK, "where callbacks are POSTed ('' for nowhere)"),
    ("--callback-mode", "send_msg", "the callback of a user's message: send_msg, bot_msg, both"),
    ("--retry-scale", 1.0, "multiplies the 2/4/8/16/32 s callback retry schedule"),
    ("--url-encode", False, "URL-encode msg_body in callbacks of users' messages"),
    ("--registered", False, "the robots are registered from the start"),
    ("--exists-form", "list", "RobotRegister's 'already exists': list (Code 0 + ErrorList), code"),
    ("--qps", 20, "app-wide requests per sliding second for sends and edits together"),
    ("--max-message-bytes", 2000, "the largest text MessageBody.Message in UTF-8 bytes"),
    ("--settle", 2.0, "seconds without an edit before the chat view shows a message as done"),
]


class _Command(cli.Command[ZimEmulator]):
    """The shared command; `--registered` says whether the robots exist from the start."""

    def apps(self, args: argparse.Namespace) -> list[Robot]:
        """The robots `args` name (else the default one), registered as `--registered` says."""
        ids = [str(r) for r in args.robot or DEFAULT_ROBOTS]
        return [Robot(robot_id, args.registered) for robot_id in ids]


COMMAND = _Command(
    ZimEmulator,
    default_listen=DEFAULT_LISTEN,
    default_apps=DEFAULT_ROBOTS,
    app=str,
    app_metavar="ID",
    app_help="a robot id users write to, starting @RBT# (repeatable; default @RBT#assistant)",
    options=OPTIONS,
    app_flag="--robot",
    split_app=False,
)
serve = COMMAND.serve
add_arguments = COMMAND.add_arguments


async def main(args: argparse.Namespace) -> int:
    """Entry point of `channeld emulate zim`; returns the exit code."""
    if args.callback_mode not in CALLBACK_MODES:
        print(f"--callback-mode must be one of {', '.join(CALLBACK_MODES)}", file=sys.stderr)
        return 2
    return await COMMAND.run(
        args,
        app_id=args.app_id,
        server_secret=args.server_secret,
        callback_secret=args.callback_secret or None,
        callback=args.callback,
        callback_mode=args.callback_mode,
        retry_scale=args.retry_scale,
        url_encode=args.url_encode,
        exists_form=args.exists_form,
        qps=args.qps,
        max_message_bytes=args.max_message_bytes,
        settle=args.settle,
    )
