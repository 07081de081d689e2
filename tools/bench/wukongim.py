"""Pure analysis of WuKongIM answers: per-reply timings out of the emulator's recorded API calls.

An answer is an anchor (`/message/send` with `is_stream: 1`) and `/message/event` calls sharing
its `client_msg_no`; its text is the concatenation of the `stream.delta` payloads, which carries
the question's tag (the echo LLM repeats it). An answer that went out as plain messages is a
`/message/send` whose payload holds the text.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tools.bench import measure

SEND_PATH = "/message/send"
EVENT_PATH = "/message/event"
DELTA = "stream.delta"
FINISH = "stream.finish"
TERMINAL = frozenset({"stream.close", "stream.finish", "stream.error", "stream.cancel"})
CONTROL_PREFIX = "/_emulator/"


def message_text(body: Mapping[str, Any]) -> str:
    """The text of a `/message/send` body: base64 of `{"type":1,"content":...}`."""
    try:
        payload = json.loads(base64.b64decode(str(body.get("payload", "")), validate=True))
    except (binascii.Error, ValueError):
        return ""
    content = payload.get("content") if isinstance(payload, dict) else None
    return content if isinstance(content, str) else ""


def _delta(body: Mapping[str, Any]) -> str:
    payload = body.get("payload")
    delta = payload.get("delta") if isinstance(payload, dict) else None
    return delta if isinstance(delta, str) else ""


def streams(calls: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Anchors and events by client_msg_no, in arrival order (refused calls included)."""
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for call in calls:
        body = call.get("body")
        if not isinstance(body, dict) or not body.get("client_msg_no"):
            continue
        anchor = call["path"] == SEND_PATH and body.get("is_stream")
        if anchor or call["path"] == EVENT_PATH:
            grouped[str(body["client_msg_no"])].append(call)
    for entries in grouped.values():
        entries.sort(key=lambda c: float(c["at"]))
    return grouped


def stream_text(entries: Sequence[Mapping[str, Any]]) -> str:
    """What the accepted deltas of one stream add up to."""
    return "".join(
        _delta(c["body"])
        for c in entries
        if c["path"] == EVENT_PATH
        and c.get("status") == 200
        and c["body"].get("event_type") == DELTA
    )


def _apply_stream(reply: measure.Reply, entries: Sequence[Mapping[str, Any]]) -> None:
    reply.calls += len(entries)
    for call in entries:
        body, at = call["body"], float(call["at"])
        if call.get("status") != 200:
            continue
        if call["path"] == SEND_PATH and reply.shown_at is None:
            reply.shown_at = at
        kind = body.get("event_type")
        if kind == DELTA and _delta(body) and reply.first_text_at is None:
            reply.first_text_at = at
        if kind in TERMINAL and reply.final_at is None:
            reply.final_at = at


def collect_replies(
    sent: Mapping[str, str],
    receipts: Mapping[str, float],
    calls: Sequence[Mapping[str, Any]],
    traces: Mapping[str, Mapping[str, Any]],
) -> list[measure.Reply]:
    """One `Reply` per sent message (tag -> message id); `receipts`: message id -> the time
    the webhook delivered it. `shown_at` is the anchor's arrival, `first_text_at` the first
    delta with text, `final_at` the first event that ended the stream."""
    replies = {t: measure.Reply(t) for t in sent}
    for t, message_id in sent.items():
        replies[t].frame_at = receipts.get(message_id)
        trace = traces.get(t)
        if trace is not None:
            replies[t].token_times = [float(x) for x in trace.get("token_times", [])]
            replies[t].llm_request_at = float(trace["started"]) if "started" in trace else None
    for entries in streams(calls).values():
        found = measure.TAG.search(stream_text(entries))
        if found and found.group(0) in replies:
            _apply_stream(replies[found.group(0)], entries)
    for call in calls:
        body = call.get("body")
        if call["path"] != SEND_PATH or not isinstance(body, dict) or body.get("is_stream"):
            continue
        found = measure.TAG.search(message_text(body))
        if found and found.group(0) in replies and call.get("status") == 200:
            reply = replies[found.group(0)]
            reply.calls += 1
            reply.first_text_at = reply.first_text_at or float(call["at"])
            reply.final_at = reply.final_at or float(call["at"])
    return list(replies.values())


def finished_tags(calls: Iterable[Mapping[str, Any]]) -> set[str]:
    """Tags whose answer made its last call: a stream's `stream.finish` (after `stream.close`),
    or a plain message carrying the tag."""
    done = set()
    for entries in streams(calls).values():
        if any(c["body"].get("event_type") == FINISH and c.get("status") == 200 for c in entries):
            found = measure.TAG.search(stream_text(entries))
            if found:
                done.add(found.group(0))
    for call in calls:
        body = call.get("body")
        if call["path"] == SEND_PATH and isinstance(body, dict) and not body.get("is_stream"):
            found = measure.TAG.search(message_text(body))
            if found:
                done.add(found.group(0))
    return done


def api_calls(calls: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The bot's API calls by path (the control plane excluded)."""
    counts: dict[str, int] = defaultdict(int)
    for call in calls:
        if not str(call["path"]).startswith(CONTROL_PREFIX):
            counts[str(call["path"])] += 1
    return dict(counts)
