"""`channeld channels`: list, show, add, edit, enable, disable, restart and delete channels.

Talks to a running daemon through its admin API. Exit codes: 0 ok, 1 connection or server
error, 2 usage, 3 not found, 4 conflict, 5 invalid settings, 6 unauthorized.

A KEY may be dotted to reach into a section: `--set voice.max_call_seconds=600` or
`--secret voice.zego.server_secret`; the daemon merges a section key by key, so an edit names only
what changes. `--set voice=null` removes the section (and its secrets).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO
from urllib.parse import quote

import aiohttp

from channels import registry
from daemon import admin_token
from daemon.channels_args import (
    DEFAULT_URL,
    TOKEN_ENV,
    URL_ENV,
    common_arguments,
    settings_arguments,
)
from daemon.cli import config_path
from daemon.cli_render import channel_view, list_table, paint, wants_colour
from daemon.config import ConfigurationError

API = "/api/v1"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # what argparse itself exits with
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_INVALID = 5
EXIT_UNAUTHORIZED = 6
EXIT_BY_STATUS = {
    401: EXIT_UNAUTHORIZED,
    404: EXIT_NOT_FOUND,
    409: EXIT_CONFLICT,
    422: EXIT_INVALID,
}
ACTIONS = {"enable": "enabled", "disable": "disabled", "restart": "restarted"}
# setting names that hold secrets on some platform: warned about when given on the command line
SECRET_NAME = re.compile(r"secret|token|password|passwd|(^|_)key$", re.IGNORECASE)


class CliError(Exception):
    """A failure to report on stderr in a few lines, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = list(details)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the `channels` command and its subcommands to the `channeld` parser."""
    common = common_arguments()
    channels = sub.add_parser(
        "channels",
        help="manage channels through the admin API of a running daemon",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    channels.set_defaults(func=main)
    actions = channels.add_subparsers(dest="channels_command", required=True, metavar="COMMAND")
    actions.add_parser("list", parents=[common], help="every channel with its state")
    for name, text in (
        ("show", "one channel: status and settings"),
        ("enable", "switch a channel on"),
        ("disable", "switch a channel off (closes its connection)"),
        ("restart", "close a channel's connection and open a fresh one"),
    ):
        actions.add_parser(name, parents=[common], help=text).add_argument(
            "channel_id", metavar="ID"
        )
    add = actions.add_parser(
        "add", parents=[common], help="create a channel (stored by the daemon)"
    )
    add.add_argument(
        "--id", dest="channel_id", metavar="ID", required=True, help="the new channel's id"
    )
    platforms = registry.names()
    default_type = registry.demo()[0].name
    add.add_argument(
        "--type",
        default=default_type,
        metavar="PLATFORM",
        help=f"platform: {', '.join(platforms)} (default: {default_type})",
    )
    add.add_argument(
        "--agent", metavar="NAME", help="agent that answers (default: the daemon's default)"
    )
    add.add_argument("--disabled", action="store_true", help="create it switched off")
    settings_arguments(add)
    edit = actions.add_parser("edit", parents=[common], help="change an API channel's settings")
    edit.add_argument("channel_id", metavar="ID")
    settings_arguments(edit)
    delete = actions.add_parser("delete", parents=[common], help="delete an API channel")
    delete.add_argument("channel_id", metavar="ID")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


# -- before the request: token, secrets, confirmation (blocking reads, outside the loop) ----------


@dataclass(frozen=True)
class Token:
    """The bearer token to send, and the generated token file it came from (for the 401 hint)."""

    value: str | None
    file: Path | None = None


def _token(args: argparse.Namespace) -> Token:
    """--token-file, --token, $CHANNELD_ADMIN_TOKEN, else the daemon's generated admin.token."""
    if args.token_file is not None:
        try:
            return Token(Path(args.token_file).read_text(encoding="utf-8").strip() or None)
        except OSError as exc:
            raise CliError(f"cannot read --token-file: {exc.strerror}", EXIT_USAGE) from exc
    given: str | None = args.token or os.environ.get(TOKEN_ENV) or None
    if given is not None:
        return Token(given)
    try:
        state_dir = admin_token.configured_state_dir(config_path(args), os.environ)
    except ConfigurationError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    path = admin_token.token_path(state_dir)
    try:
        return Token(admin_token.read_token(path), path)
    except ConfigurationError:
        # absent (a configured token) or not readable by this user: the 401 says what to pass
        return Token(None, path)


def read_secret_files(files: Sequence[tuple[str, Path]]) -> dict[str, str]:
    """Each --secret-file's first line, without its line ending."""
    values: dict[str, str] = {}
    for key, path in files:
        try:
            with path.open(encoding="utf-8") as handle:
                values[key] = handle.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise CliError(f"--secret-file {key}: cannot read {path}: {why}", EXIT_USAGE) from exc
    return values


