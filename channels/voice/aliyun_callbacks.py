"""Alibaba Cloud IMS AI agents: the check and reading of the agent callbacks.

A callback carries the console's callback token verbatim in `Authorization` (a shared key, no
signature over the body) and names its instance and event in the body; docs/platforms/voice.md
§2.5 has the facts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from channels import normalize
from channels.callbacks import Callback, CallbackMalformed, CallbackRejected, proof_matches
from channels.voice.aliyun import ROLES, id_field, str_field
from channels.voice.events import CallEnded, OtherEvent, TurnTranscript, VoiceEvent

_MAX_STAMP = 64  # characters of an ISO 8601 time worth parsing
_MAX_DATA = 1 << 20  # characters of a `data` given as a JSON string


def check_callback(callback: Callback, *, token: str, now: float, window: float = 600.0) -> None:
    """Raises CallbackRejected unless `Authorization` is the console's callback `token`
    verbatim ("key") and a zoned ISO 8601 `timestamp`, when the body has one, lies within
    `window` seconds of `now` ("stale"). A time without a zone cannot be placed: not checked."""
    given = callback.headers.get("authorization")
    if given is None:
        raise CallbackRejected("key", "no Authorization header")
    if not token or not proof_matches(given, token):
        raise CallbackRejected(
            "key",
            "the Authorization token is wrong (compare voice.aliyun.callback_token with the "
            "agent callback token in Alibaba's console)",
        )
    payload = callback.payload
    stamp = payload.get("timestamp") if isinstance(payload, Mapping) else None
    if not isinstance(stamp, str) or len(stamp) > _MAX_STAMP:
        return
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return
    if moment.tzinfo is None:
        return
    skew = abs(now - moment.timestamp())
    if skew > window:
        raise CallbackRejected(
            "stale", f"the timestamp is {skew:.0f}s away (at most {window:.0f}s)"
        )


def _data(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """`data` as an object: it may come as one, or as a JSON string of one."""
    data = payload.get("data")
    if isinstance(data, str) and len(data) <= _MAX_DATA:
        try:
            data = json.loads(data)
        except (ValueError, RecursionError):
            return {}
    return data if isinstance(data, Mapping) else {}


def _transcript(instance: str, item: Any, fallback_round: str) -> TurnTranscript | None:
    if not isinstance(item, Mapping):
        return None
    role = ROLES.get(str_field(item.get("producer")) or str_field(item.get("role")))
    round_id = id_field(item.get("roundId")) or id_field(item.get("sentenceId")) or fallback_round
    text = item.get("text")
    if role is None or not round_id or not isinstance(text, str):
        return None
    return TurnTranscript(instance, round_id, role, normalize.text(text))


def parse_event(payload: Mapping[str, Any]) -> list[VoiceEvent]:
    """What one checked callback says, as a list: a `chat_record` may hold several sentences
    (one TurnTranscript each). CallbackMalformed when it names no instance or event."""
    if not isinstance(payload, Mapping):
        raise CallbackMalformed("an Alibaba agent callback is a JSON object")
    instance, event = payload.get("instanceId"), payload.get("event")
    if not isinstance(instance, str) or not instance or not isinstance(event, str):
        raise CallbackMalformed("a callback without instanceId or event")
    instance = normalize.platform_id(instance)
    if event == "agent_stop":
        code = payload.get("code")
        failed = isinstance(code, int) and not isinstance(code, bool) and code != 0
        message = payload.get("message")
        why = message if isinstance(message, str) and message.isascii() and message else ""
        # the console's own words when it gives some ("expired", "user left"): else "stopped"
        reason = f"code {code}" if failed else (f"stopped: {why}" if why else "stopped")
        return [CallEnded(instance, reason[:32])]
    if event == "chat_record":
        data = _data(payload)
        extend = payload.get("extendData")
        fallback = id_field(extend.get("sentenceId")) if isinstance(extend, Mapping) else ""
        items = data.get("dialogues")
        items = items if isinstance(items, list) else [data]  # the voice variant may be flat
        turns: list[VoiceEvent] = [
            t for item in items if (t := _transcript(instance, item, fallback)) is not None
        ]
        return turns or [OtherEvent(instance, event)]
    return [OtherEvent(instance, normalize.name(event))]
