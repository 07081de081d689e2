"""The ZIM provider: signed callbacks in, the signed server API and edited messages out."""

from __future__ import annotations

from typing import Any

from channels.callbacks import (
    BatchSink,
    Callback,
    CallbackAnswer,
    CallbackMalformed,
    CallbackRejected,
    proof_matches,
)
from channels.cards import CardReplyStream, MessageSender
from channels.model import InboundMessage
from channels.sessions import CallbackSessionProvider
from channels.zego_signing import callback_signature
from channels.zim.api import ZimApi
from channels.zim.config import ZimChannelConfig
from channels.zim.convert import BEFORE_SEND, PLATFORM, to_inbound
from channels.zim.reply import ZimMessageSender, ZimReplyStream
from common.errors import PermanentError

# ZEGO documents no replay window; its retries end 62 s after the first attempt (2+4+8+16+32 s)
# and its API accepts timestamps ten minutes either way, which a callback gets too.
CALLBACK_WINDOW = 600.0


def _field(payload: dict[str, Any], name: str) -> str:
    """A signed field as the signature covers it: its decimal digits when it is a number."""
    value = payload.get(name)
    if isinstance(value, bool):
        return ""
    return str(value) if isinstance(value, str | int) else ""


class ZimProvider(CallbackSessionProvider[ZimChannelConfig, ZimApi]):
    """One robot of one ZIM app; its messages arrive at the callback listener."""

    platform = PLATFORM

    def _new_api(self) -> ZimApi:
        return ZimApi(
            app_id=self._config.app_id,
            server_secret=self._config.server_secret.get_secret_value(),
            api_base=self._config.api_base,
            robot_id=self._config.robot_id,
            requests_per_second=self._config.api_requests_per_second,
            **self._http_options(self._config.request_timeout),
        )

    def _new_sender(self, api: ZimApi) -> MessageSender:
        return ZimMessageSender(api, self._config.max_message_bytes)

    def _new_reply(self, message: InboundMessage) -> CardReplyStream:
        streaming = self._config.stream == "edit"
        return ZimReplyStream(self._api, self._sender, message, streaming=streaming)

    async def _check_app(self) -> None:
        """`RobotRegister`: proves app_id and server_secret; a robot that exists is fine."""
        created = await self._api.register_robot(self._config.robot_name, self._config.robot_avatar)
        self._log.info(
            "ZIM robot %s %s; answers: %s",
            self._config.robot_id,
            "registered" if created else "registered already",
            "edited as they grow" if self._config.stream == "edit" else "messages (stream = off)",
        )

    # -- CallbackProvider --------------------------------------------------------------------------

    async def handle_callback(self, callback: Callback, deliver: BatchSink) -> CallbackAnswer:
        """Check the signature and the time, journal a user's message to the robot, answer 200."""
        payload = callback.payload
        if not isinstance(payload, dict):
            raise CallbackMalformed("a ZIM callback is a JSON object")
        self._check_signature(payload, callback.body)
        self._touch()
        if payload.get("event") == BEFORE_SEND:
            # the pre-send hook, if ZEGO was given this URL for it: let the message through
            return CallbackAnswer(body={"result": 0}, ignored_events=1)
        try:
            message = to_inbound(self.channel_id, payload, self._config.robot_id)
        except PermanentError as exc:
            self._ignore_unreadable(f"an unreadable callback: {exc}")
            return CallbackAnswer()
        if message is None:
            return CallbackAnswer(ignored_events=1)  # 2xx, or ZIM retries it
        return CallbackAnswer(intake=await self._deliver_batch(deliver, [message]))

    def _check_signature(self, payload: dict[str, Any], body: bytes) -> None:
        timestamp, nonce = _field(payload, "timestamp"), _field(payload, "nonce")
        given = payload.get("signature")
        if not timestamp or not nonce or not isinstance(given, str):
            raise CallbackRejected("signature", "no signature, timestamp or nonce")
        secret = self._config.server_secret.get_secret_value()
        expected = callback_signature(secret, timestamp, nonce)
        if not proof_matches(given.lower(), expected):
            raise CallbackRejected("signature", "the callback's signature is wrong")

        def in_time() -> None:
            # ASCII digits only, and short: int() of a 400-digit string is slow, and overflows
            if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) < 20):
                raise CallbackRejected("timestamp", "the timestamp is not a number")
            skew = abs(self._wall_clock() - int(timestamp))
            if skew > CALLBACK_WINDOW:
                raise CallbackRejected(
                    "timestamp",
                    f"the timestamp is {skew:.0f}s away (at most {CALLBACK_WINDOW:.0f}s)",
                )

        self._in_time_or_retried(f"{timestamp}\n{nonce}\n{expected}", body, in_time)
