"""ZEGO AI Agent: its server API as channeld uses it, and the check and reading of its callbacks.

Every call is `POST {api_base}/?Action=...` with ZIM's common query and md5 signature
(channels/zego_signing.py) and a JSON body; ZEGO answers business errors with HTTP 200 and a
non-zero `Code`, classified here by code (docs/platforms/voice.md §1.2-1.3). Callbacks are signed
like ZIM's, but their `Timestamp` is in milliseconds (§1.4). Texts never carry the server
secret, nor the per-call LLM key a request or an answer may echo.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Unpack

from channels import normalize
from channels.callbacks import Callback, CallbackMalformed, CallbackRejected, proof_matches
from channels.http import HttpOptions
from channels.voice.events import CallEnded, OtherEvent, TurnInterrupted, TurnTranscript, VoiceEvent
from channels.zego_signing import SIGNATURE_EXPIRED, ZegoServerApi, callback_signature
from channels.zim.convert import url_decoded
from common.endpoint import https_unless_loopback
from common.errors import (
    ConfigError,
    TransientError,
)

AGENT_EXISTS = 410001008  # RegisterAgent: "智能体已存在", which is what we wanted
INSTANCE_NOT_FOUND = 410001002  # DeleteAgentInstance: the instance is gone already
INSTANCE_ENDING = 410001041  # DeleteAgentInstance: a graceful shutdown is under way already

# Codes a later call may not meet: gateway and service trouble, a clock off by minutes.
_TRANSIENT = {
    SIGNATURE_EXPIRED,
    100000012,  # the gateway could not read the body
    100000015,  # gateway internal error
    410000001,  # system error
    410000009,  # an internal call failed
    410000010,  # not enough resources
    410001003,  # creating the instance failed
    410001005,  # deleting the instance failed
    410001010,  # loading the message history failed
}
# 410000011: the account's concurrent instances (10 by default) are all in use
_RATE = {410000011, 410001029}
# The credentials or the account: a wrong secret or AppId, the service not enabled, an expired
# test account. Nothing changes until the configuration (or the contract) does.
_AUTH = {
    100000005,
    100000010,
    100000011,
    100000017,
    410000002,
    410000005,
    410000006,
    410001033,
    410001034,
    410001035,
}

DELETED = 0  # AgentInstanceDeleted Data.Code: DeleteAgentInstance was called
USER_LEFT = 1202  # the user was out of the RTC room longer than MaxIdleTime
_END_REASONS = {DELETED: "deleted", USER_LEFT: "user left"}
_DIGITS = 19  # at most this many digits in a timestamp or a round: int() of more is slow


def _code(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ZegoAgentApi(ZegoServerApi):
    """One ZEGO project's AI Agent server API; a channel shares one for all its calls."""

    platform = "zego ai agent"
    transient_codes = frozenset(_TRANSIENT)
    rate_codes = frozenset(_RATE)
    auth_codes = frozenset(_AUTH)
    auth_hint = "check app_id, server_secret and the AI Agent service"

    def __init__(
        self,
        *,
        app_id: int,
        server_secret: str,
        api_base: str,
        wall_clock: Callable[[], float] = time.time,
        **options: Unpack[HttpOptions],
    ) -> None:
        try:
            base = https_unless_loopback(api_base)
        except ValueError as exc:
            raise ConfigError(f"ZEGO AI Agent api_base: {exc}") from None
        super().__init__(
            app_id=app_id,
            server_secret=server_secret,
            api_base=base,
            wall_clock=wall_clock,
            **options,
        )

    # -- plumbing ----------------------------------------------------------------------------------

    async def _call(
        self, action: str, body: Mapping[str, Any], *, accept: frozenset[int] = frozenset()
    ) -> tuple[int, Mapping[str, Any]]:
        """One signed call: its `Code` and `Data` when the code is 0 or one of `accept`."""
        query = self._signed_query(action)
        answer = await self._send(action, "POST", self._base + "/", body=dict(body), params=query)
        code = _code(answer.get("Code"))
        if not answer.ok:
            raise self._http_error(action, answer)
        if code is None:
            raise TransientError(self._text(action, "the answer is not ZEGO's JSON"))
        if code != 0 and code not in accept:
            raise self._business_error(action, code, str(answer.get("Message") or ""))
        data = answer.get("Data")
        return code, data if isinstance(data, dict) else {}

    def _hide_keys(self, *sections: Mapping[str, Any] | None) -> None:
        """Masks the API keys a body carries (the per-call LLM key) should ZEGO echo them."""
        for section in sections:
            key = section.get("ApiKey") if section is not None else None
            if isinstance(key, str) and key:
                self._remember(key)

    # -- calls -------------------------------------------------------------------------------------

    async def register_agent(
        self,
        agent_id: str,
        *,
        name: str,
        llm: Mapping[str, Any],
        tts: Mapping[str, Any] | None = None,
        asr: Mapping[str, Any] | None = None,
    ) -> bool:
        """`RegisterAgent`; False when the agent existed already (Code 410001008)."""
        self._hide_keys(llm)
        body: dict[str, Any] = {"AgentId": agent_id, "Name": name, "LLM": dict(llm)}
        body.update(_present(TTS=tts, ASR=asr))
        code, _ = await self._call("RegisterAgent", body, accept=frozenset({AGENT_EXISTS}))
        return code != AGENT_EXISTS

    async def create_instance(
        self,
        *,
        agent_id: str,
        user_id: str,
        rtc: Mapping[str, str],
        llm: Mapping[str, Any],
        tts: Mapping[str, Any] | None = None,
        asr: Mapping[str, Any] | None = None,
        message_history: Mapping[str, Any],
        callback_config: Mapping[str, int],
        advanced: Mapping[str, Any] | None = None,
    ) -> str:
        """`CreateAgentInstance`: the agent joins the RTC room; its AgentInstanceId."""
        action = "CreateAgentInstance"
        self._hide_keys(llm)
        body: dict[str, Any] = {
            "AgentId": agent_id,
            "UserId": user_id,
            "RTC": dict(rtc),
            "LLM": dict(llm),
            "MessageHistory": dict(message_history),
            "CallbackConfig": dict(callback_config),
        }
        body.update(_present(TTS=tts, ASR=asr, AdvancedConfig=advanced))
        _, data = await self._call(action, body)
        instance = data.get("AgentInstanceId")
        if isinstance(instance, int) and not isinstance(instance, bool):
            instance = str(instance)
        if not isinstance(instance, str) or not instance:
            raise TransientError(self._text(action, "the answer names no AgentInstanceId"))
        return instance

    async def delete_instance(self, instance_id: str) -> None:
        """`DeleteAgentInstance`; an instance gone already, or ending already, counts as deleted."""
        accept = frozenset({INSTANCE_NOT_FOUND, INSTANCE_ENDING})
        await self._call("DeleteAgentInstance", {"AgentInstanceId": instance_id}, accept=accept)

    async def aclose(self) -> None:
        """Closes the HTTP session (if this client made it); later calls are refused."""
        await self.close()


