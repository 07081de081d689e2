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
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from channels import normalize
from channels.callbacks import Callback, CallbackRejected, SeenProofs
from channels.live import ChannelRuntime
from channels.voice import aliyun, zego
from channels.voice.config import AliyunVoice, VoiceConfig, ZegoVoice
from channels.voice.endpoint import MAX_UTTERANCE, FindRuntime, secret_hash, user_data
from channels.voice.events import CallEnded, TurnInterrupted, VoiceEvent
from channels.voice.streams import CallStreams
from common.errors import ChannelError, ConfigError
from storage.repository import Store, VoiceCallRecord

log = logging.getLogger(__name__)

Provider = Literal["zego", "aliyun"]
PROVIDERS: tuple[Provider, ...] = ("zego", "aliyun")
EXPIRY_CHECK = 5.0  # seconds between looks for calls past their end
RECONCILE_MARGIN = timedelta(minutes=1)  # the cloud's clock may differ a little from ours
RECONCILE_TURNS = 1000  # the conversation's latest voice turns searched for a recorded one
RECONCILE_ADDED = 200  # turns one reconciliation adds at most: a call is far shorter
RECONCILE_TEXT = MAX_UTTERANCE  # characters of a recorded turn kept, as the endpoint's utterances
ZEGO_ID = r"^[0-9A-Za-z_-]{1,32}$"  # ZEGO's UserId and AgentUserId rule
END_REASON = 32  # characters of a call's end reason (its column)
# an interruption reported this long after its call ended changes nothing: the cloud's last
# callbacks come within seconds of the end, a replayed or forged one comes whenever
INTERRUPT_GRACE = timedelta(seconds=60)
HEARD_PENDING = 1000  # interruptions waiting for their answer to be stored; the oldest go first
# seconds a ZEGO callback's proof is remembered: its Timestamp may be 300 s either side of ours,
# so one proof passes the check for 600 s, and ZEGO retries for 62 s after the first attempt
PROOF_MEMORY = 900.0


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
    """The calls-active gauge's feed; Metrics implements `voice_calls_active`.

    It counts call ids, not increments: a call counted twice, or ended by two enders, or ended
    before it was counted, moves the gauge once at most.
    """

    def __init__(self, report: Callable[[str, str, int], None]) -> None:
        self._report = report
        self._active: dict[tuple[str, str], set[str]] = {}

    def set(self, calls: list[VoiceCallRecord]) -> None:
        """Every active call, as found at start."""
        for key in self._active:
            self._report(*key, 0)
        self._active.clear()
        for call in calls:
            self.add(call)

    def add(self, call: VoiceCallRecord) -> None:
        """`call` is active."""
        self._change(call, add=True)

    def discard(self, call: VoiceCallRecord) -> None:
        """`call` is not active (any more)."""
        self._change(call, add=False)

    def _change(self, call: VoiceCallRecord, *, add: bool) -> None:
        key = (call.channel_id, call.provider)
        ids = self._active.setdefault(key, set())
        if add:
            ids.add(call.id)
        else:
            ids.discard(call.id)
        self._report(*key, len(ids))


class HeardParts:
    """What the cloud said was heard of answers the endpoint had not stored yet, by (call,
    round); bounded, the oldest dropped first. Kept in memory only: an interruption reported
    before its answer existed is a race of seconds, not something to survive a restart."""

    def __init__(self, limit: int = HEARD_PENDING) -> None:
        self._limit = limit
        self._parts: OrderedDict[tuple[str, str], str] = OrderedDict()

    def put(self, call_id: str, round: str, played: str) -> None:
        self._parts[(call_id, round)] = played
        self._parts.move_to_end((call_id, round))
        while len(self._parts) > self._limit:
            self._parts.popitem(last=False)

    def take(self, call_id: str, round: str) -> str | None:
        return self._parts.pop((call_id, round), None)


