"""Voice calls: started for an IM user by the app's backend, ended by it, by the cloud or by time.

A call joins the conversation the user's text chat on that channel uses (found or opened), gets a
secret of its own (ZEGO's `LLM.ApiKey`; for Alibaba, a signed `UserData`), and starts the cloud's
agent. Ending a call, whoever ends it and however often, happens once: the row is ended first
(the secret stops working at that instant, the answer streaming to it is cut), then the cloud's
instance is stopped, then, for Alibaba, the cloud's own record of the dialogue is compared with
the conversation's stored turns and any turn the endpoint never saw is added, once. An instance
the cloud started for a call that ended meanwhile is stopped at once. docs/platforms/voice.md,
"Calls".

The clouds' callbacks only ever change what channeld stored: they end a call, or mark an answer
cut short (trimmed to what was heard when the stored answer begins with it). They never add a
turn: what was heard of an answer not stored yet waits, briefly, for the endpoint to ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from channels.callbacks import Callback
from channels.users.directory import Who
from channels.users.resolver import UserResolver
from channels.voice.cloud_callbacks import CloudCallbacks
from channels.voice.clouds import CloudAgents
from channels.voice.config import AliyunVoice, VoiceConfig, ZegoVoice
from channels.voice.endpoint import FindRuntime, secret_hash
from channels.voice.events import CallEnded, TurnInterrupted
from channels.voice.gauge import CallObserver
from channels.voice.heard import Interruptions
from channels.voice.reconcile import DialogueRecord, add_unseen_turns
from channels.voice.requests import CallError, StartCall, call_view
from channels.voice.streams import CallStreams
from common.errors import ChannelError
from storage.repository import Store, VoiceCallRecord

log = logging.getLogger(__name__)

EXPIRY_CHECK = 5.0  # seconds between looks for calls past their end
END_REASON = 32  # characters of a call's end reason (its column)


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
        streams: CallStreams | None = None,
        request_timeout: float = 10.0,
        users: UserResolver | None = None,
    ) -> None:
        self._store = store
        # who may call: a refused or blocked person may not (without it, everyone may)
        self._users = users
        self._runtimes = runtimes
        self._clock = clock
        self._active = CallObserver(on_active)
        # the endpoint's registry of answers streaming, shared: an ended call's answer is cut
        self._streams = streams if streams is not None else CallStreams()
        self._timeout = request_timeout
        self._clouds = CloudAgents(user_data_key=user_data_key, timeout=request_timeout)
        self._task: asyncio.Task[None] | None = None
        self._endings: set[asyncio.Task[None]] = set()  # cloud stops and reconciliations
        # the [channels.voice] each call this process started began with, until it ends: its
        # instance is stopped with it even once the channel, or its voice section, is gone
        self._configs: dict[str, VoiceConfig] = {}
        self._callbacks = CloudCallbacks()  # ZEGO callback proofs seen, per channel
        self._interruptions = Interruptions(store)

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

    async def _admit(self, platform: str, user_id: str) -> None:
        """CallError 403 for someone the directory refuses (before anything is opened)."""
        if self._users is None or not self._users.asks_directory:
            return  # without a directory nobody is refused; blocking is checked on the user
        # the app names the caller by platform id alone: asked as an identity without a tenant
        if (await self._users.resolve_who(Who(platform, "", user_id))).refused:
            raise CallError(403, "refused", "this user is not allowed to use the assistant")

    def _not_blocked(self, user_id: str) -> None:
        """CallError 403 for a blocked user."""
        if self._users is not None and self._users.is_blocked(user_id):
            raise CallError(403, "blocked", "this user is blocked from the assistant")

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
        await self._admit(runtime.config.type, start.user_id)
        now = self._clock()
        conversation, user = await self._store.conversation_for_user(
            start.channel_id,
            platform=runtime.config.type,
            platform_user_id=start.user_id,
            idle_reset=timedelta(minutes=runtime.config.idle_reset_minutes),
            now=now,
        )
        self._not_blocked(user)  # the user the call would belong to, whatever its tenant
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
        await self._store.voice_call_add(call)  # the conversation is active from now
        try:
            instance, details, once = await self._clouds.start(runtime, voice, call, secret, start)
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
        # From here the cloud runs an instance: whatever goes wrong, it is stopped.
        self._configs[call.id] = voice
        try:
            started = await self._record_start(call, instance, details)
        except BaseException:
            # a failed write or a cancelled request: stopped in a task of ours, not the request's
            self._abandon(call, instance, voice)
            raise
        if started is None or started.ended_at is not None:
            if started is None:  # ended before the cloud's answer could be recorded
                await asyncio.shield(self._abandon(call, instance, voice))
            # else ended just after it was recorded: whoever ended it stops the instance
            raise CallError(409, "conflict", "the call was ended while it started")
        log.info(
            "voice call %s started on %s (%s) for conversation %s",
            call.id,
            call.channel_id,
            call.provider,
            call.conversation_id,
        )
        return {**call_view(started, self._clock()), **once}

    async def _record_start(
        self, call: VoiceCallRecord, instance: str, details: dict[str, Any]
    ) -> VoiceCallRecord | None:
        """The call with the cloud's answer recorded; None when it ended (or its conversation
        was deleted) before that; a call ended just after comes back ended."""
        if not await self._store.voice_call_started(call.id, instance_id=instance, details=details):
            return None
        # active at this instant: an ender from now on takes it off the gauge again
        self._active.add(call)
        started = await self._store.voice_call_get(call.id)
        if started is None or started.ended_at is not None:
            self._active.discard(call)  # its ender may have looked before it was counted
        return started

    def _abandon(
        self, call: VoiceCallRecord, instance: str, voice: VoiceConfig
    ) -> asyncio.Task[None]:
        """Ends the call, if it was not, and stops the instance the cloud started for it, in a
        task this object owns (a cancelled request does not cancel it)."""
        self._configs.pop(call.id, None)
        section = voice.zego if call.provider == "zego" else voice.aliyun

        async def stop() -> None:
            try:
                ended = await self._store.voice_call_end(
                    call.id, reason="start_failed", now=self._clock()
                )
                if ended is not None:
                    self._active.discard(ended)
                    self._streams.cut(ended.id)
            finally:
                if section is not None:
                    await self._clouds.stop(section, instance)
            log.info("voice call %s: the instance started for it is stopped", call.id)

        return self._own(self._logged(call, stop()), f"voice-abandon-{call.id}")

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

    async def end_channel(self, channel_id: str, voice: VoiceConfig | None = None) -> int:
        """Ends the channel's active calls ("channel stopped") and waits, bounded, while their
        instances are stopped; how many it ended. For a channel stopping, deleted, or losing its
        voice section: each instance is stopped with the settings the running channel has for
        its cloud, else those its call started with in this process, else `voice` (the
        channel's settings before the change, for the calls a previous run started)."""
        endings: list[asyncio.Task[None]] = []
        for call in await self._store.voice_calls_active(channel_id):
            ending = await self._end(call, "channel stopped", stop_cloud=True, fallback=voice)
            if ending is not None:
                endings.append(ending[1])
        if endings:
            # not cancelled on timeout, nor with the caller: they finish in the background
            await asyncio.wait(endings, timeout=self._timeout)
        return len(endings)

    def heard(self, call_id: str, round: str) -> str | None:
        """What the cloud said was heard of the round's answer, when it said so before the
        answer was stored; taken (a second ask gets None).

        The endpoint asks right before it stores an answer: when its answer starts with this
        text it stores this text instead, marked interrupted; otherwise its answer as it would
        (a played text that is not the beginning of the answer is not something channeld said).
        """
        return self._interruptions.take(call_id, round)

    # -- ending ------------------------------------------------------------------------------

    async def end(
        self, call: VoiceCallRecord, reason: str, *, stop_cloud: bool, wait: bool = False
    ) -> VoiceCallRecord | None:
        """Ends `call` once (None when it had ended already), then the cloud side in the
        background (or awaited, with `wait`): its instance stopped, its dialogue reconciled."""
        ending = await self._end(call, reason, stop_cloud=stop_cloud)
        if ending is None:
            return None
        ended, task = ending
        if wait:
            await asyncio.shield(task)
        return ended

    async def _end(
        self,
        call: VoiceCallRecord,
        reason: str,
        *,
        stop_cloud: bool,
        fallback: VoiceConfig | None = None,
    ) -> tuple[VoiceCallRecord, asyncio.Task[None]] | None:
        reason = reason[:END_REASON]  # a cloud's code may be any length
        ended = await self._store.voice_call_end(call.id, reason=reason, now=self._clock())
        if ended is None:
            return None
        self._active.discard(ended)
        self._streams.cut(ended.id)
        kept = self._configs.pop(ended.id, None) or fallback
        log.info("voice call %s ended (%s)", call.id, reason)
        task = self._own(
            self._logged(ended, self._after_end(ended, stop_cloud, kept)), f"voice-end-{call.id}"
        )
        return ended, task

    def _own(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)
        return task

    @staticmethod
    async def _logged(call: VoiceCallRecord, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except ChannelError as exc:
            log.warning("voice call %s: ending it on %s failed: %s", call.id, call.provider, exc)
        except Exception:  # a task in the background: its failure is logged, not lost
            log.exception("voice call %s: ending it failed", call.id)

    async def _after_end(
        self, call: VoiceCallRecord, stop_cloud: bool, kept: VoiceConfig | None
    ) -> None:
        if call.instance_id is None:
            return  # still starting: the start stops what the cloud started
        section = self._section(call, kept)
        if section is None:
            log.warning(
                "voice call %s: no [channels.voice.%s] to stop its instance with",
                call.id,
                call.provider,
            )
            return
        if isinstance(section, ZegoVoice):
            if stop_cloud:
                await self._clouds.stop(section, call.instance_id)
            return
        async with contextlib.aclosing(self._clouds.aliyun_api(section)) as aliyun_api:
            if stop_cloud:
                await aliyun_api.stop_instance(call.instance_id)
            await self.reconcile(call, aliyun_api)

    def _section(
        self, call: VoiceCallRecord, kept: VoiceConfig | None
    ) -> ZegoVoice | AliyunVoice | None:
        """The call's cloud settings: the running channel's, else those it started with."""
        runtime = self._runtimes(call.channel_id)
        for voice in (runtime.config.voice if runtime is not None else None, kept):
            if voice is None:
                continue
            section = voice.zego if call.provider == "zego" else voice.aliyun
            if section is not None:
                return section
        return None

    async def reconcile(self, call: VoiceCallRecord, api: DialogueRecord) -> int:
        """Adds the rounds Alibaba recorded in this call that the endpoint never saw; how many
        turns (channels/voice/reconcile.py)."""
        return await add_unseen_turns(self._store, call, api, self._clock)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK)
            try:
                # taken before the look: a call kept then and not active now has ended (here,
                # or in another process, whose end left its settings here)
                kept = set(self._configs)
                now = self._clock()
                active = await self._store.voice_calls_active()
                for call_id in kept.difference(call.id for call in active):
                    self._configs.pop(call_id, None)
                for call in active:
                    if call.expires_at <= now:
                        await self.end(call, "expired", stop_cloud=True)
            except Exception:  # the loop must outlive a busy database
                log.exception("voice calls: looking for expired calls failed")

    # -- callbacks ---------------------------------------------------------------------------

    async def handle_callback(self, channel_id: str, callback: Callback) -> int:
        """A cloud's agent callback on `/hooks/{channel_id}/voice`; how many events it held.

        CallbackRejected when no configured cloud's proof matches (or a ZEGO proof seen before
        comes with another body: "replayed"), CallbackMalformed for a body no cloud sends;
        LookupError when the channel has no voice calls. Only the events that change a call
        look it up, each instance once.
        """
        runtime = self._runtimes(channel_id)
        voice = runtime.config.voice if runtime is not None else None
        if voice is None:
            raise LookupError(channel_id)
        events, provider = self._callbacks.read(
            channel_id, voice, callback, now=self._clock().timestamp()
        )
        calls: dict[str, VoiceCallRecord | None] = {}
        for event in events:
            if not isinstance(event, CallEnded | TurnInterrupted):
                continue  # transcripts and status: the endpoint stored what was said
            if event.instance_id not in calls:
                calls[event.instance_id] = await self._store.voice_call_by_instance(
                    provider, event.instance_id
                )
            call = calls[event.instance_id]
            if call is None or call.channel_id != channel_id:
                log.info("voice callback for an unknown %s instance: ignored", provider)
                continue
            if isinstance(event, CallEnded):
                await self.end(call, event.reason, stop_cloud=False)
            else:
                await self._interruptions.apply(call, event, self._clock())
        return len(events)
