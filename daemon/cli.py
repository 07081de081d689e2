"""`channeld` command line: run, check-config, migrate, emulate, chat, channels, users."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from channels import registry
from channels.platform import EmulatorCommand
from daemon.config import EXIT_CONFIG_ERROR, ConfigurationError, Settings, load, loopback_listen

DEFAULT_CONFIG = Path("channeld.toml")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def config_path(args: argparse.Namespace) -> Path | None:
    """An explicit --config must exist; otherwise ./channeld.toml if present, else defaults."""
    if args.config is not None:
        return Path(args.config)
    env = os.environ.get("CHANNELD_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def _load(args: argparse.Namespace) -> Settings:
    return load(config_path(args))


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    # third-party chatter that would drown the daemon's own lines
    for noisy in ("websockets", "aiohttp.access", "httpx", "openai", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.app import run

    settings = _load(args)
    _setup_logging(settings.daemon.log_level)
    return asyncio.run(run(settings, config_path=config_path(args)))


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args)
    path = config_path(args)
    print(
        f"configuration OK ({path or 'embedded defaults'}): "
        f"{len(settings.channels)} channel(s), {len(settings.agents)} agent(s), "
        f"database {settings.daemon.effective_database_url.split('://')[0]}"
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from storage.engine import migrate, private_directory

    settings = _load(args)
    _setup_logging(settings.daemon.log_level)
    private_directory(settings.daemon.state_dir)
    asyncio.run(migrate(settings.daemon.effective_database_url))
    print("database migrated to the latest schema")
    return 0


def _check_emulator_listen(args: argparse.Namespace) -> None:
    """The same rule as `[emulator] listen`: loopback HOST:PORT only."""
    try:
        loopback_listen(args.listen)
    except ValueError as exc:
        raise ConfigurationError(f"--listen {exc}") from None


def cmd_emulate(args: argparse.Namespace) -> int:
    command: EmulatorCommand = args.emulator_command()
    _check_emulator_listen(args)
    _setup_logging("INFO")
    return asyncio.run(command.main(args))


class _EmulatorParser(argparse.ArgumentParser):
    """`channeld emulate PLATFORM`: the emulator and its options load only once it is chosen."""

    def __init__(self, *args: Any, command: Callable[[], EmulatorCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._command = command
        self.set_defaults(func=cmd_emulate, emulator_command=command)
        self._loaded = False

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        # argparse hands the chosen subcommand its arguments here, --help included
        if not self._loaded:
            self._loaded = True
            self._command().add_arguments(self)
        return super().parse_known_args(*args, **kwargs)


def cmd_chat(args: argparse.Namespace) -> int:
    from daemon.chat import main as chat_main

    code: int = asyncio.run(chat_main(args))
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="channeld", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", "-c", help="TOML config file (default: ./channeld.toml if present)"
        )
        return p

    with_config(sub.add_parser("run", help="run the daemon")).set_defaults(func=cmd_run)
    with_config(
        sub.add_parser("check-config", help="validate the configuration and exit")
    ).set_defaults(func=cmd_check_config)
    with_config(sub.add_parser("migrate", help="apply database migrations and exit")).set_defaults(
        func=cmd_migrate
    )
    emulate = sub.add_parser("emulate", help="run a local platform emulator")
    emulators = emulate.add_subparsers(dest="platform", required=True, parser_class=_EmulatorParser)
    for platform in registry.platforms():
        if platform.emulator is not None:
            emulators.add_parser(
                platform.name, help=platform.emulator.help, command=platform.emulator.command
            )
    for extra in registry.extra_emulators():
        emulators.add_parser(extra.name, help=extra.help, command=extra.command)
    titles = [p.title for p in registry.platforms() if p.emulator is not None]
    chat = sub.add_parser("chat", help=f"talk to the bot as a simulated {' or '.join(titles)} user")
    from daemon.chat import add_arguments as chat_arguments

    chat_arguments(chat)
    chat.set_defaults(func=cmd_chat)
    from daemon.channels_cli import register as register_channels

    register_channels(sub)
    from daemon.users_cli import register as register_users

    register_users(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigurationError as exc:
        print(f"channeld: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
