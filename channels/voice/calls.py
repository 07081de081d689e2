"""Voice calls: started for an IM user by the app's backend, ended by it, by the cloud or by time.

A call joins the conversation the user's text chat on that channel uses (found or opened), gets a
secret of its own (ZEGO's `LLM.ApiKey`; for Alibaba, a signed `UserData`), and starts the cloud's
agent. Ending a call, whoever ends it and however often, happens once: the row is ended first
(the secret stops working at that instant), then the cloud's instance is stopped, then, for
Alibaba, the cloud's own record of the dialogue is compared with the stored turns and any turn
the endpoint never saw is added, once. docs/platforms/voice.md, "Calls".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from channels import normalize
from channels.callbacks import Callback, CallbackRejected
from channels.live import ChannelRuntime
from channels.voice import aliyun, zego
from channels.voice.config import AliyunVoice, VoiceConfig, ZegoVoice
from channels.voice.endpoint import FindRuntime, secret_hash, user_data
from channels.voice.events import CallEnded, TurnInterrupted, VoiceEvent
from common.errors import ChannelError, ConfigError
from storage.repository import Store, VoiceCallRecord

log = logging.getLogger(__name__)

Provider = Literal["zego", "aliyun"]
PROVIDERS: tuple[Provider, ...] = ("zego", "aliyun")
EXPIRY_CHECK = 5.0  # seconds between looks for calls past their end
RECONCILE_MARGIN = timedelta(minutes=1)  # the cloud's clock may differ a little from ours
RECONCILE_TURNS = 1000  # the conversation's latest turns searched for a recorded one
ZEGO_ID = r"^[0-9A-Za-z_-]{1,32}$"  # ZEGO's UserId and AgentUserId rule


class DialogueRecord(Protocol):
    """Where a call's dialogue, as the cloud recorded it, is read back (Alibaba's API)."""

    async def list_dialogues(
        self, *, session_id: str, start_ms: int, end_ms: int
    ) -> list[aliyun.Dialogue]: ...


def _same_turn(role: str, content: str, other_role: str, other: str) -> bool:
    """Whether a stored turn is this recorded one: the same text (an answer cut short by an
    interruption is a beginning of the recorded one, or the other way round)."""
    if role != other_role:
        return False
    content = content.strip()
    if role == "assistant" and content and other:
        return content.startswith(other) or other.startswith(content)
    return content == other


class CallError(Exception):
    """A call that cannot be started or found; `status` and `code` are the API's answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ZegoJoin(_Body):
    """The RTC room the app's user is in, and the ids ZEGO's agent takes there."""

    room_id: str = Field(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_.-]+$")
    user_id: str = Field(pattern=ZEGO_ID)  # the user's ZEGO (RTC) user id
    user_stream_id: str = Field(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_.-]+$")
    agent_user_id: str = Field(pattern=ZEGO_ID)  # must differ from every real user's id
    agent_stream_id: str = Field(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_.-]+$")


class AliyunRuntime(_Body):
    """For apps that run the RTC channel themselves (StartAIAgentInstance)."""

    channel_id: str = Field(min_length=1, max_length=128)
    agent_user_id: str = Field(min_length=1, max_length=64)
    auth_token: SecretStr  # the agent's token to join that channel; passed on, never stored


class AliyunJoin(_Body):
    # voice only: the agent's RTC runtime is a VoiceChat (vision and avatar calls are not served)
    call_type: Literal["AUDIO_CALL"] = "AUDIO_CALL"
    runtime: AliyunRuntime | None = None


class StartCall(_Body):
    """`POST /api/v1/voice/calls`: who calls, on which channel, through which cloud."""

    provider: Provider
    channel_id: str = Field(min_length=1, max_length=64)
    user_id: str = Field(min_length=1, max_length=255)  # the user's id on the channel's platform
    zego: ZegoJoin | None = None
    aliyun: AliyunJoin | None = None

    @model_validator(mode="after")
    def _join_matches(self) -> Self:
        if self.provider == "zego" and self.zego is None:
            raise ValueError("a ZEGO call needs the zego object (room and stream ids)")
        if self.provider == "aliyun" and self.zego is not None:
            raise ValueError("an Alibaba call takes no zego object")
        if self.provider == "zego" and self.aliyun is not None:
            raise ValueError("a ZEGO call takes no aliyun object")
        return self


