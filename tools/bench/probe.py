"""Reading the processes under test: the emulator's control plane, /metrics, JSON-lines files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import aiohttp

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_buckets(
    text: str, family: str, match: dict[str, str] | None = None
) -> dict[float, float]:
    """Cumulative `{le: count}` of one histogram in Prometheus text, summed over label sets.

    Only series whose labels include every pair of `match` are counted.
    """
    result: dict[float, float] = {}
    wanted = match or {}
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if sample is None or sample["name"] != f"{family}_bucket":
            continue
        labels = dict(_LABEL.findall(sample["labels"] or ""))
        if any(labels.get(k) != v for k, v in wanted.items()):
            continue
        le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        result[le] = result.get(le, 0.0) + float(sample["value"])
    return result


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSON-lines file (a line being written is skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


class EmulatorClient:
    """The DingTalk emulator's `/_emulator/` control plane, plus the calls seen so far."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self.url = url
        self.calls: list[dict[str, Any]] = []
        self._seq = 0

    async def get(self, path: str, **params: str) -> Any:
        """GET /_emulator/{path}: its JSON."""
        async with self._session.get(f"{self.url}/_emulator/{path}", params=params) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /_emulator/{path} with a JSON body: its JSON object."""
        async with self._session.post(f"{self.url}/_emulator/{path}", json=body) as resp:
            resp.raise_for_status()
            result: dict[str, Any] = await resp.json()
            return result

    async def message(self, client_id: str, text: str, sender: str) -> dict[str, Any]:
        """A user writes to the bot in a direct chat."""
        body = {"client_id": client_id, "text": text, "sender_staff_id": sender}
        body["sender_nick"] = sender
        return await self.post("messages", body)

    async def new_calls(self) -> list[dict[str, Any]]:
        """HTTP calls recorded since the previous look (they are also kept in `calls`)."""
        fresh: list[dict[str, Any]] = await self.get("calls", since=str(self._seq))
        if fresh:
            self._seq = max(int(c["seq"]) for c in fresh)
            self.calls.extend(fresh)
        return fresh

    async def acks(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.get("acks")
        return result

    async def frames(self, topic: str) -> list[dict[str, Any]]:
        """Frames pushed, with the time each left (GET /_emulator/frames)."""
        result: list[dict[str, Any]] = await self.get("frames", topic=topic)
        return result

    async def live_apps(self) -> set[str]:
        """Apps with at least one open Stream connection."""
        conns: list[dict[str, Any]] = await self.get("connections")
        return {c["client_id"] for c in conns if c["state"] != "closed"}

    async def connections(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.get("connections")
        return result


async def scrape(session: aiohttp.ClientSession, admin_url: str) -> str:
    """The daemon's /metrics text."""
    async with session.get(f"{admin_url}/metrics") as resp:
        resp.raise_for_status()
        return await resp.text()
