"""The arguments of `channeld channels`: shared options, settings and secrets, their parsers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8787"
URL_ENV = "CHANNELD_ADMIN_URL"
TOKEN_ENV = "CHANNELD_ADMIN_TOKEN"  # noqa: S105 (the variable's name, not a token)
DEFAULT_TIMEOUT = 10.0  # seconds per request; restart waits for the old connection to close


def setting(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` of --set; the value is JSON when it parses (numbers, booleans), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        # the argument is not echoed back: it may be a secret with a typo
        raise argparse.ArgumentTypeError("--set expects KEY=VALUE")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def secret_file(text: str) -> tuple[str, Path]:
    """`KEY=PATH` of --secret-file."""
    key, sep, path = text.partition("=")
    if not sep or not key.strip() or not path:
        raise argparse.ArgumentTypeError("--secret-file expects KEY=PATH")
    return key.strip(), Path(path)


def seconds(text: str) -> float:
    """A positive number of seconds (--timeout)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def common_arguments() -> argparse.ArgumentParser:
    """Options every `channeld channels` command takes: where the daemon is, how to log in."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help=f"admin API base URL (default: ${URL_ENV}, else the [admin] listen of --config, "
        f"else {DEFAULT_URL})",
    )
    token = common.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        help=f"bearer token (default: ${TOKEN_ENV}, else the admin.token the daemon generated); "
        "arguments show in ps, prefer --token-file",
    )
    token.add_argument(
        "--token-file", type=Path, metavar="PATH", help="read the bearer token from this file"
    )
    common.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        help="without a token option: use the admin.token the daemon generated in this config's "
        "state directory (default: $CHANNELD_CONFIG, or ./channeld.toml if present)",
    )
    common.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        default=DEFAULT_TIMEOUT,
        help=f"seconds per request (default: {DEFAULT_TIMEOUT:g})",
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON, for scripts")
    return common


def settings_arguments(parser: argparse.ArgumentParser) -> None:
    """--set, --secret and --secret-file of add and edit."""
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        type=setting,
        default=[],
        metavar="KEY=VALUE",
        help="a platform setting; VALUE is JSON when it parses (quote '\"123\"' for a string)",
    )
    parser.add_argument(
        "--secret",
        dest="secrets",
        action="append",
        default=[],
        metavar="KEY",
        help="a secret setting, prompted without echo (or one line of stdin each when piped)",
    )
    parser.add_argument(
        "--secret-file",
        dest="secret_files",
        action="append",
        type=secret_file,
        default=[],
        metavar="KEY=PATH",
        help="a secret setting read from a file (its first line); keeps it out of ps and history",
    )