class CallObserver:
    """The calls-active gauge's feed; Metrics implements `voice_calls_active`."""

    def __init__(self, report: Callable[[str, str, int], None]) -> None:
        self._report = report
        self._active: dict[tuple[str, str], int] = {}

    def set(self, calls: list[VoiceCallRecord]) -> None:
        """Every active call, as found at start."""
        for key in self._active:
            self._report(*key, 0)
        self._active.clear()
        for call in calls:
            self.change(call, +1)

    def change(self, call: VoiceCallRecord, delta: int) -> None:
        key = (call.channel_id, call.provider)
        self._active[key] = max(0, self._active.get(key, 0) + delta)
        self._report(*key, self._active[key])


def call_view(call: VoiceCallRecord, now: datetime) -> dict[str, Any]:
    """The API's call object; never the secret, never a join token."""
    view: dict[str, Any] = {
        "id": call.id,
        "provider": call.provider,
        "channel_id": call.channel_id,
        "user_id": call.platform_user_id,
        "conversation_id": call.conversation_id,
        "started_at": call.started_at.isoformat(),
        "expires_at": call.expires_at.isoformat(),
        "status": "active" if call.active(now) else "ended",
    }
    if call.ended_at is not None:
        view["ended_at"] = call.ended_at.isoformat()
        view["end_reason"] = call.end_reason
    view.update(call.details)
    return view


