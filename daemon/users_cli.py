"""`channeld users`: list, show, link, unlink, block and unblock the people who write to the bots.

Talks to a running daemon through its admin API, with the options and exit codes of
`channeld channels` (0 ok, 1 connection or server error, 2 usage, 3 not found, 5 invalid,
6 unauthorized). An identity is one IM account (platform, tenant, the platform's id of the
person); `show` lists a person's identities with the ids that `link` and `unlink` take.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from daemon.channels_args import common_arguments
from daemon.channels_cli import EXIT_OK, AdminClient, CliError, Token, _base_url, _token
from daemon.cli_render import EMPTY, truncate, wants_colour, width

USER_COLUMNS = ("ID", "NAME", "EMAIL", "SOURCE", "BLOCKED", "LAST SEEN")
IDENTITY_COLUMNS = ("IDENTITY", "PLATFORM", "TENANT", "PLATFORM USER ID", "DISPLAY NAME")
NAME_WIDTH = 40
BOLD_RED = "\x1b[1;31m{}\x1b[0m"  # a blocked person, as a failed channel


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the `users` command and its subcommands to the `channeld` parser."""
    common = common_arguments()
    users = sub.add_parser(
        "users",
        help="people and their IM identities, through the admin API of a running daemon",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    users.set_defaults(func=main)
    actions = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    listing = actions.add_parser(
        "list", parents=[common], help="people, the most recently seen first"
    )
    listing.add_argument(
        "--search", "-s", metavar="TEXT", help="part of a name, e-mail or platform user id"
    )
    listing.add_argument(
        "--limit", type=int, default=100, metavar="N", help="at most N people (default: 100)"
    )
    for name, text in (
        ("show", "one person: e-mail, groups, last seen and identities"),
        ("block", "block a person: told so once a day, nothing reaches an agent"),
        ("unblock", "unblock a person"),
    ):
        actions.add_parser(name, parents=[common], help=text).add_argument("user_id", metavar="ID")
    for name, text in (
        ("link", "move an identity (see `show`) to this person"),
        ("unlink", "give one of this person's identities a new user of its own"),
    ):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("user_id", metavar="ID")
        action.add_argument("identity_id", metavar="IDENTITY", type=int)


async def call(args: argparse.Namespace, url: str, token: Token) -> Any:
    """Sends the request the command needs; its decoded answer."""
    command: str = args.users_command
    async with AdminClient(url, token, args.timeout) as client:
        if command == "list":
            query = {"limit": str(args.limit)}
            if args.search:
                query["search"] = args.search
            return await client.request("GET", f"/users?{urlencode(query)}")
        path = "/users/" + quote(args.user_id, safe="")
        if command == "show":
            return await client.request("GET", path)
        if command == "link":
            return await client.request(
                "POST", f"{path}/identities", {"identity_id": args.identity_id}
            )
        if command == "unlink":
            return await client.request("DELETE", f"{path}/identities/{args.identity_id}")
        return await client.request("POST", f"{path}/{command}")


def _text(value: Any) -> str:
    return EMPTY if value is None or value == "" else str(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, colour: bool = False) -> str:
    """Columns aligned by terminal width (names may be CJK); a blocked person's BLOCKED cell is
    bold red on request."""
    widths = [max(width(cell) for cell in column) for column in zip(columns, *rows, strict=True)]
    lines = []
    for index, row in enumerate([columns, *rows]):
        cells = []
        for name, cell, size in zip(columns, row, widths, strict=True):
            pad = " " * (size - width(cell))
            # colour after measuring: escape codes take no columns on screen
            red = colour and index and name == "BLOCKED" and cell == "yes"
            cells.append((BOLD_RED.format(cell) if red else cell) + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def users_table(users: Sequence[Mapping[str, Any]], *, colour: bool) -> str:
    """The `list` table."""
    if not users:
        return "no users"
    rows = [
        (
            str(u["id"]),
            truncate(_text(u.get("name")), NAME_WIDTH),
            _text(u.get("email")),
            _text(u.get("auth_source")),
            "yes" if u.get("blocked") else "no",
            _text(u.get("last_seen_at")),
        )
        for u in users
    ]
    return table(USER_COLUMNS, rows, colour=colour)


def user_view(user: Mapping[str, Any], *, colour: bool) -> str:
    """The `show` view: the person, then one line per identity."""
    blocked = "yes" if user.get("blocked") else "no"
    if colour and user.get("blocked"):
        blocked = BOLD_RED.format(blocked)
    pairs = [
        ("id", _text(user.get("id"))),
        ("name", _text(user.get("name"))),
        ("email", _text(user.get("email"))),
        ("groups", ", ".join(user.get("groups") or []) or EMPTY),
        ("auth source", _text(user.get("auth_source"))),
        ("directory id", _text(user.get("directory_id"))),
        ("blocked", blocked),
        ("last seen at", _text(user.get("last_seen_at"))),
        ("created at", _text(user.get("created_at"))),
    ]
    size = max(len(key) for key, _ in pairs)
    lines = [f"{key:<{size}}  {value}" for key, value in pairs]
    identities = user.get("identities") or []
    if not identities:
        return "\n".join([*lines, "identities: none"])
    rows = [
        (
            str(i["id"]),
            _text(i.get("platform")),
            _text(i.get("tenant")),
            _text(i.get("platform_user_id")),
            truncate(_text(i.get("display_name")), NAME_WIDTH),
        )
        for i in identities
    ]
    return "\n".join([*lines, "identities:", table(IDENTITY_COLUMNS, rows)])


def render(args: argparse.Namespace, payload: Any, *, colour: bool) -> str:
    """What a successful command prints: the raw JSON with --json, else a view for people."""
    command: str = args.users_command
    if args.json:
        return json.dumps(payload, indent=2, ensure_ascii=False)
    if command == "list":
        return users_table(payload["users"], colour=colour)
    if command == "unlink":
        return (
            f"identity {payload['id']} ({payload['platform']} {payload['platform_user_id']}) "
            f"unlinked: it now belongs to user {payload['user_id']!r}"
        )
    view = user_view(payload, colour=colour)
    if command == "link":
        return f"identity {args.identity_id} linked to user {payload['id']!r}\n{view}"
    if command in ("block", "unblock"):
        return f"user {payload['id']!r} {command}ed\n{view}"
    return view


def main(args: argparse.Namespace) -> int:
    """Entry point of `channeld users`; returns the exit code."""
    out, err = sys.stdout, sys.stderr
    try:
        if args.users_command == "list" and not 1 <= args.limit <= 1000:
            raise CliError("--limit must be from 1 to 1000", 2)
        url = _base_url(args)
        token = _token(args)
        payload = asyncio.run(call(args, url, token))
    except CliError as exc:
        print(f"channeld: {exc.message}", file=err)
        for line in exc.details:
            print(f"  {line}", file=err)
        return exc.code
    print(render(args, payload, colour=wants_colour(out.isatty(), os.environ)), file=out)
    return EXIT_OK
