"""The v2.2 message event stream as WuKongIM v2.2.5 keeps it (internal/api/message.go
eventAppend, pkg/wkcache/message_event_cache.go, pkg/wkdb/message_event.go).

Two stores, as in the server: an in-memory cache per `client_msg_no` (anchors register there,
`stream.delta` lives only there, sessions expire after 10 idle minutes) and the persisted state
of each event key (every other event type). Quirks of that code, kept on purpose:
* A delta for a `client_msg_no` with no anchor is accepted: it opens a cache session.
* `event_id` makes only persisted events idempotent (the same id as the key's last event answers
  the stored state again); a repeated delta is appended again.
* `stream.finish` goes to its own key `__finish__`, so the `main` key stays open in the cache.
* A terminal event's stored snapshot is the cache's accumulated text, whatever `snapshot` its
  payload carried; clients still receive the payload as sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channels.wukongim.emulator.payloads import go_json, parsed_json
from channels.wukongim.emulator.state import SYSTEM_UID, stored_channel_id

DELTA = "stream.delta"
SNAPSHOT = "stream.snapshot"
CLOSE = "stream.close"
ERROR = "stream.error"
CANCEL = "stream.cancel"
FINISH = "stream.finish"
TERMINAL_TYPES = frozenset({CLOSE, ERROR, CANCEL, FINISH})
MAIN_KEY = "main"
FINISH_KEY = "__finish__"
OPEN, CLOSED, ERRORED, CANCELLED = "open", "closed", "error", "cancelled"
TERMINAL_STATUSES = frozenset({CLOSED, ERRORED, CANCELLED})
SESSION_TTL = 600.0  # DefaultMessageEventCacheSessionTTL


class EventError(Exception):
    """An event the server refuses: HTTP 400 with this message."""


class _NotFound(EventError):
    pass


@dataclass
class EventRequest:
    """One `/message/event` body (eventAppendReq)."""

    channel_id: str = ""
    channel_type: int = 0
    from_uid: str = ""
    message_id: int = 0
    client_msg_no: str = ""
    event_id: str = ""
    event_type: str = ""
    event_key: str = ""
    visibility: str = ""
    occurred_at: int = 0
    payload: bytes = b""  # the raw JSON, b"" when absent


@dataclass
class CacheKey:
    """One event key in the cache (wkcache.EventKeyState)."""

    event_key: str
    status: str = OPEN
    persisted_seq: int = 0
    text: str = ""
    snapshot: bytes = b""


@dataclass
class _Session:
    channel_id: str  # stored (fake) channel id
    channel_type: int
    from_uid: str
    message_id: int
    touched: float
    keys: dict[str, CacheKey] = field(default_factory=dict)


@dataclass
class KeyState:
    """The persisted state of one event key (wkdb.MessageEventState)."""

    event_key: str
    status: str = ""
    last_seq: int = 0
    last_event_id: str = ""
    last_event_type: str = ""
    last_visibility: str = ""
    last_occurred_at: int = 0
    snapshot: bytes = b""
    end_reason: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class Pushed:
    """An event as the server pushes it to the channel's online clients (eventPushData)."""

    channel_id: str  # stored channel id
    channel_type: int
    client_msg_no: str
    event_type: str  # as the request spelled it
    event_id: str
    event_key: str
    msg_event_seq: int
    stream_status: str
    payload: Any  # the request's payload as JSON, None when absent


def _object(payload: bytes) -> dict[str, Any]:
    value = parsed_json(payload) if payload else None
    return value if isinstance(value, dict) else {}


def text_delta(payload: bytes) -> str:
    """The text a `{"kind":"text","delta":...}` payload appends."""
    body = _object(payload)
    delta = body.get("delta")
    return delta if body.get("kind") == "text" and isinstance(delta, str) else ""


def _end_reason(value: Any) -> int:
    if isinstance(value, str):
        return int(value) if value.isdigit() and int(value) < 256 else 0
    return int(value) & 0xFF if isinstance(value, int | float) else 0


def _snapshot_of(payload: bytes) -> bytes:
    body = _object(payload)
    return go_json(body["snapshot"]) if "snapshot" in body else b""


