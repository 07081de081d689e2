"""`channeld chat`: talk to a bot as a simulated user of a platform, through its emulator.

Each line typed is posted as a user message; the bot's answer is followed by long-polling the
chat view. On a terminal a streaming card is redrawn in place; otherwise only final texts print.
Every emulator serves the same `/_emulator/` control plane; only field names differ, and the
platform registry says which (`channels.platform.Emulator`).

`--voice` (or an emulator whose state says it is a voice cloud) speaks into the latest active
call of `channeld emulate voice` instead: each line is what the caller says, and the agent's
answer prints as the cloud would speak it; `/interrupt N`, `/repeat` and `/hangup` do what a
caller (or the cloud) would.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import threading
import unicodedata
from collections.abc import AsyncIterator
from typing import Any, TextIO

import aiohttp

from channels import registry
from channels.platform import Emulator

POLL_WAIT = 10.0  # seconds one long-poll may hang on the emulator
EXIT_UNREACHABLE = 1
EXIT_UNKNOWN_APP = 2
EXIT_NO_CALL = 3
VOICE_HELP = "/interrupt N (heard only N characters), /repeat, /hangup, /quit"
NO_CALL = (
    "no active call on the voice emulator at {url}. Start one as an app backend would, with "
    "channeld's admin API: POST /api/v1/voice/calls with the admin token and a body like "
    '{{"provider": "{provider}", "channel_id": "<channel>", "user_id": "<the user\'s id on it>", '
    "...}} (see the README's Voice calls)"
)


class ControlError(Exception):
    """The emulator's control plane refused or failed a request."""


def _emulators() -> dict[str, Emulator]:
    """The emulators of the registered platforms, by platform name."""
    return {p.name: p.emulator for p in registry.platforms() if p.emulator is not None}


def _detect(state: dict[str, Any]) -> Emulator:
    """The platform whose app field the emulator's /state uses."""
    apps = state.get("apps") or [{}]
    first = apps[0] if isinstance(apps[0], dict) else {}
    found = (e for e in _emulators().values() if e.app_field in first)
    return next(found, registry.default_emulator())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `channeld chat`."""
    emulators = _emulators()
    default = registry.default_emulator()
    others = "".join(
        f"; {e.url} with --platform {name}" for name, e in emulators.items() if e is not default
    )
    parser.add_argument(
        "--platform",
        choices=("auto", *emulators),
        default="auto",
        help="which emulator (default: detected from the emulator's state)",
    )
    parser.add_argument(
        "--emulator", default=None, help=f"emulator base URL (default {default.url}{others})"
    )
    app_fields = " / ".join(
        dict.fromkeys(e.app_field.replace("_", " ") for e in emulators.values())
    )
    parser.add_argument(
        "--app", default=None, help=f"{app_fields} of the bot (default: the first app)"
    )
    parser.add_argument("--group", action="store_true", help="write in a group, mentioning the bot")
    parser.add_argument("--user", default="you", help="the simulated user's name")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for an answer"
    )
    voice = _voice_emulator()
    parser.add_argument(
        "--voice",
        action="store_true",
        help="talk into the latest active call of `channeld emulate voice` (default emulator "
        f"{voice.url if voice else 'none'}): each line is an utterance; {VOICE_HELP}",
    )


def _voice_emulator() -> registry.ExtraEmulator | None:
    """The voice clouds' emulator, as the registry lists it."""
    return next((e for e in registry.extra_emulators() if e.name == "voice"), None)


async def main(args: argparse.Namespace) -> int:
    """Entry point of `channeld chat`; returns the exit code."""
    voice = _voice_emulator()
    if getattr(args, "voice", False) and voice is not None:
        return await voice_chat(args.emulator or voice.url, reply_timeout=args.timeout)
    platform = getattr(args, "platform", "auto")
    emulator = args.emulator or _emulators().get(platform, registry.default_emulator()).url
    return await chat(
        emulator,
        args.app,
        group=args.group,
        user=args.user,
        reply_timeout=args.timeout,
        platform=platform,
    )


