"""What every `channeld emulate PLATFORM` command shares: `--listen`, the repeatable option naming
the apps (or bots, or robots), serving until interrupted, and the exit code when the port cannot
be bound."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterable
from typing import Any, Generic, TextIO, TypeVar

from channels.emulator.server import EmulatorServer

E = TypeVar("E", bound=EmulatorServer[Any, Any, Any, Any])


def split_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets) as a host and a port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


Option = tuple[str, Any, str]  # flag, default (its type is the option's; False: a switch), help


class Command(Generic[E]):
    """`channeld emulate PLATFORM`: its options, and serving the platform's emulator in the
    caller's loop until cancelled, after printing what a user needs to connect."""

    def __init__(
        self,
        make: Callable[..., E],
        *,
        default_listen: str,
        default_apps: Iterable[Any],
        app: Callable[..., Any],
        app_metavar: str,
        app_help: str,
        options: Iterable[Option] = (),
        app_flag: str = "--app",
        split_app: bool = True,
    ) -> None:
        self._make = make
        self.default_listen = default_listen
        self._default_apps = tuple(default_apps)
        self._app = app
        self._app_metavar = app_metavar
        self._app_help = app_help
        self._options = tuple(options)
        self._app_flag = app_flag
        self._app_dest = app_flag.removeprefix("--").replace("-", "_")
        # split: `ID:SECRET[:EXTRA]` goes to `app` in parts; else the whole value is one id
        self._split_app = split_app

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """`--listen HOST:PORT`, the repeatable app option and the platform's options."""
        parser.add_argument(
            "--listen", default=self.default_listen, help="HOST:PORT (port 0: any free port)"
        )
        parser.add_argument(
            self._app_flag,
            action="append",
            type=self._parse_app if self._split_app else self._app,
            metavar=self._app_metavar,
            help=self._app_help,
        )
        for flag, default, help_text in self._options:
            if default is False:
                parser.add_argument(flag, action="store_true", help=help_text)
            else:
                parser.add_argument(flag, type=type(default), default=default, help=help_text)

    def _parse_app(self, value: str) -> Any:
        parts = value.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise argparse.ArgumentTypeError(f"expected {self._app_metavar}")
        return self._app(*parts)

    def apps(self, args: argparse.Namespace) -> Iterable[Any] | None:
        """The apps `args` name; None: the defaults."""
        apps: Iterable[Any] | None = getattr(args, self._app_dest)
        return apps

    async def serve(
        self,
        listen: str | None = None,
        apps: Iterable[Any] | None = None,
        *,
        out: TextIO | None = None,
        **options: Any,
    ) -> None:
        """Serves until cancelled; `options` go to the emulator's constructor."""
        out = out or sys.stdout
        emulator = self._make(self._default_apps if apps is None else apps, **options)
        url = await emulator.start(*split_listen(listen or self.default_listen))
        try:
            for line in emulator.describe():
                print(line, file=out)
            print(f"  control plane: {url}/_emulator/state", file=out, flush=True)
            await asyncio.Event().wait()
        finally:
            await emulator.stop()

    async def run(self, args: argparse.Namespace, **options: Any) -> int:
        """Serves as `args` say; 1 when the address cannot be bound, else 0."""
        try:
            await self.serve(args.listen, self.apps(args), **options)
        except OSError as exc:
            print(f"cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        return 0