class EventStore:
    """Cache sessions and persisted key states; `append` is one `/message/event` call."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: dict[str, _Session] = {}  # client_msg_no -> cache session
        self._states: dict[tuple[str, int, str], dict[str, KeyState]] = {}
        self._seqs: dict[tuple[str, int, str], int] = {}

    def register_stream(
        self, client_msg_no: str, channel_id: str, channel_type: int, from_uid: str, message_id: int
    ) -> None:
        """An anchor was sent (RegisterStreamMessage): a session without keys, unless one exists."""
        self._expire()
        self._sessions.setdefault(
            client_msg_no.strip(),
            _Session(channel_id, channel_type, from_uid, message_id, touched=self._clock()),
        )

    def append(self, req: EventRequest) -> tuple[dict[str, Any], Pushed]:
        """Applies one event; returns the answer's `data` and what online clients receive."""
        self._expire()
        meta = self._sessions.get(req.client_msg_no.strip())
        if meta is not None:  # auto-fill from the anchor, as the server does
            if not req.from_uid.strip() and meta.from_uid.strip():
                req.from_uid = meta.from_uid
            if req.message_id == 0 and meta.message_id:
                req.message_id = meta.message_id
        for name in ("channel_id", "client_msg_no", "event_id", "event_type"):
            if not str(getattr(req, name)).strip():
                raise EventError(f"{name}不能为空！")
        if not req.from_uid.strip():
            req.from_uid = SYSTEM_UID
        channel = stored_channel_id(req.channel_id, req.channel_type, req.from_uid)
        event_type = req.event_type.strip().lower()
        key = req.event_key.strip() or MAIN_KEY
        if event_type == FINISH:
            key = FINISH_KEY
        if event_type == DELTA:
            seq, status = self._delta(req, channel, key)
        else:
            state = self._persist(req, channel, key, event_type)
            seq, status, key = state.last_seq, state.status, state.event_key
        answer = {
            "client_msg_no": req.client_msg_no,
            "event_key": key,
            "event_id": req.event_id,
            "msg_event_seq": seq,
            "stream_status": status,
            "channel_id": req.channel_id,
            "channel_type": req.channel_type,
            "from_uid": req.from_uid,
        }
        pushed = Pushed(
            channel,
            req.channel_type,
            req.client_msg_no.strip(),
            req.event_type,
            req.event_id,
            key,
            seq,
            status,
            parsed_json(req.payload) if req.payload else None,
        )
        return answer, pushed

    def _delta(self, req: EventRequest, channel: str, key: str) -> tuple[int, str]:
        cmn = req.client_msg_no.strip()
        try:
            entry = self._cache_delta(cmn, channel, req.channel_type, key, req.payload)
        except _NotFound:  # the first delta opens the key (and the session, anchored or not)
            self._upsert(cmn, channel, req, key, 0)
            entry = self._cache_delta(cmn, channel, req.channel_type, key, req.payload)
        return entry.persisted_seq, entry.status

    def _cache_delta(
        self, cmn: str, channel: str, channel_type: int, key: str, payload: bytes
    ) -> CacheKey:
        session = self._sessions.get(cmn)
        if session is None:
            raise _NotFound("message event session not found")
        if (session.channel_id, session.channel_type) != (channel, channel_type):
            raise EventError("message event channel mismatch")
        entry = session.keys.get(key)
        if entry is None:
            raise _NotFound("message event key not found")
        if entry.status in TERMINAL_STATUSES:
            raise EventError("stream closed")
        delta = text_delta(payload)
        if delta:
            entry.text += delta
        elif payload:
            entry.snapshot = payload
        entry.status = OPEN
        session.touched = self._clock()
        return entry

    def _upsert(
        self, cmn: str, channel: str, req: EventRequest, key: str, persisted_seq: int
    ) -> None:
        session = self._sessions.get(cmn)
        if session is None:
            session = self._sessions[cmn] = _Session(
                channel,
                req.channel_type,
                req.from_uid,
                message_id=req.message_id,
                touched=self._clock(),
            )
        elif (session.channel_id, session.channel_type) != (channel, req.channel_type):
            raise EventError("message event channel mismatch")
        else:
            session.message_id = req.message_id or session.message_id
            if req.from_uid.strip():
                session.from_uid = req.from_uid
        entry = session.keys.setdefault(key, CacheKey(key))
        entry.persisted_seq = max(entry.persisted_seq, persisted_seq)
        entry.status = entry.status or OPEN
        session.touched = self._clock()

    def _persist(self, req: EventRequest, channel: str, key: str, event_type: str) -> KeyState:
        cmn = req.client_msg_no.strip()
        payload = req.payload
        if event_type in TERMINAL_TYPES:
            payload = self._terminal_payload(cmn, channel, req.channel_type, key, payload)
        state = self._store(channel, req, key, event_type, payload=payload)
        try:  # the server only logs these
            self._upsert(cmn, channel, req, key, state.last_seq)
            self._mark_persisted(cmn, channel, req.channel_type, key, state)
        except EventError:
            pass
        return state

    def _terminal_payload(
        self, cmn: str, channel: str, channel_type: int, key: str, payload: bytes
    ) -> bytes:
        session = self._sessions.get(cmn)
        if session is None or (session.channel_id, session.channel_type) != (
            channel,
            channel_type,
        ):
            return payload
        entry = session.keys.get(key)
        if entry is None or (not entry.text and not entry.snapshot):
            return payload
        body: dict[str, Any] = {}
        if payload:
            value = parsed_json(payload)
            if isinstance(value, dict):
                body = value
            else:
                body["raw_payload"] = payload.decode("utf-8", "replace")
        if entry.text:
            body["snapshot"] = {"kind": "text", "text": entry.text}
        else:
            snapshot = parsed_json(entry.snapshot)
            body["snapshot"] = snapshot if snapshot is not None else entry.snapshot.decode()
        return go_json(dict(sorted(body.items())))

    def _store(
        self, channel: str, req: EventRequest, key: str, event_type: str, *, payload: bytes
    ) -> KeyState:
        cmn = req.client_msg_no.strip()
        where = (channel, req.channel_type, cmn)
        states = self._states.setdefault(where, {})
        state = states.get(key)
        event_id = req.event_id.strip()
        if state is not None and state.last_event_id and state.last_event_id == event_id:
            return state  # the same event again: the state as it is
        if state is not None and state.status in TERMINAL_STATUSES:
            return state  # a terminal key takes nothing more
        seq = self._seqs[where] = self._seqs.get(where, 0) + 1
        if state is None:
            state = states[key] = KeyState(key)
        state.last_event_id = event_id
        state.last_event_type = event_type
        state.last_visibility = req.visibility
        state.last_occurred_at = req.occurred_at or int(time.time() * 1000)
        body = _object(payload)
        if event_type == SNAPSHOT:
            state.snapshot = payload
        elif event_type in (CLOSE, ERROR, CANCEL):
            state.snapshot = _snapshot_of(payload) or state.snapshot
            state.status = {CLOSE: CLOSED, ERROR: ERRORED, CANCEL: CANCELLED}[event_type]
            if event_type == CLOSE:
                state.end_reason = _end_reason(body.get("end_reason"))
            elif event_type == ERROR:
                error = body.get("error")
                state.error = error if isinstance(error, str) else ""
        elif event_type == FINISH:
            state.status = CLOSED
        state.last_seq = seq
        return state

    def _mark_persisted(
        self, cmn: str, channel: str, channel_type: int, key: str, state: KeyState
    ) -> None:
        session = self._sessions.get(cmn)
        if session is None or (session.channel_id, session.channel_type) != (
            channel,
            channel_type,
        ):
            return
        entry = session.keys.setdefault(key, CacheKey(key, status=""))
        entry.persisted_seq = max(entry.persisted_seq, state.last_seq)
        if state.status:
            entry.status = state.status
        if all(k.status in TERMINAL_STATUSES for k in session.keys.values()):
            del self._sessions[cmn]

    def _expire(self) -> None:
        horizon = self._clock() - SESSION_TTL
        for cmn in [c for c, s in self._sessions.items() if s.touched < horizon]:
            del self._sessions[cmn]

    # -- reading ---------------------------------------------------------------------------------

    def stored_states(
        self, channel_id: str, channel_type: int, client_msg_no: str
    ) -> list[KeyState]:
        """Copies of the persisted key states of one stream."""
        states = self._states.get((channel_id, channel_type, client_msg_no.strip()), {})
        return [KeyState(**vars(s)) for s in states.values()]

    def cached_keys(self, channel_id: str, channel_type: int, client_msg_no: str) -> list[CacheKey]:
        """Copies of the cache's key states of one stream (none when its session is elsewhere)."""
        self._expire()
        session = self._sessions.get(client_msg_no.strip())
        if session is None or (session.channel_id, session.channel_type) != (
            channel_id,
            channel_type,
        ):
            return []
        return [CacheKey(**vars(k)) for k in session.keys.values()]
