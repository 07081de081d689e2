"""Wire shapes exactly as WuKongIM v2.2.5 writes them: compact JSON in Go's field order,
`[]byte` fields as standard base64, `MessageResp` for webhooks and history, `/varz`."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from channels.wukongim.emulator.state import PERSON, SYSTEM_UID, Message

TEXT = 1  # payload `type` of a text message (a client convention, not checked by the server)


def go_json(value: Any) -> bytes:
    """`json.Marshal`: compact, UTF-8 (struct fields keep their order; Go sorts map keys, so
    callers build dicts from maps in sorted order)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def b64(data: bytes) -> str:
    """A Go `[]byte` in JSON."""
    return base64.b64encode(data).decode()


def parsed_json(data: bytes) -> Any:
    """Bytes as JSON when they are JSON, else None."""
    try:
        return json.loads(data)
    except ValueError:
        return None


def text_payload(text: str, mention_uids: list[str] | None = None) -> bytes:
    """A text message payload as clients write it: `{"type":1,"content":...}`."""
    payload: dict[str, Any] = {"type": TEXT, "content": text}
    if mention_uids:
        payload["mention"] = {"uids": mention_uids}
    return go_json(payload)


def shown_text(payload: Any, raw: bytes) -> str:
    """What a client shows for a message: the content of a text payload, else a type tag."""
    if isinstance(payload, dict):
        content = payload.get("content")
        if payload.get("type") == TEXT and isinstance(content, str):
            return content
        return f"[type {payload.get('type')}]"
    return raw.decode("utf-8", "replace")


def message_resp(message: Message, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """`types.MessageResp.From`: the system uid reads as "", and a person channel's id is the
    participant who is not the sender. `extra` holds the omitempty stream fields."""
    from_uid = "" if message.from_uid == SYSTEM_UID else message.from_uid
    channel_id = message.channel_id
    if message.channel_type == PERSON and "@" in channel_id:
        for part in channel_id.split("@"):
            if part != from_uid:
                channel_id = part
    resp: dict[str, Any] = {
        "header": {"no_persist": 0, "red_dot": message.red_dot, "sync_once": message.sync_once},
        "setting": message.setting,
        "message_id": message.message_id,
        "message_idstr": str(message.message_id),
        "client_msg_no": message.client_msg_no,
        **(extra or {}),
        "message_seq": message.message_seq,
        "from_uid": from_uid,
        "channel_id": channel_id,
        "channel_type": message.channel_type,
    }
    if message.topic:
        resp["topic"] = message.topic
    resp.update(expire=message.expire, timestamp=message.timestamp, payload=b64(message.payload))
    return resp


def varz(version: str, started: float, manager_token_on: bool) -> dict[str, Any]:
    """`GET /varz` of a single idle node."""
    return {
        "server_id": "1001",
        "server_name": "WuKongIM",
        "version": version,
        "connections": 0,
        "user_handler_count": 0,
        "user_handler_conn_count": 0,
        "uptime": f"{int(time.monotonic() - started)}s",
        "goroutine": 1,
        "mem": 0,
        "cpu": 0,
        "in_msgs": 0,
        "out_msgs": 0,
        "in_bytes": 0,
        "out_bytes": 0,
        "slow_clients": 0,
        "retry_queue": 0,
        "tcp_addr": "127.0.0.1:5100",
        "ws_addr": "ws://127.0.0.1:5200",
        "wss_addr": "",
        "manager_addr": "",
        "manager_on": 0,
        "commit": "",
        "commit_date": "",
        "tree_state": "",
        "api_url": "",
        "manager_uid": "____manager",
        "manager_token_on": int(manager_token_on),
        "conversation_cache_count": 0,
    }
