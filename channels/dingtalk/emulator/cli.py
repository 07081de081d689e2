"""`channeld emulate dingtalk`: serve a local DingTalk on one port until cancelled."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from channels.dingtalk.emulator.server import DEFAULT_APPS, DEFAULT_TEMPLATE, DingTalkEmulator
from channels.dingtalk.emulator.state import AppSpec, EmulatorApp, to_app

DEFAULT_LISTEN = "127.0.0.1:8788"


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, got {listen!r}")
    return host or "127.0.0.1", int(port)


async def serve(
    listen: str = DEFAULT_LISTEN,
    apps: Iterable[AppSpec] = DEFAULT_APPS,
    *,
    out: TextIO | None = None,
    **options: Any,
) -> None:
    """Runs an emulator until cancelled, printing its URL and the app credentials to use."""
    out = out or sys.stdout
    host, port = _split_listen(listen)
    app_list = [to_app(a) for a in apps]
    emulator = DingTalkEmulator(app_list, **options)
    url = await emulator.start(host, port)
    try:
        print(f"DingTalk emulator listening on {url}", file=out)
        print(f"  DINGTALK_OPENAPI_ENDPOINT={url}  (api_base for channeld)", file=out)
        for app in app_list:
            # These are the emulator's own throwaway credentials, printed so a user can copy them.
            print(
                f"  app client_id={app.client_id} client_secret={app.client_secret} "
                f"robot_code={app.effective_robot_code}",
                file=out,
            )
        print(f"  card templates: {', '.join(emulator.state.templates)}", file=out)
        print(f"  control plane: {url}/_emulator/state", file=out, flush=True)
        await asyncio.Event().wait()
    finally:
        await emulator.stop()


def _app_arg(value: str) -> EmulatorApp:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise argparse.ArgumentTypeError("expected CLIENT_ID:SECRET[:ROBOT_CODE]")
    return EmulatorApp(*parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `channeld emulate dingtalk`."""
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help="HOST:PORT (port 0: any free port)"
    )
    parser.add_argument(
        "--app",
        action="append",
        type=_app_arg,
        metavar="CLIENT_ID:SECRET[:ROBOT_CODE]",
        help="an app the emulator accepts (repeatable; default ding-emulator:secret-emulator)",
    )
    parser.add_argument(
        "--template",
        action="append",
        metavar="TEMPLATE_ID[=CONTENT_KEY]",
        help=f"known card template and its streaming key (repeatable; default {DEFAULT_TEMPLATE})",
    )
    parser.add_argument(
        "--ping-interval", type=float, default=30.0, help="seconds between SYSTEM pings"
    )
    parser.add_argument(
        "--session-validity", type=float, default=5400.0, help="sessionWebhook validity in seconds"
    )
    parser.add_argument(
        "--token-ttl", type=int, default=7200, help="access token expireIn in seconds"
    )
    parser.add_argument(
        "--deliver-unmentioned",
        action="store_true",
        help="also deliver group messages that do not @ the bot (DingTalk does not)",
    )


def _templates(values: list[str] | None) -> Mapping[str, str]:
    result: dict[str, str] = {}
    for value in values or [DEFAULT_TEMPLATE]:
        template_id, _, key = value.partition("=")
        result[template_id] = key or "content"
    return result


async def main(args: argparse.Namespace) -> int:
    """Entry point of `channeld emulate dingtalk`; returns the exit code."""
    try:
        await serve(
            args.listen,
            args.app or DEFAULT_APPS,
            templates=_templates(args.template),
            ping_interval=args.ping_interval,
            session_validity=args.session_validity,
            token_ttl=args.token_ttl,
            deliver_unmentioned=args.deliver_unmentioned,
        )
    except OSError as exc:
        print(f"cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
