"""How `channeld channels` renders channels: tables, colours, durations, the show view."""

from __future__ import annotations

import re
from typing import Any

from daemon.cli_render import channel_view, duration, list_table, truncate, wants_colour

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def channel(channel_id: str, state: str, **status: Any) -> dict[str, Any]:
    return {
        "id": channel_id,
        "type": "dingtalk",
        "status": {
            "state": state,
            "uptime_seconds": None,
            "reconnects": 0,
            "messages_received": 0,
            "last_error": None,
            **status,
        },
    }


STATES = {
    "connected": "\x1b[32m",
    "connecting": "\x1b[33m",
    "disconnected": "\x1b[31m",
    "disabled": "\x1b[90m",
    "failed": "\x1b[1;31m",
}


def test_states_are_coloured_only_for_a_terminal() -> None:
    rows = [channel(f"c-{state}", state) for state in STATES]
    coloured = list_table(rows, colour=wants_colour(True, {}))
    for state, code in STATES.items():
        assert f"{code}{state}\x1b[0m" in coloured
    plain = list_table(rows, colour=wants_colour(False, {}))
    assert "\x1b" not in plain
    assert ANSI.sub("", coloured) == plain  # colour never shifts the columns
    assert not wants_colour(True, {"NO_COLOR": "1"})
    assert not wants_colour(True, {"TERM": "dumb"})


def test_table_truncates_the_last_error_and_aligns_numbers() -> None:
    long_error = "ConnectionError: " + "连接被拒绝 " * 30
    rows = [
        channel("a", "failed", last_error=long_error, reconnects=12, messages_received=3),
        channel("bb", "connected", uptime_seconds=7500.4, reconnects=0, messages_received=1234),
    ]
    header, first, second = list_table(rows, colour=False).splitlines()
    assert first.endswith("…")
    assert len(first) < len(long_error)
    assert second.split()[3:6] == ["2h", "05m", "0"]
    # numbers are right-aligned: they end where their header ends
    end = header.index("RECONNECTS") + len("RECONNECTS")
    assert (first[end - 3 : end], second[end - 3 : end]) == (" 12", "  0")
    end = header.index("MESSAGES") + len("MESSAGES")
    assert (first[end - 4 : end], second[end - 4 : end]) == ("   3", "1234")


def test_durations_and_truncation() -> None:
    assert duration(None) == "-"
    assert duration(45.9) == "45s"
    assert duration(187) == "3m 07s"
    assert duration(7500) == "2h 05m"
    assert duration(4 * 86400 + 3700) == "4d 1h"
    assert truncate("a\nb", 10) == "a b"
    assert truncate("abcdefghij", 5) == "abcd…"
    assert truncate("连接被拒绝", 5) == "连接…"


def test_show_view_keeps_errors_and_empty_settings_readable() -> None:
    view = channel_view(
        {
            **channel("x", "failed", last_error="Unauthorized\ninvalid client secret"),
            "agent": "default",
            "enabled": True,
            "settings": {"agent": "default", "client_secret": "***", "robot_code": ""},
        },
        colour=True,
    )
    lines = view.splitlines()
    assert "\x1b[1;31mfailed\x1b[0m" in view
    error = next(i for i, line in enumerate(lines) if line.startswith("last error"))
    assert lines[error].endswith("  Unauthorized")
    assert lines[error + 1].strip() == "invalid client secret"
    assert lines[error + 1].index("invalid") == lines[error].index("Unauthorized")
    settings = lines[lines.index("settings:") + 1 :]
    assert [line.split() for line in settings] == [["client_secret", "***"], ["robot_code", '""']]


def test_show_view_names_the_webhook_url_of_a_webhook_channel() -> None:
    url = "https://bot.example.com/hooks/wk-main"
    view = channel_view({**channel("wk-main", "connected"), "webhook_url": url}, colour=False)
    lines = view.splitlines()
    assert lines[2].split() == ["webhook", "url", url]
    assert "webhook" not in channel_view(channel("dt", "connected"), colour=False)