async def _stdin_lines() -> AsyncIterator[str]:
    """Lines of stdin, read by a daemon thread so neither the loop nor exit waits on a keypress."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            while line := sys.stdin.readline():
                loop.call_soon_threadsafe(queue.put_nowait, line)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except RuntimeError:
            return  # the loop is gone: the chat ended while this thread waited for input

    threading.Thread(target=read, name="chat-stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line


def _rows(text: str, width: int) -> int:
    """Terminal rows `text` occupies, counting wide (CJK) characters as two columns."""
    rows = 0
    for line in text.split("\n"):
        columns = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)
        rows += max(1, -(-columns // width))
    return rows


class _Renderer:
    """Prints bot messages once and cards as they stream (in place on a terminal)."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self._out = out
        self._tty = tty
        self._final: set[str] = set()
        self._live_id: str | None = None  # the card printed last, which a redraw may replace
        self._live_text = ""

    def _print(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def show(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            if item["kind"] == "user" or item["id"] in self._final:
                continue
            if item["kind"] != "card":
                title = (
                    f"[{item['title']}] "
                    if item.get("title") and item.get("msgtype") != "markdown"
                    else ""
                )
                self._live_id = None
                self._print(f"bot> {title}{item['text']}")
                self._final.add(item["id"])
                continue
            done = bool(item.get("done"))
            text = "bot> " + (item["text"] or "…")
            if item.get("status") == "failed":
                text += "\n(the answer failed)"
            if done:
                self._final.add(item["id"])
            if self._tty:
                self._draw(item["id"], text)
                if done:
                    self._live_id = None
            elif done:
                self._print(text)

    def _draw(self, item_id: str, text: str) -> None:
        if item_id == self._live_id:
            if text == self._live_text:
                return
            width = shutil.get_terminal_size().columns
            # Back to the first row of the previous rendering, then clear to the end of screen.
            self._out.write(f"\x1b[{_rows(self._live_text, width)}F\x1b[J")
        self._print(text)
        self._live_id, self._live_text = item_id, text

    def note(self, text: str) -> None:
        self._live_id = None
        self._print(f"({text})")


async def _request(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> dict[str, Any]:
    async with http.request(method, url, **kwargs) as resp:
        try:
            body = await resp.json(content_type=None)
        except ValueError as exc:
            raise ControlError(f"HTTP {resp.status} without JSON: is this an emulator?") from exc
        if resp.status >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            raise ControlError(str(error or f"HTTP {resp.status}"))
        if not isinstance(body, dict):
            raise ControlError("unexpected answer from the emulator")
        return body


async def _follow(
    http: aiohttp.ClientSession,
    base: str,
    *,
    chat_param: tuple[str, str],
    user_item_id: str,
    renderer: _Renderer,
    within: float,
) -> None:
    """Shows the answer to one user message until it is complete or `within` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    since = -1
    while (remaining := deadline - loop.time()) > 0:
        params = {
            chat_param[0]: chat_param[1],
            "since": str(since),
            "wait": f"{min(remaining, POLL_WAIT):.3f}",
        }
        view = await _request(http, "GET", f"{base}/_emulator/chat", params=params)
        since = int(view["version"])
        items: list[dict[str, Any]] = view["items"]
        renderer.show(items)
        ids = [item["id"] for item in items]
        answer = items[ids.index(user_item_id) + 1 :] if user_item_id in ids else []
        bot = [item for item in answer if item["kind"] != "user"]
        if bot and all(item.get("done", True) for item in bot):
            return
    renderer.note("no complete answer yet; it will show after your next message")


async def chat(
    emulator_url: str,
    client_id: str | None = None,
    *,
    group: bool = False,
    user: str = "you",
    reply_timeout: float = 120.0,
    lines: AsyncIterator[str] | None = None,
    out: TextIO | None = None,
    tty: bool | None = None,
    platform: str = "auto",
) -> int:
    """Runs the REPL until `/quit` or end of input; returns the exit code."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    base = emulator_url.rstrip("/")
    renderer = _Renderer(out, tty)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POLL_WAIT + 10)) as http:
        try:
            state = await _request(http, "GET", f"{base}/_emulator/state")
        except (aiohttp.ClientError, TimeoutError, ControlError) as exc:
            print(f"cannot reach the emulator at {base}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        if state.get("kind") == "voice" and platform == "auto":
            return await _Caller(http, base, out, reply_timeout).talk(lines, tty=tty)
        kind = _detect(state) if platform == "auto" else _emulators()[platform]
        apps = [str(app.get(kind.app_field, "")) for app in state.get("apps", [])]
        client_id = client_id or (apps[0] if apps else "")
        if client_id not in apps:
            print(f"unknown app {client_id!r}; the emulator has {', '.join(apps)}", file=sys.stderr)
            return EXIT_UNKNOWN_APP
        where = "a group (mentioning the bot)" if group else "a single chat"
        renderer.note(f"chatting with {client_id} as {user} in {where}; /quit to leave")
        message = kind.user_message(client_id, user, group)
        source = lines if lines is not None else _stdin_lines()
        while True:
            if tty:
                out.write("you> ")
                out.flush()
            line = await anext(source, None)
            if line is None or line.strip() == "/quit":
                return 0
            text = line.strip()
            if not text:
                continue
            try:
                sent = await _request(
                    http, "POST", f"{base}/_emulator/messages", json={**message, "text": text}
                )
                if not sent["delivered"]:
                    renderer.note(f"not delivered: {sent['reason']}")
                    continue
                await _follow(
                    http,
                    base,
                    chat_param=(kind.chat_field, str(sent[kind.chat_field])),
                    user_item_id=sent["item_id"],
                    renderer=renderer,
                    within=reply_timeout,
                )
            except ControlError as exc:
                renderer.note(f"emulator: {exc}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                print(f"lost the emulator at {base}: {exc}", file=sys.stderr)
                return EXIT_UNREACHABLE


async def voice_chat(
    emulator_url: str,
    *,
    reply_timeout: float = 120.0,
    lines: AsyncIterator[str] | None = None,
    out: TextIO | None = None,
    tty: bool | None = None,
) -> int:
    """Speaks into the voice emulator's latest active call until `/quit`, `/hangup` or the end
    of input; returns the exit code."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    timeout = aiohttp.ClientTimeout(total=reply_timeout + 10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        caller = _Caller(http, emulator_url.rstrip("/"), out, reply_timeout)
        return await caller.talk(lines, tty=tty)


class _Caller:
    """A person in the latest active call of the voice emulator at `base`."""

    def __init__(
        self, http: aiohttp.ClientSession, base: str, out: TextIO, reply_timeout: float
    ) -> None:
        self._http = http
        self._base = base
        self._url = f"{base}/_emulator/voice/"
        self._out = out
        # an answer may take the whole reply timeout; the session's own may be shorter
        self._answer_timeout = aiohttp.ClientTimeout(total=reply_timeout + 10)
        self._call = ""

    def _say(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    async def talk(self, lines: AsyncIterator[str] | None, *, tty: bool) -> int:
        """Joins the latest active call and acts on each line; the exit code."""
        try:
            listing = await _request(self._http, "GET", self._url + "calls")
        except (aiohttp.ClientError, TimeoutError, ControlError) as exc:
            print(f"cannot reach the voice emulator at {self._base}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        provider = str(listing.get("provider", "zego"))
        calls = listing.get("calls", [])
        active = [c for c in calls if isinstance(c, dict) and c.get("active")]
        if not active:
            print(NO_CALL.format(url=self._base, provider=provider), file=sys.stderr)
            return EXIT_NO_CALL
        self._call = str(active[-1]["instance_id"])
        caller = active[-1].get("user_id") or "the caller"
        self._say(f"(in {provider} call {self._call} as {caller}; say something, or {VOICE_HELP})")
        source = lines if lines is not None else _stdin_lines()
        while True:
            if tty:
                self._out.write("you> ")
                self._out.flush()
            line = await anext(source, None)
            if line is None or line.strip() == "/quit":
                return 0
            if not line.strip():
                continue
            try:
                if await self._act(line.strip()):
                    return 0
            except ControlError as exc:
                self._say(f"(emulator: {exc})")
            except (aiohttp.ClientError, TimeoutError) as exc:
                print(f"lost the voice emulator at {self._base}: {exc}", file=sys.stderr)
                return EXIT_UNREACHABLE

    async def _post(self, route: str, **fields: Any) -> dict[str, Any]:
        body = {"instance_id": self._call, **fields}
        return await _request(
            self._http, "POST", self._url + route, json=body, timeout=self._answer_timeout
        )

    async def _act(self, text: str) -> bool:
        """Acts on one typed line; True when the call ended."""
        command, _, rest = text.partition(" ")
        if command == "/hangup":
            await self._post("hangup")
            self._say("(you hung up: the call ended)")
            return True
        if command == "/interrupt":
            if not rest.strip().isdigit():
                self._say("(usage: /interrupt N, the number of characters heard)")
                return False
            turn = await self._post("interrupt", played_chars=int(rest))
            self._say(f"(you spoke over the agent after {turn['played']!r})")
        elif command == "/repeat":
            self._spoken(await self._post("repeat"))
        elif command.startswith("/"):
            self._say(f"(unknown command {command}; {VOICE_HELP})")
        else:
            self._spoken(await self._post("say", text=text))
        return False

    def _spoken(self, result: dict[str, Any]) -> None:
        """The agent's answer as the caller hears it, or why there was none."""
        if result.get("answer") is None:
            self._say(f"(the agent says nothing: {result.get('error') or 'no answer'})")
            return
        self._say(f"agent> {result['answer']}")
        first = result.get("first_chunk_ms")
        if first is not None:
            self._say(f"(first chunk after {first:.0f} ms)")