def _zego_proof(payload: object) -> str | None:
    """A ZEGO callback's proof as a key: the signed fields as the signature covers them."""
    if not isinstance(payload, Mapping):
        return None
    fields = [payload.get(name) for name in ("Timestamp", "Nonce", "Signature")]
    if not all(isinstance(f, str | int) and not isinstance(f, bool) for f in fields):
        return None
    timestamp, nonce, signature = (str(f) for f in fields)
    return f"{timestamp}\n{nonce}\n{signature.lower()}"


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
        streams: CallStreams | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._runtimes = runtimes
        self._key = user_data_key
        self._clock = clock
        self._active = CallObserver(on_active)
        # the endpoint's registry of answers streaming, shared: an ended call's answer is cut
        self._streams = streams if streams is not None else CallStreams()
        self._timeout = request_timeout
        self._registered: set[tuple[str, int, str]] = set()  # (api_base, app, agent) known
        self._task: asyncio.Task[None] | None = None
        self._endings: set[asyncio.Task[None]] = set()  # cloud stops and reconciliations
        # the [channels.voice] each call this process started began with, until it ends: its
        # instance is stopped with it even once the channel, or its voice section, is gone
        self._configs: dict[str, VoiceConfig] = {}
        self._proofs: dict[str, SeenProofs] = {}  # ZEGO callback proofs seen, per channel
        self._heard = HeardParts()

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
        await self._store.voice_call_add(call)  # the conversation is active from now
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
                    await self._stop_cloud(call, section, instance)
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
        return self._heard.take(call_id, round)

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
                await self._stop_cloud(call, section, call.instance_id)
            return
        async with contextlib.aclosing(self._aliyun(section)) as aliyun_api:
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

    async def _stop_cloud(
        self, call: VoiceCallRecord, section: ZegoVoice | AliyunVoice, instance: str
    ) -> None:
        if isinstance(section, ZegoVoice):
            async with contextlib.aclosing(self._zego(section)) as zego_api:
                await zego_api.delete_instance(instance)
        else:
            async with contextlib.aclosing(self._aliyun(section)) as aliyun_api:
                await aliyun_api.stop_instance(instance)

    async def reconcile(self, call: VoiceCallRecord, api: DialogueRecord) -> int:
        """Adds the rounds Alibaba recorded in this call that the endpoint never saw; how many
        turns.

        Alibaba's session is the conversation, which other calls share: only the time between
        the previous call's end and the next call's start is asked for, only spoken sentences
        are taken, and a sentence any call of the conversation stored already is not added.
        """
        window = await self._window(call)
        if window is None:
            return 0
        dialogues = await api.list_dialogues(
            session_id=call.conversation_id, start_ms=window[0], end_ms=window[1]
        )
        stored = await self._store.voice_rounds(call.id)
        said = [
            (turn.role, turn.content)
            for turn in await self._store.voice_turns_of_conversation(
                call.conversation_id, RECONCILE_TURNS
            )
        ]
        added = 0
        for dialogue in sorted(dialogues, key=lambda d: (d.time_ms, d.role != "user")):
            if dialogue.source != "call":
                continue  # the same agent's text chat in this session, not this call
            text = normalize.text(dialogue.text).strip()[:RECONCILE_TEXT]
            if (dialogue.round_id, dialogue.role) in stored or not text:
                continue
            if any(_same_turn(role, content, dialogue.role, text) for role, content in said):
                # Alibaba's RoundId may not be the sentenceId the endpoint saw: the text decides
                continue
            if added == RECONCILE_ADDED:
                log.warning(
                    "voice call %s: Alibaba recorded more than %d turns the endpoint never saw; "
                    "the rest are not added",
                    call.id,
                    RECONCILE_ADDED,
                )
                break
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

    async def _window(self, call: VoiceCallRecord) -> tuple[int, int] | None:
        """The milliseconds of the call's own part of its session, with a margin for the
        cloud's clock that stops at the conversation's previous and next calls; None: none."""
        low = call.started_at - RECONCILE_MARGIN
        high = (call.ended_at or self._clock()) + RECONCILE_MARGIN
        calls = await self._store.voice_calls_of_conversation(call.conversation_id)
        ids = [other.id for other in calls]
        if call.id in ids:
            at = ids.index(call.id)
            if at > 0:
                low = max(low, calls[at - 1].ended_at or call.started_at)
            if at + 1 < len(calls):
                high = min(high, calls[at + 1].started_at)
        if low >= high:
            return None
        return int(low.timestamp() * 1000), int(high.timestamp() * 1000)

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
        events, provider = self._events(channel_id, voice, callback)
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
                await self._interrupted(call, event)
        return len(events)

    def _events(
        self, channel_id: str, voice: VoiceConfig, callback: Callback
    ) -> tuple[list[VoiceEvent], str]:
        now = self._clock().timestamp()
        if "authorization" in callback.headers and voice.aliyun is not None:
            token = voice.aliyun.callback_token.get_secret_value()
            aliyun.check_callback(callback, token=token, now=now)
            return aliyun.parse_event(callback.payload), "aliyun"
        if voice.zego is not None:
            # ZEGO signs a timestamp and a nonce, not the body: a proof seen before passes only
            # with the body it came with (ZEGO's retry), whatever its age
            proofs = self._proofs.setdefault(channel_id, SeenProofs(keep=PROOF_MEMORY))
            proof = _zego_proof(callback.payload)
            if proof is None or not proofs.retried(proof, callback.body):
                zego.check_callback(callback, secret=voice.zego.callback_key(), now=now)
                if proof is not None:
                    proofs.remember(proof, callback.body)
            return [zego.parse_event(callback.payload)], "zego"
        raise CallbackRejected("signature", "no proof this channel's clouds give")

    async def _interrupted(self, call: VoiceCallRecord, event: TurnInterrupted) -> None:
        """The round's answer was cut short: trimmed to what was heard when the stored answer
        begins with it, else only marked; not stored yet, what was heard waits for it."""
        now = self._clock()
        over = min(call.ended_at or call.expires_at, call.expires_at)
        if now - over > INTERRUPT_GRACE:
            log.info("voice call %s: an interruption after its end ignored", call.id)
            return
        played = (event.played_text or "").strip() or None
        answer = await self._store.voice_turn_get(call.id, event.round, "assistant")
        if answer is None and played is not None and len(played) <= RECONCILE_TEXT:
            self._heard.put(call.id, event.round, played)
            # the endpoint may have stored it meanwhile, without asking
            answer = await self._store.voice_turn_get(call.id, event.round, "assistant")
            if answer is not None:
                self._heard.take(call.id, event.round)
        if answer is None:
            return
        heard = played if played is not None and answer.content.strip().startswith(played) else None
        await self._store.voice_turn_trim(call.id, event.round, text=heard, now=now)

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
