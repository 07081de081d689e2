"""The callback listener: webhook platforms' servers POST their users' messages here.

Who may reach it: the platforms' servers, usually through a reverse proxy, so it may listen
beyond loopback; each callback is then proven by the platform's own check (a signature and time
window, or a secret key in the URL), which the channel's provider makes. Browsers have no business
here: a request carrying `Origin` or `Sec-Fetch-Site` is refused, so no web page can post forged
messages to a listener on the operator's machine.

Every refusal is decided before anything is journaled, in this order: a browser's request (403),
an unknown, disabled or non-webhook channel (404), a channel not connected yet (503, the
platform retries), a body over `max_body_bytes` (413, read no further), not JSON (400), then the
provider's checks (401 for a failed signature, time or key; 400 for a shape the platform never
sends). A callback is answered only once its messages are journaled; when the journal write
fails the answer is 503 and the platform sends it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from channels.callbacks import Callback, CallbackAnswer, CallbackMalformed, CallbackRejected
from channels.config import ChannelConfigBase
from channels.live import LiveChannel, NotACallbackChannel
from channels.model import ChannelState
from channels.voice.calls import VoiceCalls
from channels.voice.endpoint import VoiceEndpoint, VoiceRefused
from channels.voice.sse import CONTENT_TYPE
from common.endpoint import is_loopback
from common.errors import ChannelError
from daemon.config import WebhooksSection, unproven_error
from daemon.metrics import Metrics

log = logging.getLogger(__name__)

HOOK_PATH = "/hooks/{channel_id}"
VOICE_HOOK_PATH = "/hooks/{channel_id}/voice"
VOICE_PATH = "/voice/{channel_id}/chat/completions"
# A callback's body arrives within this, or 408: a public port must not hold a slow sender's
# connection (and its file descriptor) for ever
READ_TIMEOUT = 10.0
# callbacks read or journaled at once; more are answered 503 (the platforms send them again)
MAX_IN_FLIGHT = 256
# refusals are logged at most once per this many seconds per channel and reason (metrics count
# each one): whoever reaches the port must not be able to flood the log
REFUSAL_LOG_INTERVAL = 10.0

# The running channel of an id, or None (unknown, disabled, deleted)
FindChannel = Callable[[str], LiveChannel | None]


class _Refused(Exception):
    """A callback refused before anything was journaled."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason  # the metric label


