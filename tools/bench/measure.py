"""Pure analysis: per-reply timings out of emulator records and LLM traces.

Every message carries a tag (`bm<step>n<index>`); the echo answer repeats it, so the card (or
webhook message) and the LLM trace of each reply are found by their text. All times are
time.monotonic() readings of the emulator and LLM processes; Linux' CLOCK_MONOTONIC is one clock
for the whole machine, which `procs.monotonic_is_shared()` checks at the start of every run.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STREAM_PATH = "/v1.0/card/streaming"
CARD_PATHS = ("/v1.0/card/instances", "/v1.0/card/instances/createAndDeliver", STREAM_PATH)
CREATE_PATH = "/v1.0/card/instances/createAndDeliver"
SESSION_PATH = "/robot/sendBySession"
GATEWAY_PATHS = ("/v1.0/gateway/connections/open", "/connect")
TAG = re.compile(r"bm\d+n\d+")


def tag(step: int, index: int) -> str:
    """The unique word that identifies one message and its reply."""
    return f"bm{step:02d}n{index:05d}"


def user_text(step: int, index: int, words: int) -> str:
    """A message of `words` words, the first one its tag."""
    filler = " ".join(f"w{(index + k) % 97}" for k in range(words - 1))
    return f"{tag(step, index)} {filler}".strip()


@dataclass
class Reply:
    """What happened to one message, in seconds on the shared monotonic clock."""

    tag: str
    frame_at: float | None = None
    ack_at: float | None = None
    llm_request_at: float | None = None  # the LLM received the completion request
    shown_at: float | None = None  # the card appeared (empty, "thinking")
    first_text_at: float | None = None  # the first answer text was visible
    final_at: float | None = None  # the whole answer was visible, final
    token_times: list[float] = field(default_factory=list)
    calls: int = 0

    def latency(self, attr: str) -> float | None:
        at = getattr(self, attr)
        return None if at is None or self.frame_at is None else float(at) - self.frame_at


def _tag_of(text: str) -> str | None:
    found = TAG.search(text)
    return found.group(0) if found else None


def index_traces(traces: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """LLM traces by the tag of the question they answered."""
    result: dict[str, Mapping[str, Any]] = {}
    for trace in traces:
        found = _tag_of(str(trace.get("user", "")))
        if found:
            result[found] = trace
    return result


def group_cards(calls: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Card calls by outTrackId, in arrival order."""
    cards: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for call in calls:
        body = call.get("body")
        if call["path"] in CARD_PATHS and isinstance(body, dict) and body.get("outTrackId"):
            cards[str(body["outTrackId"])].append(call)
    for entries in cards.values():
        entries.sort(key=lambda c: float(c["at"]))
    return cards


def card_tag(entries: Sequence[Mapping[str, Any]]) -> str | None:
    """The tag the card's streamed text carries."""
    for call in reversed(entries):
        body = call["body"]
        if call["path"] == STREAM_PATH:
            found = _tag_of(str(body.get("content", "")))
            if found:
                return found
    return None


def collect_replies(
    sent: Mapping[str, str],
    frames: Mapping[str, float],
    acks: Mapping[str, float],
    calls: Sequence[Mapping[str, Any]],
    traces: Mapping[str, Mapping[str, Any]],
    *,
    client_ids: Collection[str],
    cards: bool,
) -> list[Reply]:
    """One `Reply` per sent message (tag -> frame message id) to the apps `client_ids`."""
    replies = {t: Reply(t) for t in sent}
    for t, frame_id in sent.items():
        replies[t].frame_at = frames.get(frame_id)
        replies[t].ack_at = acks.get(frame_id)
        trace = traces.get(t)
        if trace is not None:
            replies[t].token_times = [float(x) for x in trace.get("token_times", [])]
            replies[t].llm_request_at = float(trace["started"]) if "started" in trace else None
    app_calls = [c for c in calls if c.get("client_id") in client_ids]
    if cards:
        for entries in group_cards(app_calls).values():
            found = card_tag(entries)
            if found not in replies:
                continue
            reply = replies[str(found)]
            reply.calls = len(entries)
            for call in entries:
                body, at = call["body"], float(call["at"])
                if call["path"] == CREATE_PATH and reply.shown_at is None:
                    reply.shown_at = at
                if call["path"] != STREAM_PATH or call.get("status") != 200:
                    continue
                if body.get("content") and reply.first_text_at is None:
                    reply.first_text_at = at
                if body.get("isFinalize") and reply.final_at is None:
                    reply.final_at = at
    else:
        for call in app_calls:
            if call["path"] != SESSION_PATH:
                continue
            body = call.get("body")
            markdown = body.get("markdown") if isinstance(body, dict) else None
            text = str(markdown.get("text", "")) if isinstance(markdown, dict) else ""
            found = _tag_of(text)
            if found in replies:
                reply = replies[str(found)]
                reply.calls += 1
                reply.first_text_at = reply.first_text_at or float(call["at"])
                reply.final_at = reply.final_at or float(call["at"])
    return list(replies.values())


def openapi_calls(
    calls: Iterable[Mapping[str, Any]], client_ids: Collection[str]
) -> dict[str, int]:
    """Platform API calls of some apps by path (the Stream gateway excluded)."""
    counts: dict[str, int] = defaultdict(int)
    for call in calls:
        if call.get("client_id") in client_ids and call["path"] not in GATEWAY_PATHS:
            counts[str(call["path"])] += 1
    return dict(counts)


def token_offsets(tokens: Sequence[str]) -> list[int]:
    """Characters of the answer once each token has arrived."""
    offsets, total = [], 0
    for token in tokens:
        total += len(token)
        offsets.append(total)
    return offsets


def staleness(
    token_times: Sequence[float], tokens: Sequence[str], updates: Sequence[tuple[float, int]]
) -> list[float]:
    """For each token, from the moment it left the LLM to the first update showing it.

    `updates` are (arrival time, characters shown) of the card's streaming calls, in order; a
    token no update ever showed is left out.
    """
    result = []
    ordered = sorted(updates)
    for sent_at, needed in zip(token_times, token_offsets(tokens), strict=False):
        for at, shown in ordered:
            if shown >= needed and at >= sent_at:
                result.append(at - sent_at)
                break
    return result
