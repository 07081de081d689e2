"""The streamed answer a voice agent reads, framed exactly as ZEGO AI Agent requires.

docs/platforms/voice.md §1: each event is one line `data: <chat.completion.chunk>`; every chunk
but the last carries `finish_reason` "" (ZEGO's agent says nothing when an earlier one says
"stop"); the last chunk has empty content and `finish_reason` "stop"; then `data: [DONE]`.
Alibaba's workflow reads the same OpenAI stream. `read_chunks` is the strict reader the emulators
and tests hold our output to.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DONE = b"data: [DONE]\n\n"
CONTENT_TYPE = "text/event-stream"


class ChunkFramer:
    """Frames one answer's deltas as chat.completion.chunk events, all with the same id."""

    def __init__(self, model: str, *, created: int | None = None) -> None:
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._model = model
        self._created = int(time.time()) if created is None else created

    def delta(self, text: str) -> bytes:
        """One event carrying `text`, its finish_reason "" as ZEGO requires of all but the last."""
        return self._event({"role": "assistant", "content": text}, "")

    def stop(self) -> bytes:
        """The last event (empty content, finish_reason "stop") followed by `data: [DONE]`."""
        return self._event({"content": ""}, "stop") + DONE

    def _event(self, delta: dict[str, str], finish: str) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


class StreamFramingError(ValueError):
    """A stream a voice agent would speak wrongly or not at all."""


@dataclass(frozen=True, slots=True)
class ReadStream:
    """What a strict reader took from a whole stream."""

    text: str  # the contents joined
    chunks: int  # chat.completion.chunk events, the closing one included


def read_chunks(lines: Iterable[str]) -> ReadStream:
    """Checks a whole SSE body line by line (without line ends) as ZEGO's agent reads it.

    StreamFramingError names the first rule broken: a line that is neither empty nor `data: `;
    a chunk that is not a chat.completion.chunk; a finish_reason other than "" or absent before
    the last chunk, or other than "stop" on it; no `data: [DONE]`, or anything after it.
    """
    events: list[dict[str, Any]] = []
    done = False
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        if done:
            raise StreamFramingError(f"line {number}: {line[:40]!r} after data: [DONE]")
        if not line.startswith("data: "):
            raise StreamFramingError(f"line {number}: {line[:40]!r} does not start with 'data: '")
        data = line[len("data: ") :]
        if data == "[DONE]":
            done = True
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            raise StreamFramingError(f"line {number}: not JSON") from None
        if not isinstance(chunk, dict) or chunk.get("object") != "chat.completion.chunk":
            raise StreamFramingError(f"line {number}: not a chat.completion.chunk")
        choices = chunk.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            raise StreamFramingError(f"line {number}: choices is not one choice")
        events.append(choices[0])
    if not done:
        raise StreamFramingError("the stream ended without data: [DONE]")
    if not events:
        raise StreamFramingError("no chunk before data: [DONE]")
    parts: list[str] = []
    for index, choice in enumerate(events):
        last = index == len(events) - 1
        finish = choice.get("finish_reason", "")
        if last and finish != "stop":
            raise StreamFramingError(f"the last chunk's finish_reason is {finish!r}, not 'stop'")
        if not last and finish not in ("", None):
            raise StreamFramingError(f"chunk {index + 1} has finish_reason {finish!r} early")
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif content is not None:
            raise StreamFramingError(f"chunk {index + 1}: content is not a string")
    return ReadStream("".join(parts), len(events))
