"""`channeld emulate dingtalk`: serve a local DingTalk on one port until cancelled."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from channels.dingtalk.emulator.server import DEFAULT_APPS, DEFAULT_TEMPLATE, DingTalkEmulator
from channels.dingtalk.emulator.state import PROFILE_ACCESS, EmulatorApp
from channels.emulator import cli

DEFAULT_LISTEN = "127.0.0.1:8788"
OPTIONS: list[cli.Option] = [
    ("--ping-interval", 30.0, "seconds between SYSTEM pings"),
    ("--session-validity", 5400.0, "sessionWebhook validity in seconds"),
    ("--token-ttl", 7200, "access token expireIn in seconds"),
    (
        "--deliver-unmentioned",
        False,
        "also deliver group messages that do not @ the bot (DingTalk does not)",
    ),
]
COMMAND = cli.Command(
    DingTalkEmulator,
    default_listen=DEFAULT_LISTEN,
    default_apps=DEFAULT_APPS,
    app=EmulatorApp,
    app_metavar="CLIENT_ID:SECRET[:ROBOT_CODE]",
    app_help="an app the emulator accepts (repeatable; default ding-emulator:secret-emulator)",
    options=OPTIONS,
)
serve = COMMAND.serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `channeld emulate dingtalk`."""
    COMMAND.add_arguments(parser)
    parser.add_argument(
        "--template",
        action="append",
        metavar="TEMPLATE_ID[=CONTENT_KEY]",
        help=f"known card template and its streaming key (repeatable; default {DEFAULT_TEMPLATE})",
    )
    parser.add_argument(
        "--profile-access",
        choices=PROFILE_ACCESS,
        default="full",
        help="what apps may read of members (topapi/v2/user/get): full, basic (no e-mail or "
        "mobile) or none (the permission-denied answer); default full",
    )


def _templates(values: list[str] | None) -> Mapping[str, str]:
    result: dict[str, str] = {}
    for value in values or [DEFAULT_TEMPLATE]:
        template_id, _, key = value.partition("=")
        result[template_id] = key or "content"
    return result


async def main(args: argparse.Namespace) -> int:
    """Entry point of `channeld emulate dingtalk`; returns the exit code."""
    return await COMMAND.run(
        args,
        templates=_templates(args.template),
        ping_interval=args.ping_interval,
        session_validity=args.session_validity,
        token_ttl=args.token_ttl,
        deliver_unmentioned=args.deliver_unmentioned,
        profile_access=args.profile_access,
    )