def _present(**sections: Mapping[str, Any] | None) -> dict[str, Any]:
    return {name: dict(value) for name, value in sections.items() if value is not None}


# -- callbacks ---------------------------------------------------------------------------------


def _signed_field(payload: Mapping[str, Any], name: str) -> str:
    """A signed field as the signature covers it: its decimal digits when it is a number."""
    value = payload.get(name)
    if isinstance(value, bool):
        return ""
    return str(value) if isinstance(value, str | int) else ""


def check_callback(callback: Callback, *, secret: str, now: float, window: float = 300.0) -> None:
    """Raises CallbackRejected unless the callback is signed with `secret` ("signature") and its
    millisecond `Timestamp` lies within `window` seconds of `now` ("stale")."""
    payload = callback.payload
    if not isinstance(payload, Mapping):
        raise CallbackMalformed("a ZEGO AI Agent callback is a JSON object")
    timestamp, nonce = _signed_field(payload, "Timestamp"), _signed_field(payload, "Nonce")
    given = payload.get("Signature")
    if not timestamp or not nonce or not isinstance(given, str):
        raise CallbackRejected("signature", "no Signature, Timestamp or Nonce")
    if not proof_matches(given.lower(), callback_signature(secret, timestamp, nonce)):
        raise CallbackRejected(
            "signature",
            "the callback's signature is wrong (compare voice.zego.callback_secret, else "
            "server_secret, with the console's callback secret)",
        )
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= _DIGITS):
        raise CallbackRejected("stale", "the Timestamp is not a number of milliseconds")
    skew = abs(now - int(timestamp) / 1000)
    if skew > window:
        raise CallbackRejected(
            "stale", f"the Timestamp is {skew:.0f}s away (at most {window:.0f}s)"
        )


def _number(data: Mapping[str, Any], name: str) -> int | None:
    """A numeric field (a JSON integer, or its digits as a string); None when absent."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= _DIGITS:
        return int(value)
    if (number := _code(value)) is not None:
        return number
    raise CallbackMalformed(f"Data.{name} is not a number")


def _round(data: Mapping[str, Any]) -> str:
    number = _number(data, "Round")
    if number is None:
        raise CallbackMalformed("Data.Round is missing")
    return str(number)


def _text(data: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise CallbackMalformed(f"Data.{name} is not a string")
    return normalize.text(url_decoded(value))


def parse_event(payload: Mapping[str, Any]) -> VoiceEvent:
    """What one checked callback says; CallbackMalformed when it is not the shape ZEGO sends.

    `LLMResult` comes once per sentence of the answer (all with the round's `Round`): the
    transcripts of one round are its pieces in order, not replacements.
    """
    instance, event = payload.get("AgentInstanceId"), payload.get("Event")
    if not isinstance(instance, str) or not instance or not isinstance(event, str) or not event:
        raise CallbackMalformed("a callback without AgentInstanceId or Event")
    instance = normalize.platform_id(instance)
    data = payload.get("Data", {})
    if not isinstance(data, Mapping):
        raise CallbackMalformed("Data is not an object")
    if event == "AgentInstanceDeleted":
        code = _number(data, "Code")
        reason = "ended" if code is None else _END_REASONS.get(code, f"code {code}")
        return CallEnded(instance, reason)
    if event == "Interrupted":
        played = _text(data, "PlayedText", required=False)
        return TurnInterrupted(instance, _round(data), played or None)
    if event == "ASRResult":
        text = _text(data, "Text", required=True) or ""
        return TurnTranscript(instance, _round(data), "user", text)
    if event == "LLMResult":
        text = _text(data, "Text", required=True) or ""
        return TurnTranscript(instance, _round(data), "assistant", text)
    return OtherEvent(instance, normalize.name(event))