def warn_secrets_in_arguments(settings: Sequence[tuple[str, Any]], err: TextIO) -> None:
    """A secret given with --set is visible to every local user (ps) and kept in shell history."""
    for key, value in settings:
        if value != "" and SECRET_NAME.search(key):
            print(
                f"channeld: warning: --set {key}=... shows the secret in the process list and "
                f"shell history; use --secret {key} (prompt or stdin) or --secret-file {key}=PATH",
                file=err,
            )


def read_secrets(keys: Sequence[str], stdin: TextIO) -> dict[str, str]:
    """Prompt for each secret without echo on a terminal; else read one line of stdin per key."""
    values: dict[str, str] = {}
    for key in keys:
        if stdin.isatty():
            values[key] = getpass.getpass(f"{key}: ")
        else:
            values[key] = stdin.readline().rstrip("\r\n")
    return values


def nested(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """Dotted keys as nested objects: `voice.zego.app_id=1` gives {"voice": {"zego": {...}}}."""
    body: dict[str, Any] = {}
    for key, value in pairs:
        *parents, last = key.split(".")
        node = body
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[last] = value
    return body


def _body(args: argparse.Namespace, stdin: TextIO, err: TextIO) -> dict[str, Any] | None:
    """The JSON body of add and edit (None for the other commands)."""
    if args.channels_command not in ("add", "edit"):
        return None
    warn_secrets_in_arguments(args.settings, err)
    files = read_secret_files(args.secret_files)
    secrets = read_secrets(args.secrets, stdin)
    body = nested([*args.settings, *files.items(), *secrets.items()])
    if args.channels_command == "edit":
        if not body:
            raise CliError(
                "edit: nothing to change; give --set KEY=VALUE, --secret KEY or "
                "--secret-file KEY=PATH",
                EXIT_USAGE,
            )
        return body
    body.update(id=args.channel_id, type=args.type)
    if args.agent is not None:
        body["agent"] = args.agent
    if args.disabled:
        body["enabled"] = False
    return body


def _confirm_delete(args: argparse.Namespace, stdin: TextIO, err: TextIO) -> None:
    if args.yes:
        return
    if not stdin.isatty():
        raise CliError("delete: stdin is not a terminal; pass --yes to delete", EXIT_USAGE)
    err.write(f"delete channel {args.channel_id!r}? [y/N] ")
    err.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise CliError(f"channel {args.channel_id!r} not deleted")


# -- the request --------------------------------------------------------------------------------


class AdminClient:
    """JSON over HTTP to the admin API; every failure becomes a CliError."""

    def __init__(self, url: str, token: Token, timeout: float) -> None:
        self._url = url.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if token.value is not None:
            self._headers["Authorization"] = f"Bearer {token.value}"
        self._token = token
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=self._timeout)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The decoded answer of a 2xx response (None when empty); CliError otherwise."""
        if self._session is None:
            raise RuntimeError("use AdminClient as an async context manager")
        # every change says JSON, with a body or without: the daemon refuses other media types
        headers = {} if method == "GET" else {"Content-Type": "application/json"}
        try:
            async with self._session.request(
                method, self._url + API + path, json=body, headers=headers
            ) as resp:
                status, reason, text = resp.status, resp.reason or "", await resp.text()
        except TimeoutError as exc:
            raise CliError(f"no answer from {self._url} within {self._timeout:g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            why = _os_reason(exc.os_error)
            raise CliError(f"cannot reach the daemon at {self._url}: {why}") from exc
        except aiohttp.ClientError as exc:
            raise CliError(f"cannot reach the daemon at {self._url}: {exc}") from exc
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = None
            if status < 400:
                raise CliError(f"{self._url} answered HTTP {status} without JSON") from None
        if status >= 400:
            raise _api_error(status, reason, payload, self._token)
        return payload


def _os_reason(error: OSError) -> str:
    # asyncio words a refused connect as "Connect call failed (addr)"; errno says it plainly
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)
    return error.strerror or str(error)  # resolver errors carry negative codes and their own text


def _api_error(status: int, reason: str, payload: Any, token: Token) -> CliError:
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or "message" not in error:
        return CliError(f"HTTP {status} {reason}".rstrip(), EXIT_BY_STATUS.get(status, EXIT_ERROR))
    message = str(error["message"])
    if status == 401:
        hint = f"pass --token or --token-file, or set {TOKEN_ENV}"
        if token.file is not None and token.value is not None:
            hint = f"sent the token in {token.file}; {hint}"
        elif token.file is not None:
            hint += f"; {token.file} is absent or not readable (--config names the daemon's)"
        message += f" ({hint})"
    details = [f"{f.get('path', '?')}: {f.get('message', '')}" for f in error.get("fields") or []]
    return CliError(message, EXIT_BY_STATUS.get(status, EXIT_ERROR), details)


def _base_url(args: argparse.Namespace) -> str:
    configured = admin_token.configured_admin_url(config_path(args))
    url: str = args.url or os.environ.get(URL_ENV) or configured or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise CliError(f"--url must start with http:// or https://, got {url!r}", EXIT_USAGE)
    return url


@dataclass(frozen=True)
class Answer:
    """A command's decoded answer, and the dotted paths of its channel's sections (for `show`)."""

    payload: Any
    sections: frozenset[str] = frozenset()


def sections_of(document: Any, channel_type: str) -> frozenset[str]:
    """Dotted paths of the nested settings models of `channel_type`, from the OpenAPI document.

    A section (`voice`, `voice.zego`) is shown key by key; any other object is one value.
    """
    schemas = (
        document.get("components", {}).get("schemas", {}) if isinstance(document, dict) else {}
    )

    def target(schema: Any) -> dict[str, Any]:
        ref = schema.get("$ref", "") if isinstance(schema, dict) else ""
        found = schemas.get(ref.rpartition("/")[2], {}) if ref else {}
        return found if isinstance(found, dict) else {}

    def walk(model: dict[str, Any], prefix: str, depth: int) -> set[str]:
        found: set[str] = set()
        for name, prop in (model.get("properties") or {}).items():
            branches = prop.get("anyOf", [prop]) if isinstance(prop, dict) else []
            inner = next((t for b in branches if (t := target(b)).get("properties")), None)
            if inner is not None and depth < 8:  # a schema that refers to itself ends somewhere
                found |= {prefix + name, *walk(inner, f"{prefix}{name}.", depth + 1)}
        return found

    mapping = schemas.get("ChannelSettings", {}).get("discriminator", {}).get("mapping", {})
    ref = mapping.get(channel_type)
    return frozenset(walk(target({"$ref": ref}), "", 0)) if isinstance(ref, str) else frozenset()


async def call(
    args: argparse.Namespace, url: str, token: Token, body: dict[str, Any] | None
) -> Answer:
    """Sends the request a command needs (and, to show a channel, reads its sections)."""
    command: str = args.channels_command
    async with AdminClient(url, token, args.timeout) as client:
        if command == "list":
            return Answer(await client.request("GET", "/channels"))
        if command == "add":
            payload = await client.request("POST", "/channels", body)
        else:
            path = "/channels/" + quote(args.channel_id, safe="")
            if command == "show":
                payload = await client.request("GET", path)
            elif command == "edit":
                payload = await client.request("PATCH", path, body)
            elif command == "delete":
                return Answer(await client.request("DELETE", path))
            else:
                return Answer(await client.request("POST", f"{path}/{command}"))
        if args.json or not isinstance(payload, dict):
            return Answer(payload)
        document = await client.request("GET", "/openapi.json")
        return Answer(payload, sections_of(document, str(payload.get("type"))))


# -- output -------------------------------------------------------------------------------------


def render(args: argparse.Namespace, answer: Answer, *, colour: bool) -> str | None:
    """What a successful command prints: the raw JSON with --json, else a view for people."""
    command: str = args.channels_command
    payload = answer.payload
    if args.json:
        return None if payload is None else json.dumps(payload, indent=2, ensure_ascii=False)
    if command == "list":
        return list_table(payload["channels"], colour=colour)
    if command in ACTIONS:
        state = str(payload["status"]["state"])
        return f"channel {payload['id']!r} {ACTIONS[command]}: {paint(state, colour)}"
    if command == "delete":
        return f"channel {args.channel_id!r} deleted"
    return channel_view(payload, colour=colour, sections=answer.sections)


def main(args: argparse.Namespace) -> int:
    """Entry point of `channeld channels`; returns the exit code."""
    out, err, stdin = sys.stdout, sys.stderr, sys.stdin
    try:
        url = _base_url(args)
        token = _token(args)
        body = _body(args, stdin, err)
        if args.channels_command == "delete":
            _confirm_delete(args, stdin, err)
        answer = asyncio.run(call(args, url, token, body))
    except CliError as exc:
        print(f"channeld: {exc.message}", file=err)
        for line in exc.details:
            print(f"  {line}", file=err)
        return exc.code
    text = render(args, answer, colour=wants_colour(out.isatty(), os.environ))
    if text is not None:
        print(text, file=out)
    return EXIT_OK
