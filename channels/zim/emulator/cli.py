"""`channeld emulate zim`: serve a local ZEGO ZIM app on one port until cancelled."""

from __future__ import annotations

import argparse
import sys
from typing import Any

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
    """The shared command with ZIM's `--robot ID` in place of `--app ID:SECRET`."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--listen", default=self.default_listen, help="HOST:PORT (port 0: any free port)"
        )
        parser.add_argument(
            "--robot",
            action="append",
            metavar="ID",
            help="a robot id users write to, starting @RBT# (repeatable; default @RBT#assistant)",
        )
        for flag, default, help_text in OPTIONS:
            if default is False:
                parser.add_argument(flag, action="store_true", help=help_text)
            else:
                parser.add_argument(flag, type=type(default), default=default, help=help_text)

    async def run(self, args: argparse.Namespace, **options: Any) -> int:
        """Serves as `args` say; 1 when the address cannot be bound, else 0."""
        ids = [str(r) for r in args.robot or DEFAULT_ROBOTS]
        robots = [Robot(robot_id, args.registered) for robot_id in ids]
        try:
            await self.serve(args.listen, robots, **options)
        except OSError as exc:
            print(f"cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        return 0


COMMAND = _Command(
    ZimEmulator,
    default_listen=DEFAULT_LISTEN,
    default_apps=DEFAULT_ROBOTS,
    app=Robot,
    app_metavar="ID",
    app_help="a robot id",
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
