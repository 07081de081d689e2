"""The voice LLM endpoint: a cloud voice agent asks, channeld answers from the conversation.

`POST /voice/{channel_id}/chat/completions` (served by the callback listener). Each request is
authenticated before anything else happens (docs/platforms/voice.md, "The LLM endpoint"):
- ZEGO sends `Authorization: Bearer <the call's secret>`, which channeld minted for that call
  alone and handed to ZEGO as the instance's `LLM.ApiKey`; its hash finds the call;
- Alibaba sends the console's LLM API key as the bearer, plus `extendData.userData`, the string
  channeld gave at the call's start: the call id signed with a key only channeld holds.
The call must be active (not ended, not past `expires_at`) and on this channel, and the cloud's
instance id, when sent, must be the call's. Anything else is 401 and nothing is answered.

Only the last message (the utterance) is taken from the request; answer.py speaks the answer,
which comes from the conversation's agent with channeld's own history, so the call knows the
chat and the chat will know the call. The utterance and the answer are stored as voice turns
keyed by the cloud's round (ZEGO `agent_info.round_id`, Alibaba `extendData.sentenceId`): a
retried round replaces its turns rather than adding a second pair.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from channels import normalize
from channels.conversations import AnswerSlots
from channels.live import ChannelRuntime
from channels.voice.answer import VoiceAnswers, VoiceObserver, VoiceTurn, Write
from channels.voice.config import VoiceConfig
from channels.voice.streams import CallStreams
from storage.repository import Store, VoiceCallRecord

# Alibaba's workflow marks where TTS stopped inside the assistant message it sends back
# (LlmConfig.HistorySyncWithTTS): what precedes it is what the user heard
ALIYUN_INTERRUPTED = "<ims_agent_interrupted>"
MAX_UTTERANCE = 8_000  # characters; an ASR result is a sentence or two
MAX_ROUND = 64  # characters of a round or sentence id
MAX_USER_DATA = 512  # characters of Alibaba's userData echoed back
DEFAULT_MODEL = "channeld"

# The runtime of a running channel by id, or None
FindRuntime = Callable[[str], ChannelRuntime | None]


class VoiceRefused(Exception):
    """A voice request refused before anything was answered or stored."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason  # a metric label and the body's error code


def _unauthorized(detail: str) -> VoiceRefused:
    # one answer for every failed proof: a caller learns nothing about which part failed
    return VoiceRefused(401, "unauthorized", detail)


def secret_hash(secret: str) -> str:
    """How a call's secret is stored and looked up: the secret itself is never stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def user_data_signature(key: bytes, channel_id: str, call_id: str) -> str:
    """The signature channeld puts beside the call id in Alibaba's `UserData`."""
    return hmac.new(key, f"voice-call:{channel_id}:{call_id}".encode(), hashlib.sha256).hexdigest()


def user_data(key: bytes, channel_id: str, call_id: str) -> str:
    """Alibaba's `UserData` for a call: echoed to the endpoint as `extendData.userData`."""
    signature = user_data_signature(key, channel_id, call_id)
    return json.dumps({"call": call_id, "sig": signature}, separators=(",", ":"))


def _bearer(headers: Mapping[str, str]) -> str:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("no bearer token")
    if not token.isascii() or not token.isprintable():
        # what a server never sends (aiohttp hands undecodable header bytes on as surrogates)
        raise _unauthorized("the bearer token is not printable ASCII")
    return token


