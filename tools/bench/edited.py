"""Pure analysis of answers that are one message edited as it grows (ZIM, Easemob).

Neither platform has an end-of-answer marker: the answer is final when an accepted send or edit
shows the LLM's whole text (the trace's tokens). An edit names its message by a platform handle
(ZIM: user and MsgSeq; Easemob: msg_id) that only the send's answer carried, which the emulator
does not record; the emulator's stored robot messages ("cards") hold the handle and their
receiver, so the n-th accepted send to a user is the n-th card of that user.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tools.bench import measure


@dataclass(frozen=True, slots=True)
class Call:
    """One send or edit of the bot, as the emulator recorded it."""

    at: float
    kind: str  # "send" or "edit"
    user: str  # a send's receiver ("" for an edit)
    handle: str  # the message an edit changes ("" for a send)
    text: str
    accepted: bool


@dataclass(frozen=True, slots=True)
class Card:
    """A robot message the emulator stored: whom it went to, its handle, the order of sends."""

    user: str
    handle: str
    order: int  # sorts one user's messages as they were sent
    texts: tuple[str, ...]


def flat(text: str) -> str:
    """Whitespace folded, so that a stripped or re-spaced final text still matches."""
    return " ".join(text.split())


def full_answers(traces: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """Tag -> the whole answer the LLM streamed for it (folded)."""
    answers = {}
    for t, trace in traces.items():
        tokens = trace.get("tokens")
        if isinstance(tokens, list):
            answers[t] = flat("".join(str(x) for x in tokens))
    return answers


def finished_tags(calls: Iterable[Call], answers: Mapping[str, str]) -> set[str]:
    """Tags whose whole answer an accepted call showed."""
    done = set()
    for call in calls:
        found = measure.TAG.search(call.text) if call.accepted else None
        if found and answers.get(found.group(0)) == flat(call.text):
            done.add(found.group(0))
    return done


def link_sends(calls: Sequence[Call], cards: Iterable[Card]) -> dict[str, float]:
    """Card handle -> when its send arrived: one user's accepted sends in arrival order matched
    with that user's cards in sending order."""
    sends: dict[str, list[float]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: c.at):
        if call.kind == "send" and call.accepted:
            sends[call.user].append(call.at)
    mine: dict[str, list[Card]] = defaultdict(list)
    for card in cards:
        mine[card.user].append(card)
    linked = {}
    for user, owned in mine.items():
        owned.sort(key=lambda c: c.order)
        for card, at in zip(owned, sends.get(user, []), strict=False):
            linked[card.handle] = at
    return linked


def collect_replies(
    sent: Mapping[str, str],
    receipts: Mapping[str, float],
    calls: Sequence[Call],
    cards: Sequence[Card],
    traces: Mapping[str, Mapping[str, object]],
) -> list[measure.Reply]:
    """One `Reply` per sent message (tag -> message id). The first text is visible when the
    answer's message was sent; the answer is final at the first accepted call showing the
    LLM's whole text (the message's send or one of its edits)."""
    replies = {t: measure.Reply(t) for t in sent}
    for t, message_id in sent.items():
        replies[t].frame_at = receipts.get(message_id)
        trace = traces.get(t)
        if trace is not None:
            times = trace.get("token_times")
            replies[t].token_times = [float(x) for x in times] if isinstance(times, list) else []
            started = trace.get("started")
            replies[t].llm_request_at = float(started) if isinstance(started, int | float) else None
    answers = full_answers(traces)
    sent_at = link_sends(calls, cards)
    by_handle: dict[str, list[Call]] = defaultdict(list)
    for call in calls:
        if call.kind == "edit":
            by_handle[call.handle].append(call)
    for card in cards:
        found = next((f for x in reversed(card.texts) if (f := measure.TAG.search(x))), None)
        if found is None or found.group(0) not in replies or card.handle not in sent_at:
            continue
        reply = replies[found.group(0)]
        if reply.first_text_at is not None:
            continue  # a later part of a split answer
        reply.shown_at = reply.first_text_at = sent_at[card.handle]
        shown = [(sent_at[card.handle], card.texts[0])]
        edits = sorted(by_handle.get(card.handle, []), key=lambda c: c.at)
        shown += [(c.at, c.text) for c in edits if c.accepted]
        reply.calls = 1 + len(edits)
        whole = answers.get(reply.tag)
        reply.final_at = next((at for at, text in shown if flat(text) == whole), None)
    return list(replies.values())


def peak_per_window(times: Iterable[float], window: float = 1.0) -> int:
    """The most events any sliding `window` seconds held (as a sliding-second limit counts)."""
    ordered = sorted(times)
    best, first = 0, 0
    for last, at in enumerate(ordered):
        while ordered[first] <= at - window:
            first += 1
        best = max(best, last - first + 1)
    return best