class CallbackListener:
    """One aiohttp server for every webhook channel; started only when one exists."""

    def __init__(self, settings: WebhooksSection, channels: FindChannel, metrics: Metrics) -> None:
        self._settings = settings
        self._channels = channels
        self._metrics = metrics
        # aiohttp stops reading a body past this and answers 413 itself
        self._app = web.Application(client_max_size=settings.max_body_bytes)
        self._app.router.add_post(HOOK_PATH, self._hook)
        self._app.router.add_post(VOICE_HOOK_PATH, self._voice_hook)
        self._app.router.add_post(VOICE_PATH, self._voice)
        self._voice_endpoint: VoiceEndpoint | None = None
        self._voice_calls: VoiceCalls | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._in_flight = 0
        # (channel label, reason) -> (time logged last, refusals since): keys are bounded by the
        # configured channels (unknown ids share the empty label) times the fixed reasons
        self._refusals_logged: dict[tuple[str, str], tuple[float, int]] = {}

    def serve_voice(self, endpoint: VoiceEndpoint, calls: VoiceCalls) -> None:
        """Answer the voice routes with these (before `start`)."""
        self._voice_endpoint = endpoint
        self._voice_calls = calls

    @property
    def running(self) -> bool:
        return self._runner is not None

    def refuses(self, config: ChannelConfigBase) -> str | None:
        """Why a channel may not be served here: callbacks with no proof on an exposed address."""
        reason = config.unproven_callbacks()
        if reason is None or is_loopback(self._settings.host):
            return None
        return unproven_error(config.id, reason, self._settings)

    def hook_url(self, channel_id: str) -> str:
        """The URL to give the platform for `channel_id`."""
        return self._settings.hook_url(channel_id, self.port)

    async def start(self) -> None:
        """Bind and serve; idempotent."""
        if self._runner is not None:
            return
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._settings.host, self._settings.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("callback listener on %s", self._settings.hook_url("{channel_id}", self.port))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        channel_id = request.match_info["channel_id"]
        live = self._channels(channel_id)
        # an id nobody configured is counted without labels: callers must not mint series
        labels = (channel_id, live.runtime.config.type) if live is not None else ("", "")
        try:
            if self._in_flight >= MAX_IN_FLIGHT:
                raise _Refused(503, "busy", f"{MAX_IN_FLIGHT} callbacks under way already")
            self._in_flight += 1
            try:
                answer = await self._answer(request, live)
            finally:
                self._in_flight -= 1
        except _Refused as refused:
            self._log_refusal(labels[0], refused)
            self._metrics.callback(*labels, "rejected", refused.reason)
            return web.json_response({"error": refused.reason}, status=refused.status)
        self._metrics.callback(*labels, _outcome(answer))
        if answer.ignored_events:
            self._metrics.message_ignored(*labels, answer.ignored_events)
        self._metrics.callback_latency(*labels, time.perf_counter() - started)
        if answer.body is None:
            return web.Response(status=answer.status)
        return web.json_response(answer.body, status=answer.status)

    def _log_refusal(self, channel: str, refused: _Refused, what: str = "callback") -> None:
        key = (channel, refused.reason)
        now = time.monotonic()
        last, since = self._refusals_logged.get(key, (float("-inf"), 0))
        if now - last < REFUSAL_LOG_INTERVAL:
            self._refusals_logged[key] = (last, since + 1)
            return
        self._refusals_logged[key] = (now, 0)
        more = f" ({since} more since the last such line)" if since else ""
        log.info("%s for %r refused (%s): %s%s", what, channel, refused.reason, refused, more)

    async def _answer(self, request: web.Request, live: LiveChannel | None) -> CallbackAnswer:
        _not_a_browser(request)
        if live is None or not live.takes_callbacks:
            # the same answer for a channel that exists but takes no callbacks: nothing to probe
            raise _Refused(404, "unknown_channel", "no running webhook channel with this id")
        if live.supervisor.state is not ChannelState.CONNECTED:
            raise _Refused(503, "not_connected", "the channel is not connected yet")
        callback = await self._callback(request)
        try:
            return await live.handle_callback(callback)
        except NotACallbackChannel:
            raise _Refused(404, "unknown_channel", "this channel takes no callbacks") from None
        except CallbackRejected as exc:
            raise _Refused(401, exc.reason, str(exc)) from exc
        except CallbackMalformed as exc:
            raise _Refused(400, "malformed", str(exc)) from exc
        except ChannelError as exc:
            # not journaled (a busy database, a shutdown): unacknowledged, the platform retries
            raise _Refused(503, "not_journaled", str(exc)) from exc

    async def _callback(self, request: web.Request) -> Callback:
        """The body, read within the size and time limits, as a JSON callback."""
        limit = self._settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _Refused(413, "too_large", f"body over {limit} bytes")
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Refused(413, "too_large", f"body over {limit} bytes") from None
        except TimeoutError:
            raise _Refused(408, "slow_body", f"no whole body within {READ_TIMEOUT:.0f}s") from None
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise _Refused(400, "not_json", "the body is not JSON") from None
        headers = {name.lower(): value for name, value in request.headers.items()}
        return Callback(request.rel_url.raw_query_string, headers, body, payload)

    async def _guarded(
        self,
        channel_id: str,
        what: str,
        work: Callable[[], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Runs a voice route's `work` under the in-flight cap; refusals answered and counted."""
        try:
            if self._in_flight >= MAX_IN_FLIGHT:
                raise _Refused(503, "busy", f"{MAX_IN_FLIGHT} callbacks under way already")
            self._in_flight += 1
            try:
                return await work()
            finally:
                self._in_flight -= 1
        except _Refused as refused:
            self._log_refusal(channel_id, refused, what)
            self._metrics.callback(channel_id, "voice", "rejected", refused.reason)
            return web.json_response({"error": refused.reason}, status=refused.status)
        except Exception as exc:  # noqa: BLE001 - a bug or a broken database: answered, logged
            # rate-limited like a refusal: whoever can reach the port must not flood the log
            self._log_refusal(channel_id, _Refused(500, "internal", type(exc).__name__), what)
            self._metrics.callback(channel_id, "voice", "rejected", "internal")
            return web.json_response({"error": "internal"}, status=500)

    async def _voice_hook(self, request: web.Request) -> web.StreamResponse:
        """A voice cloud's agent callback: call ended, answer interrupted."""
        channel_id = request.match_info["channel_id"]
        label = channel_id if self._voice_channel(channel_id) else ""

        async def work() -> web.StreamResponse:
            _not_a_browser(request)
            if not label or self._voice_calls is None:
                raise _Refused(404, "unknown_channel", "no running channel with voice calls")
            callback = await self._callback(request)
            try:
                await self._voice_calls.handle_callback(channel_id, callback)
            except LookupError:
                raise _Refused(
                    404, "unknown_channel", "no running channel with voice calls"
                ) from None
            except CallbackRejected as exc:
                raise _Refused(401, exc.reason, str(exc)) from exc
            except CallbackMalformed as exc:
                raise _Refused(400, "malformed", str(exc)) from exc
            except ChannelError as exc:
                raise _Refused(503, "not_recorded", str(exc)) from exc
            self._metrics.callback(label, "voice", "ok")
            return web.json_response({"code": 0, "message": "ok"})

        return await self._guarded(label, "voice callback", work)

    async def _voice(self, request: web.Request) -> web.StreamResponse:
        """A voice agent's LLM request: authenticated, then answered as a stream."""
        channel_id = request.match_info["channel_id"]
        label = channel_id if self._voice_channel(channel_id) else ""

        async def work() -> web.StreamResponse:
            _not_a_browser(request)
            if not label or self._voice_endpoint is None:
                raise _Refused(404, "unknown_channel", "no running channel with voice calls")
            callback = await self._callback(request)
            try:
                turn = await self._voice_endpoint.open_turn(
                    channel_id, callback.headers, callback.payload
                )
            except VoiceRefused as exc:
                raise _Refused(exc.status, exc.reason, str(exc)) from None
            response = web.StreamResponse(
                headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            try:
                await self._voice_endpoint.speak(turn, response.write)
                await response.write_eof()
            except ConnectionError:
                pass  # the cloud hung up mid-answer: stored as interrupted by `speak`
            except Exception as exc:  # noqa: BLE001 - the headers left: the stream just ends
                self._log_refusal(channel_id, _Refused(500, "internal", type(exc).__name__))
            return response

        return await self._guarded(label, "voice LLM request", work)

    def _voice_channel(self, channel_id: str) -> bool:
        live = self._channels(channel_id)
        return live is not None and live.runtime.config.voice is not None


def _not_a_browser(request: web.Request) -> None:
    if "Origin" in request.headers or "Sec-Fetch-Site" in request.headers:
        raise _Refused(403, "browser", "a browser's request; callbacks come from servers")


def _outcome(answer: CallbackAnswer) -> str:
    intake = answer.intake
    if intake.journaled:
        return "ok"
    return "duplicate" if intake.duplicates else "ignored"