class VoiceCalls:
    """Starts, lists and ends calls; takes the clouds' callbacks; ends calls past their time."""

    def __init__(
        self,
        store: Store,
        runtimes: FindRuntime,
        *,
        user_data_key: bytes,
        clock: Callable[[], datetime],
        on_active: Callable[[str, str, int], None],
        request_timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._runtimes = runtimes
        self._key = user_data_key
        self._clock = clock
        self._active = CallObserver(on_active)
        self._timeout = request_timeout
        self._registered: set[tuple[str, int, str]] = set()  # (api_base, app, agent) known
        self._task: asyncio.Task[None] | None = None
        self._endings: set[asyncio.Task[None]] = set()  # cloud stops and reconciliations

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Counts the calls a previous run left active and begins ending calls past their time."""
        self._active.set(await self._store.voice_calls_active())
        if self._task is None:
            self._task = asyncio.create_task(self._expire_loop(), name="voice-call-expiry")

    async def stop(self) -> None:
        """Stops the expiry loop and waits (bounded) for the cloud calls under way."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._endings:
            await asyncio.wait(set(self._endings), timeout=self._timeout)
            for task in self._endings:
                task.cancel()

    # -- the admin API's operations ----------------------------------------------------------

    async def start_call(self, start: StartCall) -> dict[str, Any]:
        """Opens the call, starts the cloud's agent and returns what the app needs to join."""
        runtime = self._runtimes(start.channel_id)
        if runtime is None:
            raise CallError(404, "not_found", f"no running channel {start.channel_id!r}")
        voice = runtime.config.voice
        if voice is None or getattr(voice, start.provider) is None:
            raise CallError(
                409,
                "voice_not_configured",
                f"channel {start.channel_id!r} has no [channels.voice.{start.provider}] section",
            )
        now = self._clock()
        conversation, user = await self._store.conversation_for_user(
            start.channel_id,
            platform=runtime.config.type,
            platform_user_id=start.user_id,
            idle_reset=timedelta(minutes=runtime.config.idle_reset_minutes),
            now=now,
        )
        secret = secrets.token_urlsafe(32)
        call = VoiceCallRecord(
            id=uuid.uuid4().hex,
            channel_id=start.channel_id,
            provider=start.provider,
            conversation_id=conversation.id,
            user_id=user,
            platform_user_id=start.user_id,
            secret_hash=secret_hash(secret),
            instance_id=None,
            details={},
            started_at=now,
            expires_at=now + timedelta(seconds=voice.max_call_seconds),
            ended_at=None,
            end_reason=None,
        )
        await self._store.voice_call_add(call)
        try:
            instance, details, once = await self._start_cloud(runtime, voice, call, secret, start)
        except ChannelError as exc:
            await self._store.voice_call_end(call.id, reason="start_failed", now=self._clock())
            log.warning(
                "voice call on %s: %s did not start it: %s", call.channel_id, call.provider, exc
            )
            raise CallError(
                502, "cloud_error", f"{start.provider} did not start the call: {exc}"
            ) from None
        except BaseException:
            await self._store.voice_call_end(call.id, reason="start_failed", now=self._clock())
            raise
        await self._store.voice_call_started(call.id, instance_id=instance, details=details)
        started = await self._store.voice_call_get(call.id)
        if started is None:  # deleted with its conversation in between
            raise CallError(409, "conflict", "the call's conversation was deleted")
        self._active.change(started, +1)
        log.info(
            "voice call %s started on %s (%s) for conversation %s",
            call.id,
            call.channel_id,
            call.provider,
            call.conversation_id,
        )
        return {**call_view(started, self._clock()), **once}

    async def list_calls(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        """The active calls (not ended, not past their end)."""
        now = self._clock()
        calls = await self._store.voice_calls_active(channel_id)
        return [call_view(call, now) for call in calls if call.active(now)]

    async def get_call(self, call_id: str) -> dict[str, Any]:
        call = await self._store.voice_call_get(call_id)
        if call is None:
            raise CallError(404, "not_found", f"no voice call {call_id!r}")
        return call_view(call, self._clock())

    async def stop_call(self, call_id: str) -> dict[str, Any]:
        """Ends the call (its secret stops working now) and stops the cloud's agent."""
        call = await self._store.voice_call_get(call_id)
        if call is None:
            raise CallError(404, "not_found", f"no voice call {call_id!r}")
        ended = await self.end(call, "stopped", stop_cloud=True, wait=True)
        return call_view(ended or call, self._clock())

    # -- ending ------------------------------------------------------------------------------

    async def end(
        self, call: VoiceCallRecord, reason: str, *, stop_cloud: bool, wait: bool = False
    ) -> VoiceCallRecord | None:
        """Ends `call` once (None when it had ended already), then the cloud side in the
        background (or awaited, with `wait`): its instance stopped, its dialogue reconciled."""
        ended = await self._store.voice_call_end(call.id, reason=reason, now=self._clock())
        if ended is None:
            return None
        self._active.change(ended, -1)
        log.info("voice call %s ended (%s)", call.id, reason)
        task = asyncio.create_task(self._after_end(ended, stop_cloud), name=f"voice-end-{call.id}")
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)
        if wait:
            await asyncio.shield(task)
        return ended

    async def _after_end(self, call: VoiceCallRecord, stop_cloud: bool) -> None:
        runtime = self._runtimes(call.channel_id)
        voice = runtime.config.voice if runtime is not None else None
        if voice is None or call.instance_id is None:
            return
        try:
            if call.provider == "zego" and voice.zego is not None and stop_cloud:
                async with contextlib.aclosing(self._zego(voice.zego)) as zego_api:
                    await zego_api.delete_instance(call.instance_id)
            elif call.provider == "aliyun" and voice.aliyun is not None:
                async with contextlib.aclosing(self._aliyun(voice.aliyun)) as aliyun_api:
                    if stop_cloud:
                        await aliyun_api.stop_instance(call.instance_id)
                    await self.reconcile(call, aliyun_api)
        except ChannelError as exc:
            log.warning("voice call %s: ending it on %s failed: %s", call.id, call.provider, exc)

    async def reconcile(self, call: VoiceCallRecord, api: DialogueRecord) -> int:
        """Adds the rounds Alibaba recorded that the endpoint never saw; how many turns."""
        ended = call.ended_at or self._clock()
        dialogues = await api.list_dialogues(
            session_id=call.conversation_id,
            start_ms=int((call.started_at - RECONCILE_MARGIN).timestamp() * 1000),
            end_ms=int((ended + RECONCILE_MARGIN).timestamp() * 1000),
        )
        stored = await self._store.voice_rounds(call.id)
        said = [
            (turn.role, turn.content)
            for turn in await self._store.recent_messages(call.conversation_id, RECONCILE_TURNS)
            if turn.voice_call_id == call.id
        ]
        added = 0
        for dialogue in sorted(dialogues, key=lambda d: (d.time_ms, d.role != "user")):
            text = normalize.text(dialogue.text).strip()
            if (dialogue.round_id, dialogue.role) in stored or not text:
                continue
            if any(_same_turn(role, content, dialogue.role, text) for role, content in said):
                # Alibaba's RoundId may not be the sentenceId the endpoint saw: the text decides
                continue
            await self._store.voice_turn_put(
                call.conversation_id,
                call_id=call.id,
                round=dialogue.round_id,
                role=dialogue.role,
                content=text,
                now=self._clock(),
            )
            stored.add((dialogue.round_id, dialogue.role))
            said.append((dialogue.role, text))
            added += 1
        if added:
            log.info("voice call %s: %d turn(s) added from Alibaba's record", call.id, added)
        return added

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK)
            try:
                now = self._clock()
                for call in await self._store.voice_calls_active():
                    if call.expires_at <= now:
                        await self.end(call, "expired", stop_cloud=True)
            except Exception:  # the loop must outlive a busy database
                log.exception("voice calls: looking for expired calls failed")

    # -- callbacks ---------------------------------------------------------------------------

    async def handle_callback(self, channel_id: str, callback: Callback) -> int:
        """A cloud's agent callback on `/hooks/{channel_id}/voice`; how many events it held.

        CallbackRejected when no configured cloud's proof matches, CallbackMalformed for a body
        no cloud sends; LookupError when the channel has no voice calls.
        """
        runtime = self._runtimes(channel_id)
        voice = runtime.config.voice if runtime is not None else None
        if voice is None:
            raise LookupError(channel_id)
        events, provider = self._events(voice, callback)
        for event in events:
            await self._apply(channel_id, provider, event)
        return len(events)

    def _events(self, voice: VoiceConfig, callback: Callback) -> tuple[list[VoiceEvent], str]:
        now = self._clock().timestamp()
        if "authorization" in callback.headers and voice.aliyun is not None:
            token = voice.aliyun.callback_token.get_secret_value()
            aliyun.check_callback(callback, token=token, now=now)
            return aliyun.parse_event(callback.payload), "aliyun"
        if voice.zego is not None:
            zego.check_callback(callback, secret=voice.zego.callback_key(), now=now)
            return [zego.parse_event(callback.payload)], "zego"
        raise CallbackRejected("signature", "no proof this channel's clouds give")

    async def _apply(self, channel_id: str, provider: str, event: VoiceEvent) -> None:
        call = await self._store.voice_call_by_instance(provider, event.instance_id)
        if call is None or call.channel_id != channel_id:
            log.info("voice callback for an unknown %s instance: ignored", provider)
            return
        if isinstance(event, CallEnded):
            await self.end(call, event.reason, stop_cloud=False)
        elif isinstance(event, TurnInterrupted):
            trimmed = await self._store.voice_turn_trim(
                call.id, event.round, text=event.played_text, now=self._clock()
            )
            if not trimmed and event.played_text:
                # ahead of the endpoint's own write of the answer, which then keeps this one
                await self._store.voice_turn_put(
                    call.conversation_id,
                    call_id=call.id,
                    round=event.round,
                    role="assistant",
                    content=event.played_text,
                    now=self._clock(),
                    interrupted=True,
                )

    # -- the clouds ----------------------------------------------------------------------------

    async def _start_cloud(
        self,
        runtime: ChannelRuntime,
        voice: VoiceConfig,
        call: VoiceCallRecord,
        secret: str,
        start: StartCall,
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(instance id, details kept with the call, fields returned once: tokens)."""
        if start.provider == "zego" and voice.zego is not None:
            return await self._start_zego(
                runtime=runtime,
                voice=voice,
                config=voice.zego,
                call=call,
                secret=secret,
                start=start,
            )
        if start.provider == "aliyun" and voice.aliyun is not None:
            return await self._start_aliyun(voice, voice.aliyun, call, start)
        raise ConfigError(f"{start.provider} is not configured")

    async def _start_zego(
        self,
        *,
        runtime: ChannelRuntime,
        voice: VoiceConfig,
        config: ZegoVoice,
        call: VoiceCallRecord,
        secret: str,
        start: StartCall,
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        join = start.zego
        if join is None:
            raise ConfigError("a ZEGO call needs its room and stream ids")
        llm: dict[str, Any] = {
            "Url": voice.endpoint_url(call.channel_id),
            "ApiKey": secret,
            "Model": runtime.agent.name,
            "AddAgentInfo": True,
            "AgentExtraInfo": {"call": call.id},
        }
        async with contextlib.aclosing(self._zego(config)) as api:
            key = (config.api_base, config.app_id, config.agent_id)
            if key not in self._registered:
                # the registered agent's LLM is a placeholder: every instance brings its own
                await api.register_agent(
                    config.agent_id,
                    name="channeld",
                    llm={**llm, "ApiKey": "per-instance", "AgentExtraInfo": {}},
                    tts=config.tts,
                    asr=config.asr,
                )
                self._registered.add(key)
            instance = await api.create_instance(
                agent_id=config.agent_id,
                user_id=join.user_id,
                rtc={
                    "RoomId": join.room_id,
                    "AgentStreamId": join.agent_stream_id,
                    "AgentUserId": join.agent_user_id,
                    "UserStreamId": join.user_stream_id,
                },
                llm=llm,
                tts=config.tts,
                asr=config.asr,
                # the history is channeld's: ZEGO keeps only a short window of its own, and no
                # ZIM sync (which would store a second copy of the call)
                message_history={"SyncMode": 1, "Messages": [], "WindowSize": config.window_size},
                callback_config={"Interrupted": 1},
            )
        details = {"agent_instance_id": instance, "zego": join.model_dump()}
        return instance, details, {}

    async def _start_aliyun(
        self, voice: VoiceConfig, config: AliyunVoice, call: VoiceCallRecord, start: StartCall
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        async with contextlib.aclosing(self._aliyun(config)) as api:
            return await self._start_aliyun_on(api, voice, config, call, start)

    async def _start_aliyun_on(
        self,
        api: aliyun.AliyunVoiceApi,
        voice: VoiceConfig,
        config: AliyunVoice,
        call: VoiceCallRecord,
        start: StartCall,
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        data = user_data(self._key, call.channel_id, call.id)
        join = start.aliyun or AliyunJoin()
        if join.runtime is not None:
            # the app manages RTC itself: it gives the channel, the agent's user and its token
            instance = await api.start_instance(
                agent_id=config.agent_id,
                session_id=call.conversation_id,
                user_data=data,
                runtime={
                    "ChannelId": join.runtime.channel_id,
                    "AgentUserId": join.runtime.agent_user_id,
                    "AuthToken": join.runtime.auth_token.get_secret_value(),
                },
            )
            return instance, {"instance_id": instance, "call_type": join.call_type}, {}
        joined = await api.generate_call(
            agent_id=config.agent_id,
            session_id=call.conversation_id,
            user_id=f"u{call.id[:31]}",
            user_data=data,
            expire_seconds=voice.max_call_seconds,
        )
        details = {
            "call_type": join.call_type,
            "instance_id": joined.instance_id,
            "rtc_channel_id": joined.rtc_channel_id,
            "rtc_user_id": joined.rtc_user_id,
            "agent_user_id": joined.agent_user_id,
        }
        # the join token is the app's: returned once, never stored
        return joined.instance_id, details, {"rtc_join_token": joined.rtc_join_token}

    def _zego(self, config: ZegoVoice) -> zego.ZegoAgentApi:
        return zego.ZegoAgentApi(
            app_id=config.app_id,
            server_secret=config.server_secret.get_secret_value(),
            api_base=config.api_base,
            timeout=self._timeout,
        )

    def _aliyun(self, config: AliyunVoice) -> aliyun.AliyunVoiceApi:
        return aliyun.AliyunVoiceApi(
            access_key_id=config.access_key_id,
            access_key_secret=config.access_key_secret.get_secret_value(),
            region=config.region,
            endpoint=config.endpoint,
            timeout=self._timeout,
        )
