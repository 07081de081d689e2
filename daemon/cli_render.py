"""Terminal views of channels: the `list` table, the `show` key/value view, state colours."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

# SGR codes per channel state, the same meaning as the web page's status dots
STATE_COLOURS = {
    "connected": "32",  # green
    "connecting": "33",  # yellow
    "disconnected": "31",  # red
    "disabled": "90",  # grey
    "failed": "1;31",  # bold red
}
COLUMNS = ("ID", "TYPE", "STATE", "UPTIME", "RECONNECTS", "MESSAGES", "LAST ERROR")
RIGHT_ALIGNED = frozenset({"RECONNECTS", "MESSAGES"})
LAST_ERROR_WIDTH = 60
EMPTY = "-"
# where each URL of a channel's voice section goes (voice_urls in the API's channel object)
VOICE_URLS = (
    ("llm_endpoint", "voice llm endpoint"),  # ZEGO: passed per call; shown for checking
    ("aliyun_llm_base", "voice aliyun llm base"),  # the Alibaba agent's LLM node, in its console
    ("callback", "voice callback url"),  # both clouds' agent callbacks
)


def wants_colour(tty: bool, environ: Mapping[str, str]) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (no-color.org) or on a dumb terminal."""
    return tty and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def paint(state: str, colour: bool) -> str:
    """A state name, coloured when asked to."""
    code = STATE_COLOURS.get(state)
    return f"\x1b[{code}m{state}\x1b[0m" if colour and code else state


def width(text: str) -> int:
    """Terminal columns of `text`: wide (CJK) characters take two, platform errors carry them."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def truncate(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` columns with an ellipsis."""
    flat = " ".join(text.split())
    if width(flat) <= limit:
        return flat
    kept, used = [], 0
    for ch in flat:
        used += width(ch)
        if used > limit - 1:
            break
        kept.append(ch)
    return "".join(kept) + "…"


def duration(seconds: float | None) -> str:
    """A compact age: `45s`, `3m 07s`, `2h 05m`, `4d 1h`."""
    if seconds is None:
        return EMPTY
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _scalar(value: Any) -> str:
    if value is None:
        return EMPTY
    if value == "":
        return '""'  # an empty setting must not read as a missing line
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def list_table(channels: Sequence[Mapping[str, Any]], *, colour: bool) -> str:
    """The `list` table: one row per channel, columns aligned, the state coloured on request."""
    if not channels:
        return "no channels"
    rows = []
    for channel in channels:
        status = channel.get("status") or {}
        rows.append(
            (
                str(channel["id"]),
                str(channel["type"]),
                str(status.get("state", EMPTY)),
                duration(status.get("uptime_seconds")),
                _scalar(status.get("reconnects")),
                _scalar(status.get("messages_received")),
                truncate(status.get("last_error") or EMPTY, LAST_ERROR_WIDTH),
            )
        )
    widths = [max(width(cell) for cell in column) for column in zip(COLUMNS, *rows, strict=True)]
    lines = []
    for index, row in enumerate([COLUMNS, *rows]):
        cells = []
        for name, cell, size in zip(COLUMNS, row, widths, strict=True):
            pad = " " * (size - width(cell))
            # colour after measuring: escape codes take no columns on screen
            shown = paint(cell, colour) if index and name == "STATE" else cell
            cells.append(pad + shown if name in RIGHT_ALIGNED else shown + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def flat_settings(settings: Mapping[str, Any], sections: frozenset[str]) -> dict[str, Any]:
    """Settings by dotted path: a section's keys one by one (`voice.zego.app_id`), any other
    value whole (a provider's pass-through object is one JSON value)."""
    flat: dict[str, Any] = {}
    stack: list[tuple[str, Mapping[str, Any]]] = [("", settings)]
    while stack:
        prefix, node = stack.pop()
        for key, value in node.items():
            path = prefix + str(key)
            if path in sections and isinstance(value, Mapping):
                stack.append((path + ".", value))
            else:
                flat[path] = value
    return flat


def channel_view(
    channel: Mapping[str, Any], *, colour: bool, sections: frozenset[str] = frozenset()
) -> str:
    """The `show` view: identity, live status, the URLs for the platforms' and clouds' consoles,
    then every setting, sections key by key (secrets arrive as `***`)."""
    status = channel.get("status") or {}
    state = str(status.get("state", EMPTY))
    pairs = [
        ("id", _scalar(channel.get("id"))),
        ("type", _scalar(channel.get("type"))),
        ("agent", _scalar(channel.get("agent"))),
        ("enabled", "yes" if channel.get("enabled") else "no"),
        ("source", _scalar(channel.get("source"))),
        ("version", _scalar(channel.get("version"))),
        ("state", paint(state, colour)),
        ("connected at", _scalar(status.get("connected_at"))),
        ("uptime", duration(status.get("uptime_seconds"))),
        ("last event at", _scalar(status.get("last_event_at"))),
        ("last error", _scalar(status.get("last_error"))),
        ("reconnects", _scalar(status.get("reconnects"))),
        ("messages received", _scalar(status.get("messages_received"))),
        ("next attempt at", _scalar(status.get("next_attempt_at"))),
    ]
    urls = []
    if "webhook_url" in channel:
        urls.append(("webhook url", _scalar(channel["webhook_url"])))
    voice = channel.get("voice_urls") or {}
    for key, label in VOICE_URLS:
        if key in voice:
            urls.append((label, _scalar(voice[key])))
    pairs[2:2] = urls
    # agent and enabled are already at the top
    flat = flat_settings(channel.get("settings") or {}, sections)
    settings = {k: v for k, v in flat.items() if k not in dict(pairs)}
    size = max(len(key) for key in [*(k for k, _ in pairs), *(f"  {k}" for k in settings)])
    indent = "\n" + " " * (size + 2)  # multi-line errors stay in the value column
    lines = [f"{key:<{size}}  {value.replace(chr(10), indent)}" for key, value in pairs]
    lines.append("settings:")
    lines.extend(f"{'  ' + key:<{size}}  {_scalar(settings[key])}" for key in sorted(settings))
    return "\n".join(lines)
