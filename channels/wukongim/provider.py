"""The WuKongIM provider: webhook callbacks in, HTTP API and message event streams out."""

from __future__ import annotations

from channels.callbacks import (
    BatchSink,
    Callback,
    CallbackAnswer,
    CallbackMalformed,
    CallbackRejected,
    Intake,
    proof_matches,
)
from channels.cards import CardReplyStream, MessageSender
from channels.model import InboundMessage
from channels.observer import Observer
from channels.provider import InboundSink
from channels.sessions import CallbackSessionProvider
from channels.wukongim.api import EVENT_API_SINCE, WuKongIMApi, parse_version
from channels.wukongim.config import WuKongIMChannelConfig
from channels.wukongim.convert import MESSAGE_NOTIFY, PLATFORM, query_params, to_batch
from channels.wukongim.reply import WuKongIMMessageSender, WuKongIMReplyStream


class WuKongIMProvider(CallbackSessionProvider[WuKongIMChannelConfig, WuKongIMApi]):
    """One bot on one WuKongIM server; its messages arrive at the callback listener."""

    platform = PLATFORM

    def __init__(
        self, config: WuKongIMChannelConfig, sink: InboundSink, *, observer: Observer | None = None
    ) -> None:
        super().__init__(config, sink, observer=observer)
        self._event_api = True  # until /varz names a version older than the event stream

    def _new_api(self) -> WuKongIMApi:
        token = self._config.token
        return WuKongIMApi(
            token=token.get_secret_value() if token is not None else "",
            api_base=self._config.api_base,
            bot_uid=self._config.bot_uid,
            **self._http_options(self._config.request_timeout),
        )

    def _new_sender(self, api: WuKongIMApi) -> MessageSender:
        return WuKongIMMessageSender(api, self._config.max_message_chars)

    def _new_reply(self, message: InboundMessage) -> CardReplyStream:
        streaming = self._config.stream == "event" and self._event_api
        return WuKongIMReplyStream(self._api, self._sender, message, streaming=streaming)

    async def _check_app(self) -> None:
        """One authenticated call: proves the token, and tells whether answers can stream."""
        version = await self._api.varz()
        parsed = parse_version(version)
        # a build without a version is given the benefit of the doubt: an event API that is
        # not there refuses the first event, and that answer goes out as messages
        self._event_api = parsed is None or parsed >= EVENT_API_SINCE
        if self._config.stream == "off":
            streams = "off (stream = off)"
        elif self._event_api:
            streams = "message event stream"
        else:
            streams = "off (the message event stream came with v2.2.4)"
        self._log.info("WuKongIM %s; answers: %s", version or "of unknown version", streams)

    # -- CallbackProvider --------------------------------------------------------------------------

    async def handle_callback(self, callback: Callback, deliver: BatchSink) -> CallbackAnswer:
        """Check the key, journal what a `msg.notify` batch holds for the bot, answer 200."""
        params = query_params(callback.query)
        self._check_key(params.get("key", ""))
        self._touch()
        event = params.get("event", "")
        if not event:
            raise CallbackMalformed("no event parameter: not a WuKongIM webhook")
        if event != MESSAGE_NOTIFY:
            # msg.offline, user.onlinestatus...: nothing for the bot, acknowledged
            return CallbackAnswer(ignored_events=1)
        if not isinstance(callback.payload, list):
            raise CallbackMalformed("a msg.notify body is a JSON array")
        batch = to_batch(self.channel_id, callback.payload, self._config.bot_uid)
        if batch.malformed:
            what = f"{batch.malformed} unreadable messages of a callback"
            self._ignore_unreadable(what, batch.malformed)
        intake = await self._deliver_batch(deliver, batch.messages) if batch.messages else Intake()
        return CallbackAnswer(intake=intake, ignored_events=batch.ignored)

    def _check_key(self, given: str) -> None:
        expected = self._config.webhook_key
        if expected is None:
            return
        if not proof_matches(given, expected.get_secret_value()):
            raise CallbackRejected("key", "the callback's key parameter is missing or wrong")