def _same_secret(given: str, expected: str) -> bool:
    """Constant time, and the comparison reveals not even the secret's length."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def _text(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return "".join(parts)
    return None


def _messages(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise VoiceRefused(400, "malformed", "messages must be a non-empty list")
    if not all(isinstance(m, dict) for m in messages):
        raise VoiceRefused(400, "malformed", "every message must be an object")
    return messages


def _utterance(messages: list[dict[str, Any]]) -> str:
    last = messages[-1]
    text = _text(last.get("content")) if last.get("role") == "user" else None
    if text is None:
        raise VoiceRefused(400, "malformed", "the last message must be the user's utterance")
    text = normalize.text(text).strip()
    if not text:
        raise VoiceRefused(400, "malformed", "the utterance is empty")
    if len(text) > MAX_UTTERANCE:
        raise VoiceRefused(400, "malformed", f"the utterance is over {MAX_UTTERANCE} characters")
    return text


def _round(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        text = normalize.platform_id(str(value))
        if 0 < len(text) <= MAX_ROUND:
            return text
    raise VoiceRefused(400, "malformed", "the round id must be a short number or string")


def _heard(messages: list[dict[str, Any]]) -> str | None:
    """Alibaba: the last answer up to its interruption mark, when the history carries one."""
    for message in reversed(messages[:-1]):
        if message.get("role") == "assistant":
            text = _text(message.get("content"))
            if text is not None and ALIYUN_INTERRUPTED in text:
                return normalize.text(text.split(ALIYUN_INTERRUPTED, 1)[0])
            return None
    return None


class VoiceEndpoint:
    """Authenticates voice requests and answers them from the conversation, storing the turns."""

    def __init__(
        self,
        store: Store,
        runtimes: FindRuntime,
        *,
        slots: AnswerSlots,
        observer: VoiceObserver,
        user_data_key: bytes,
        clock: Callable[[], datetime],
        streams: CallStreams,
        heard: Callable[[str, str], str | None] = lambda call_id, round_id: None,
    ) -> None:
        self._store = store
        self._runtimes = runtimes
        self._streams = streams
        self._key = user_data_key
        self._clock = clock
        self._answers = VoiceAnswers(
            store, slots=slots, observer=observer, clock=clock, streams=streams, heard=heard
        )

    async def open_turn(
        self, channel_id: str, headers: Mapping[str, str], payload: Any
    ) -> VoiceTurn:
        """Checks a request (headers lower-cased); VoiceRefused says why it is not answered."""
        received = time.monotonic()
        runtime = self._runtimes(channel_id)
        voice = runtime.config.voice if runtime is not None else None
        if runtime is None or voice is None:
            raise VoiceRefused(404, "unknown_channel", "no running channel with voice calls")
        if not isinstance(payload, dict):
            raise VoiceRefused(400, "malformed", "the body must be a JSON object")
        if payload.get("stream") is not True:
            raise VoiceRefused(
                400, "not_streaming", "voice agents are answered streamed only: set stream: true"
            )
        bearer = _bearer(headers)
        call, round_value = await self._call(channel_id, voice, bearer, payload)
        messages = _messages(payload)
        utterance = _utterance(messages)
        model = payload.get("model")
        return VoiceTurn(
            call=call,
            runtime=runtime,
            utterance=utterance,
            round=_round(round_value) or f"x-{uuid.uuid4().hex}",
            model=normalize.platform_id(model)[:128] if isinstance(model, str) else DEFAULT_MODEL,
            heard=_heard(messages) if call.provider == "aliyun" else None,
            received=received,
        )

    async def _call(
        self, channel_id: str, voice: VoiceConfig, bearer: str, payload: Mapping[str, Any]
    ) -> tuple[VoiceCallRecord, Any]:
        """The active call the request proves it belongs to, and its round id as sent."""
        aliyun = voice.aliyun
        if aliyun is not None and _same_secret(bearer, aliyun.llm_api_key.get_secret_value()):
            extend = payload.get("extendData")
            if not isinstance(extend, dict):
                raise _unauthorized("Alibaba request without extendData")
            call = await self._aliyun_call(channel_id, extend.get("userData"))
            instance = extend.get("instanceId")
            round_value = extend.get("sentenceId")
        elif voice.zego is not None:
            hashed = secret_hash(bearer)
            found = self._streams.known(hashed)
            if found is None:
                found = await self._store.voice_call_by_secret(hashed)
                if found is not None and found.instance_id is not None:
                    self._streams.remember(hashed, found)
            if found is None or found.provider != "zego":
                raise _unauthorized(
                    "the bearer is neither voice.aliyun.llm_api_key nor the secret of a call"
                )
            call = found
            info = payload.get("agent_info")
            info = info if isinstance(info, dict) else {}
            instance = info.get("agent_instance_id")
            round_value = info.get("round_id")
        else:
            raise _unauthorized("bearer token is not this channel's")
        if call.channel_id != channel_id:
            raise _unauthorized("the call belongs to another channel")
        if not call.active(self._clock()):
            raise _unauthorized("the call has ended or expired")
        # both clouds name the instance in every request (ZEGO agent_info, Alibaba extendData)
        if call.instance_id is not None and (
            isinstance(instance, bool) or str(instance) != call.instance_id
        ):
            raise _unauthorized("the instance id is not the call's")
        return call, round_value

    async def _aliyun_call(self, channel_id: str, data: Any) -> VoiceCallRecord:
        try:
            # channeld's own userData is ~120 characters of flat JSON
            ok = isinstance(data, str) and len(data) <= MAX_USER_DATA
            parsed = json.loads(data) if ok else None
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            raise _unauthorized("userData is not channeld's")
        call_id, signature = parsed.get("call"), parsed.get("sig")
        if not isinstance(call_id, str) or not isinstance(signature, str):
            raise _unauthorized("userData is not channeld's")
        expected = user_data_signature(self._key, channel_id, call_id)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise _unauthorized("userData's signature does not match")
        call = await self._store.voice_call_get(call_id)
        if call is None or call.provider != "aliyun":
            raise _unauthorized("no such call")
        return call

    async def speak(self, turn: VoiceTurn, write: Write) -> None:
        """Streams the answer through `write` and stores the round's turns (answer.py)."""
        await self._answers.speak(turn, write)
