"""The Easemob provider: pre-send and post-send callbacks in, REST messages and rewrites out."""

from __future__ import annotations

from channels.callbacks import (
    BatchSink,
    Callback,
    CallbackAnswer,
    CallbackMalformed,
    CallbackRejected,
    proof_matches,
)
from channels.cards import CardReplyStream, MessageSender
from channels.easemob.api import EasemobApi
from channels.easemob.config import EasemobChannelConfig
from channels.easemob.convert import (
    CHAT,
    PLATFORM,
    Envelope,
    envelope,
    security,
    to_inbound,
    verdict,
)
from channels.easemob.reply import EasemobMessageSender, EasemobReplyStream
from channels.model import InboundMessage
from channels.sessions import CallbackSessionProvider
from common.errors import PermanentError

# How far a callback's timestamp may be from our clock, either way: a replayed callback older
# than this is refused (Easemob retries a post-send callback once, immediately).
WINDOW_MS = 600_000


class EasemobProvider(CallbackSessionProvider[EasemobChannelConfig, EasemobApi]):
    """One bot user of one Easemob app; its messages arrive at the callback listener."""

    platform = PLATFORM

    def _new_api(self) -> EasemobApi:
        config = self._config
        return EasemobApi(
            client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            api_base=config.api_base,
            org_name=config.org_name,
            app_name=config.app_name,
            bot_user=config.bot_user,
            **self._http_options(config.request_timeout),
        )

    def _new_sender(self, api: EasemobApi) -> MessageSender:
        return EasemobMessageSender(api, self._config.max_message_bytes)

    def _new_reply(self, message: InboundMessage) -> CardReplyStream:
        streaming = self._config.stream == "edit"
        return EasemobReplyStream(self._api, self._sender, message, streaming=streaming)

    async def _check_app(self) -> None:
        """The app token (proves the client id and secret), and the bot user, created if missing."""
        created = await self._api.ensure_user(self._config.bot_user)
        self._log.info(
            "Easemob app %s#%s: bot user %s %s; answers: %s",
            self._config.org_name,
            self._config.app_name,
            self._config.bot_user,
            "created" if created else "exists",
            "rewritten message" if self._config.stream == "edit" else "messages",
        )

    # -- CallbackProvider --------------------------------------------------------------------------

    async def handle_callback(self, callback: Callback, deliver: BatchSink) -> CallbackAnswer:
        """Check `security` and the time, journal a message to the bot, then answer: the
        pre-send callback with its verdict, the post-send callback with an empty 200."""
        body = callback.payload
        if not isinstance(body, dict):
            raise CallbackMalformed("an Easemob callback is a JSON object")
        signed = envelope(body)
        if signed is None:
            raise CallbackRejected("signature", "the callback lacks callId, timestamp or security")
        self._check(signed, callback.body)
        self._touch()
        if not signed.pre_send and signed.event_type != CHAT:
            return CallbackAnswer(ignored_events=1)  # chat_offline and other events
        try:
            message = to_inbound(self.channel_id, body, self._config.bot_user)
        except PermanentError as exc:
            # acknowledged, and a pre-send callback lets it through
            self._ignore_unreadable(f"an unreadable message: {exc}")
            return CallbackAnswer(body=verdict(None) if signed.pre_send else None)
        answer = verdict(message) if signed.pre_send else None
        if message is None:
            return CallbackAnswer(body=answer, ignored_events=1)
        intake = await self._deliver_batch(deliver, [message])
        return CallbackAnswer(body=answer, intake=intake)

    def _check(self, signed: Envelope, body: bytes) -> None:
        secret = self._config.callback_secret.get_secret_value()
        expected = security(signed.call_id, secret, signed.timestamp)
        if not proof_matches(signed.security.lower(), expected):
            raise CallbackRejected("signature", "the callback's security does not match")

        def in_time() -> None:
            skew = signed.milliseconds - self._wall_clock() * 1000
            if abs(skew) > WINDOW_MS:
                raise CallbackRejected(
                    "timestamp", f"the callback's timestamp is {skew / 1000:+.0f}s from our clock"
                )

        proof = f"{signed.call_id}\n{signed.timestamp}\n{expected}"
        self._in_time_or_retried(proof, body, in_time)
