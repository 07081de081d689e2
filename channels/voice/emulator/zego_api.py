"""ZEGO AI Agent's server API rules: the gateway's signed public parameters (the same scheme, codes
and secret as ZIM's, so the signature is ZIM's), its answer and error body (HTTP 200 with `Code`,
`Message`, `RequestId`, `Data`) and what it validates in the bodies the emulator takes.

Return codes are from ZEGO's AI Agent "return codes" page: 410000003 bad parameter, 410000004
body not JSON, 410000011 too many concurrent instances for the app, 410001002 no such agent
instance, 410001008 agent already exists, 410001009 no such agent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from channels.emulator import http
from channels.zim.emulator import state as gateway
from channels.zim.emulator.signing import api_signature

BAD_PARAM = 410000003
BAD_JSON = 410000004
TOO_MANY_INSTANCES = 410000011
INSTANCE_NOT_FOUND = 410001002
AGENT_EXISTS = 410001008
AGENT_NOT_FOUND = 410001009

SIGNATURE_TTL = 600.0  # seconds a signed Timestamp stays valid, either way
USER_ID = re.compile(r"[0-9A-Za-z_-]{1,32}")  # UserId and every id but AgentId and RTC's
RTC_ID = re.compile(r"[0-9A-Za-z_.-]+")  # RTC ids also allow "."
AGENT_ID = re.compile(r"[0-9A-Za-z!#$%&()+\-:;<=.>?@\[\]^_{}|~,]{1,128}")
MAX_RTC_ID = 128
MAX_AGENT_USER_ID = 32
MAX_HISTORY = 100
MAX_WINDOW = 500
CALLBACK_EVENTS = (
    "ASRResult",
    "LLMResult",
    "Interrupted",
    "UserSpeakAction",
    "AgentInstanceStatus",
    "UserAudioData",
)


class ZegoError(http.ApiError[int]):
    """An AI Agent API error: HTTP 200 with a non-zero `Code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(200, code, message)
        self.request_id = ""

    def body(self) -> dict[str, Any]:
        """The JSON body ZEGO sends with an error."""
        return {
            "Code": self.code,
            "Message": self.message,
            "RequestId": self.request_id,
            "Data": None,
        }


def ok(request_id: str, data: dict[str, Any] | None = None) -> web.Response:
    """A successful answer."""
    body = {"Code": 0, "Message": "Succeed", "RequestId": request_id, "Data": data}
    return web.json_response(body)


def check_public(query: Mapping[str, str], app_id: str, server_secret: str) -> None:
    """The gateway's checks of the public parameters, in its order; ZegoError names the first
    one failed. The Action itself is checked by the caller, which knows the actions."""
    query_app = query.get("AppId", "")
    if not query_app.isdigit() or int(query_app) >= 2**32:
        raise ZegoError(gateway.APP_ID_FORMAT, "invalid AppId")
    if query_app != app_id:
        raise ZegoError(gateway.APP_UNKNOWN, "failed to get ServerSecret")
    timestamp = query.get("Timestamp", "")
    if not timestamp:
        raise ZegoError(gateway.TIMESTAMP_EMPTY, "Timestamp is empty")
    if not timestamp.isascii() or not timestamp.lstrip("-").isdigit() or len(timestamp) > 20:
        raise ZegoError(gateway.TIMESTAMP_FORMAT, "invalid Timestamp")
    nonce = query.get("SignatureNonce", "")
    if not nonce:
        raise ZegoError(gateway.NONCE_EMPTY, "SignatureNonce is empty")
    signature = query.get("Signature", "")
    if not signature:
        raise ZegoError(gateway.SIGNATURE_EMPTY, "Signature is empty")
    version = query.get("SignatureVersion", "")
    if not version:
        raise ZegoError(gateway.VERSION_EMPTY, "SignatureVersion is empty")
    if version != "2.0":
        raise ZegoError(gateway.VERSION_UNSUPPORTED, f"unsupported SignatureVersion {version}")
    if abs(time.time() - int(timestamp)) > SIGNATURE_TTL:
        raise ZegoError(gateway.SIGNATURE_EXPIRED, "signature expired")
    if signature != api_signature(app_id, nonce, server_secret, timestamp):
        raise ZegoError(gateway.SIGNATURE_INVALID, "signature error")


def text(
    body: Mapping[str, Any],
    name: str,
    *,
    required: bool = True,
    pattern: re.Pattern[str] | None = None,
    max_len: int | None = None,
) -> str:
    """A string field; "" when absent and not required."""
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise ZegoError(BAD_PARAM, f"{name} is required and must be a non-empty string")
    if max_len is not None and len(value.encode()) > max_len:
        raise ZegoError(BAD_PARAM, f"{name} is longer than {max_len} bytes")
    if pattern is not None and not pattern.fullmatch(value):
        raise ZegoError(BAD_PARAM, f"{name} has characters ZEGO does not allow")
    return value


def whole(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """A whole-number field within [low, high]."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ZegoError(BAD_PARAM, f"{name} must be a whole number from {low} to {high}")
    return value


def number(body: Mapping[str, Any], name: str, low: float, high: float) -> None:
    """A number field within [low, high], when present."""
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ZegoError(BAD_PARAM, f"{name} must be a number from {low} to {high}")


def obj(body: Mapping[str, Any], name: str, *, required: bool = False) -> dict[str, Any] | None:
    """An object field; None when absent and not required."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise ZegoError(BAD_PARAM, f"{name} is required and must be an object")
    return value


def llm_block(value: Any) -> dict[str, Any]:
    """An `LLM` object as ZEGO checks it: Url and Model required, the rest typed."""
    if not isinstance(value, dict):
        raise ZegoError(BAD_PARAM, "LLM must be an object")
    if value.get("Vendor", "OpenAIChat") != "OpenAIChat":
        raise ZegoError(BAD_PARAM, "LLM.Vendor: this emulator speaks OpenAIChat only")
    url = text(value, "Url")
    if not url.startswith(("http://", "https://")):
        raise ZegoError(BAD_PARAM, "LLM.Url must be an http(s) URL")
    text(value, "Model")
    text(value, "ApiKey", required=False)
    text(value, "SystemPrompt", required=False)
    number(value, "Temperature", 0, 2)
    number(value, "TopP", 0, 1)
    obj(value, "Params")
    obj(value, "AgentExtraInfo")
    if not isinstance(value.get("AddAgentInfo", False), bool):
        raise ZegoError(BAD_PARAM, "LLM.AddAgentInfo must be true or false")
    return dict(value)


def rtc_block(body: Mapping[str, Any], user_id: str) -> dict[str, str]:
    """The `RTC` object: four ids, the agent's user id distinct from the caller's."""
    rtc = obj(body, "RTC", required=True)
    assert rtc is not None  # noqa: S101 - required above; narrows for mypy
    ids = {
        name: text(rtc, name, pattern=RTC_ID, max_len=MAX_RTC_ID)
        for name in ("RoomId", "AgentStreamId", "UserStreamId")
    }
    ids["AgentUserId"] = text(rtc, "AgentUserId", pattern=RTC_ID, max_len=MAX_AGENT_USER_ID)
    if ids["AgentUserId"] == user_id:
        raise ZegoError(BAD_PARAM, "RTC.AgentUserId must differ from UserId")
    return ids


def message_history(body: Mapping[str, Any]) -> tuple[list[dict[str, str]], int]:
    """`MessageHistory`: the context to start from (SyncMode 1's Messages; ZIM's history, mode
    0, is not emulated: it starts empty) and WindowSize."""
    history = obj(body, "MessageHistory") or {}
    mode = whole(history, "SyncMode", 0, 0, 1)
    window = whole(history, "WindowSize", 20, 0, MAX_WINDOW)
    messages = history.get("Messages", [])
    if not isinstance(messages, list) or len(messages) > MAX_HISTORY:
        raise ZegoError(BAD_PARAM, f"MessageHistory.Messages must be at most {MAX_HISTORY} items")
    context: list[dict[str, str]] = []
    for message in messages:
        role = message.get("Role") if isinstance(message, dict) else None
        content = message.get("Content") if isinstance(message, dict) else None
        if role not in ("user", "assistant") or not isinstance(content, str):
            raise ZegoError(BAD_PARAM, "each message needs Role user|assistant and Content")
        context.append({"role": role, "content": content})
    return (context if mode == 1 else []), window


def callback_config(body: Mapping[str, Any]) -> set[str]:
    """The events `CallbackConfig` turned on."""
    config = obj(body, "CallbackConfig") or {}
    return {event for event in CALLBACK_EVENTS if whole(config, event, 0, 0, 1)}
