"""Alibaba Cloud ICE's RPC API as `alibabacloud-ice20201109==6.20.2` speaks it: `POST /` with an
empty body, every parameter in the query string (nested objects as JSON strings), the action in
`x-acs-action`, `x-acs-version: 2020-11-09`, signed with `ACS3-HMAC-SHA256` (`acs3`).

Errors are an HTTP status with `{"Code", "Message", "RequestId"}`; the SDK raises its
`ClientException` for any 4xx (with `code` and `status_code`) and `ServerException` for 5xx.
The codes are Alibaba's common ones (InvalidAccessKeyId.NotFound 404, SignatureDoesNotMatch
400, IncompleteSignature 400, SignatureNonceUsed 400, InvalidTimeStamp.Expired 400,
InvalidAction.NotFound 404, InvalidParameter 400). An unknown AI agent or instance is 404
InvalidAIAgentId.NotFound / InvalidInstanceId.NotFound: the emulator's choice, not checked
against the live service.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from channels.emulator import http
from channels.voice.emulator import acs3

API_VERSION = "2020-11-09"
DATE_TTL = 900.0  # seconds x-acs-date may differ from now, either way
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class AliyunError(http.ApiError[str]):
    """An ICE API error: its HTTP status with Alibaba's error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.request_id = ""

    def body(self) -> dict[str, Any]:
        """The JSON body Alibaba sends with an error."""
        return {"Code": self.code, "Message": self.message, "RequestId": self.request_id}


def invalid(message: str) -> AliyunError:
    """The 400 InvalidParameter error."""
    return AliyunError(400, "InvalidParameter", message)


def iso(ms: int) -> str:
    """Wall-clock milliseconds as Alibaba's ISO 8601 UTC timestamps."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime(DATE_FORMAT)


class Authenticator:
    """Checks a request's access key and V3 signature, and refuses a signature nonce seen
    within the date window."""

    def __init__(self, keys: Mapping[str, str], *, verify: bool = True) -> None:
        self.keys = dict(keys)  # AccessKey id -> secret
        self.verify = verify
        self._nonces: dict[str, float] = {}

    def check(self, request: web.Request, body: bytes) -> None:
        """AliyunError for the first thing wrong, in the order the gateway checks."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        if headers.get("x-acs-version") != API_VERSION:
            raise AliyunError(400, "InvalidVersion", f"x-acs-version must be {API_VERSION}")
        auth = acs3.parse(headers.get("authorization", ""))
        if auth is None:
            raise AliyunError(400, "IncompleteSignature", "the Authorization header is malformed")
        missing = [h for h in acs3.REQUIRED_SIGNED if h not in auth.signed_headers]
        if missing:
            raise AliyunError(400, "IncompleteSignature", f"not signed: {', '.join(missing)}")
        secret = self.keys.get(auth.access_key_id)
        if secret is None:
            raise AliyunError(
                404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
            )
        self._check_date(headers.get("x-acs-date", ""))
        nonce = headers.get("x-acs-signature-nonce", "")
        now = time.monotonic()
        self._nonces = {n: t for n, t in self._nonces.items() if now - t < DATE_TTL}
        if not nonce or nonce in self._nonces:
            raise AliyunError(400, "SignatureNonceUsed", "the signature nonce was used already")
        payload = hashlib.sha256(body).hexdigest()
        if self.verify:
            expected = acs3.signature(
                secret,
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=headers,
                signed_headers=auth.signed_headers,
                payload_sha256=payload,
            )
            if headers.get("x-acs-content-sha256") != payload or expected != auth.signature:
                raise AliyunError(
                    400, "SignatureDoesNotMatch", "the request signature does not conform"
                )
        self._nonces[nonce] = now

    @staticmethod
    def _check_date(value: str) -> None:
        try:
            at = datetime.datetime.strptime(value, DATE_FORMAT).replace(tzinfo=datetime.UTC)
        except ValueError:
            raise AliyunError(400, "InvalidTimeStamp.Format", "x-acs-date is malformed") from None
        if abs(at.timestamp() - time.time()) > DATE_TTL:
            raise AliyunError(400, "InvalidTimeStamp.Expired", "x-acs-date is out of range")


def text(query: Mapping[str, str], name: str, *, required: bool = False, max_len: int = 0) -> str:
    """A string parameter ("" when absent and not required)."""
    value = query.get(name, "")
    if required and not value:
        raise invalid(f"{name} is mandatory for this action")
    if max_len and len(value) > max_len:
        raise invalid(f"{name} is longer than {max_len} characters")
    return value


def whole(query: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> int:
    """A whole-number parameter within [low, high]; `default` None: required."""
    value = query.get(name)
    if value is None:
        if default is None:
            raise invalid(f"{name} is mandatory for this action")
        return default
    if not value.isascii() or not value.lstrip("-").isdigit() or len(value) > 19:
        raise invalid(f"{name} must be a whole number")
    number = int(value)
    if not low <= number <= high:
        raise invalid(f"{name} must be from {low} to {high}")
    return number


def json_object(query: Mapping[str, str], name: str, *, required: bool = False) -> dict[str, Any]:
    """A parameter holding a JSON object ({} when absent and not required)."""
    value = query.get(name)
    if value is None:
        if required:
            raise invalid(f"{name} is mandatory for this action")
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        raise invalid(f"{name} is not JSON") from None
    if not isinstance(parsed, dict):
        raise invalid(f"{name} must be a JSON object")
    return parsed


def llm_config(agent_config: Mapping[str, Any]) -> tuple[list[dict[str, str]], bool | None]:
    """From `AgentConfig.LlmConfig`: the context to start from (`LlmHistory`) and
    `HistorySyncWithTTS` (None: the console's)."""
    config = agent_config.get("LlmConfig") or {}
    if not isinstance(config, dict):
        raise invalid("AgentConfig.LlmConfig must be an object")
    history: list[dict[str, str]] = []
    for item in config.get("LlmHistory") or []:
        role = item.get("Role") if isinstance(item, dict) else None
        content = item.get("Content") if isinstance(item, dict) else None
        if role not in ("user", "assistant", "system") or not isinstance(content, str):
            raise invalid("AgentConfig.LlmConfig.LlmHistory items need Role and Content")
        history.append({"role": role, "content": content})
    sync = config.get("HistorySyncWithTTS")
    if sync is not None and not isinstance(sync, bool):
        raise invalid("AgentConfig.LlmConfig.HistorySyncWithTTS must be true or false")
    return history, sync


@dataclass
class Dialogue:
    """One side of one round, as ListAIAgentDialogues shows it."""

    session_id: str
    instance_id: str
    round: int
    producer: str  # "user" or "agent"
    text: str
    time: int  # wall-clock ms
    dialogue_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> dict[str, Any]:
        """ListAIAgentDialogues' item."""
        return {
            "DialogueId": self.dialogue_id,
            "RoundId": str(self.round),
            "Producer": self.producer,
            "Text": self.text,
            "Time": self.time,
            "Type": "normal",
            "Source": "call",
        }

    def to_callback(self) -> dict[str, Any]:
        """The same in a `chat_record` callback, in the callbacks' camelCase."""
        return {k[0].lower() + k[1:]: v for k, v in self.to_json().items()}


def page(dialogues: list[Dialogue], number: int, size: int, order: str) -> list[Dialogue]:
    """Page `number` of `dialogues` by time (then as recorded), ASC or DESC."""
    ranked = sorted(enumerate(dialogues), key=lambda p: (p[1].time, p[0]), reverse=order == "DESC")
    return [d for _, d in ranked][(number - 1) * size : number * size]
