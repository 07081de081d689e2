"""The emulated agent's LLM request: one streamed POST to the endpoint it was given, read as the
cloud reads it (`channels.voice.sse.read_chunks`: a framing error means the agent says nothing),
and the record the control plane shows of it (the bearer token masked)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from channels.voice.sse import StreamFramingError, read_chunks

ERROR_TEXT_LIMIT = 200  # characters of a refusal's body kept in the turn's error


def mask(secret: str) -> str:
    """A secret as records show it: its last 4 characters, and only when it is long enough that
    they give nothing away."""
    return "****" + secret[-4:] if len(secret) > 8 else "****"


@dataclass(frozen=True, slots=True)
class Reply:
    """What the endpoint answered to one request, read strictly."""

    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    answer: str | None  # None: the agent says nothing (refused, cut, or framed wrongly)
    chunks: int
    first_chunk_ms: float | None  # from sending to the first `data: ` line
    error: str  # why there is no answer, "" when there is one


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """One request the agent sent, as `GET /_emulator/voice/requests` shows it."""

    seq: int
    instance_id: str
    round: int
    repeat: bool  # the cloud sent this round's request again
    url: str
    headers: dict[str, str]  # as sent, the bearer token masked
    body: dict[str, Any]
    status: int | None
    error: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "seq": self.seq,
            "instance_id": self.instance_id,
            "round": self.round,
            "repeat": self.repeat,
            "url": self.url,
            "headers": dict(self.headers),
            "body": self.body,
            "status": self.status,
            "error": self.error,
        }


def headers_for(api_key: str) -> dict[str, str]:
    """The headers both clouds send: JSON, and the key as a bearer token (when there is one)."""
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def masked(headers: dict[str, str]) -> dict[str, str]:
    """`headers` with the bearer token masked."""
    shown = dict(headers)
    auth = shown.get("Authorization", "")
    if auth.startswith("Bearer "):
        shown["Authorization"] = "Bearer " + mask(auth.removeprefix("Bearer "))
    return shown


async def ask(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    timeout: float,  # noqa: ASYNC109 - the whole answer's deadline, handed to aiohttp
) -> Reply:
    """POSTs `body` and reads the whole stream; never raises for what the endpoint does."""
    started = time.monotonic()
    first: float | None = None
    data = json.dumps(body, ensure_ascii=False).encode()
    try:
        async with http.post(
            url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            if resp.status != 200:
                text = (await resp.text(errors="replace"))[:ERROR_TEXT_LIMIT]
                return Reply(resp.status, None, 0, None, f"HTTP {resp.status}: {text}")
            lines: list[str] = []
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if first is None and line.startswith("data: "):
                    first = (time.monotonic() - started) * 1000
                lines.append(line)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Reply(None, None, 0, first, f"{type(exc).__name__}: {exc}")
    except ValueError as exc:  # not UTF-8, or a line longer than aiohttp's limit
        return Reply(200, None, 0, first, f"framing: {exc}")
    try:
        read = read_chunks(lines)
    except StreamFramingError as exc:
        return Reply(status, None, 0, first, f"framing: {exc}")
    return Reply(status, read.text, read.chunks, first, "")
