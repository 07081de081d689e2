"""Reading streams back as WuKongIM v2.2.5 does: `/message/eventsync` lists each stored event
key's last state (not every event), and `/channel/messagesync` adds an `event_meta` to stream
messages from the stored states merged with the cache's (mergeEventStatesWithCache), so an open
stream shows the text its deltas have built so far."""

from __future__ import annotations

from typing import Any

from channels.wukongim.emulator.payloads import go_json, parsed_json
from channels.wukongim.emulator.streams import (
    FINISH_KEY,
    MAIN_KEY,
    OPEN,
    SNAPSHOT,
    TERMINAL_STATUSES,
    EventStore,
    KeyState,
)


def projected(state: KeyState) -> dict[str, Any]:
    """One key as `/message/eventsync` lists it (buildProjectedEvent; Go sorts a map's keys)."""
    payload = state.snapshot
    if not payload:
        shown: dict[str, Any] = {"end_reason": state.end_reason, "status": state.status}
        if state.error:
            shown["error"] = state.error
        payload = go_json(dict(sorted(shown.items())))
    decoded = parsed_json(payload)
    return {
        "event_id": state.last_event_id,
        "event_key": state.event_key,
        "event_type": state.last_event_type or SNAPSHOT,
        "msg_event_seq": state.last_seq,
        "occurred_at": state.last_occurred_at,
        "payload": decoded if decoded is not None else payload.decode("utf-8", "replace"),
        "visibility": state.last_visibility,
    }


def event_sync(
    store: EventStore,
    channel_id: str,
    channel_type: int,
    client_msg_no: str,
    *,
    event_key: str = "",
    from_seq: int = 0,
    limit: int = 200,
    include_private: bool = False,
) -> dict[str, Any]:
    """`/message/eventsync`'s data: each stored key's last state after `from_seq`."""
    wanted = event_key.strip()
    listed = sorted(
        (
            s
            for s in store.stored_states(channel_id, channel_type, client_msg_no)
            if s.last_seq > from_seq and (not wanted or s.event_key == wanted)
        ),
        key=lambda s: s.last_seq,
    )[: limit + 1]
    if not include_private:
        listed = [s for s in listed if s.last_visibility not in ("private", "restricted")]
    more = int(len(listed) > limit)
    listed = listed[:limit]
    return {
        "client_msg_no": client_msg_no,
        "events": [projected(s) for s in listed],
        "filtered_by_event_key": event_key,
        "from_msg_event_seq": from_seq,
        "more": more,
        "next_msg_event_seq": listed[-1].last_seq if listed else from_seq,
    }


def merged_states(
    store: EventStore, channel_id: str, channel_type: int, client_msg_no: str
) -> list[KeyState]:
    """Stored states overlaid with the cache's, where the cache is newer or still open."""
    merged = {s.event_key: s for s in store.stored_states(channel_id, channel_type, client_msg_no)}
    for entry in store.cached_keys(channel_id, channel_type, client_msg_no):
        snapshot = go_json({"kind": "text", "text": entry.text}) if entry.text else entry.snapshot
        existing = merged.get(entry.event_key)
        if existing is None:
            merged[entry.event_key] = KeyState(
                entry.event_key,
                status=entry.status,
                last_seq=entry.persisted_seq,
                snapshot=snapshot,
            )
        elif entry.persisted_seq >= existing.last_seq or entry.status == OPEN:
            existing.status = entry.status
            existing.last_seq = entry.persisted_seq or existing.last_seq
            existing.snapshot = snapshot or existing.snapshot
    return [merged[k] for k in sorted(merged)]


def event_meta(states: list[KeyState], full: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stream message's `event_meta` and its legacy fields (`end`, `stream_data` as bytes...);
    `full` includes each key's snapshot (`event_summary_mode` "full", the default)."""
    meta: dict[str, Any] = {"has_events": True, "completed": False}
    events: list[dict[str, Any]] = []
    last = opened = 0
    for state in states:
        if state.event_key == FINISH_KEY:
            meta["completed"] = True
            continue
        entry: dict[str, Any] = {"event_key": state.event_key, "status": state.status}
        if state.last_seq:
            entry["last_msg_event_seq"] = state.last_seq
        if full and state.snapshot:
            snapshot = parsed_json(state.snapshot)
            entry["snapshot"] = snapshot if snapshot is not None else state.snapshot.decode()
        if state.end_reason:
            entry["end_reason"] = state.end_reason
        if state.error:
            entry["error"] = state.error
        events.append(entry)
        last = max(last, state.last_seq)
        opened += state.status == OPEN
    for name, value in (
        ("event_version", last),
        ("last_msg_event_seq", last),
        ("event_count", len(events)),
        ("open_event_count", opened),
    ):
        if value:  # omitempty
            meta[name] = value
    if events:
        meta["events"] = events
    legacy: dict[str, Any] = {}
    main = next((s for s in states if s.event_key == MAIN_KEY), None)
    if main is not None:
        if main.status in TERMINAL_STATUSES:
            legacy["end"] = 1
        if main.end_reason:
            legacy["end_reason"] = main.end_reason
        if main.error:
            legacy["error"] = main.error
        if main.snapshot:
            legacy["stream_data"] = _legacy_stream_data(main.snapshot)
    return meta, legacy


def _legacy_stream_data(snapshot: bytes) -> bytes:
    body = parsed_json(snapshot)
    if isinstance(body, dict) and body.get("kind") == "text":
        text = body.get("text")
        return text.encode() if isinstance(text, str) else b""
    return snapshot
