"""`VoiceEmulator`: what both emulated voice clouds share on the emulator base: one port for the
cloud's API and the control plane, the agent instances with their rounds and context, the agent
asking the LLM endpoint per utterance, interruptions, hang-ups and the callbacks they cause.

A cloud (`zego`, `aliyun`) adds its API routes, the shape of its LLM request, what it keeps in
its context after an interruption and the callbacks it sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from channels.emulator.gateway import GatewayBase, SocketInfo, no_gateway
from channels.emulator.server import EmulatorServer
from channels.emulator.state import EmulatorStateBase, Fault, RecordedCall, Transcript
from channels.voice.emulator.callbacks import CallbackAttempt, CallbackSender
from channels.voice.emulator.calls import Call, Turn, now_ms
from channels.voice.emulator.control import VoiceControl
from channels.voice.emulator.llm import LlmRequest, ask, masked

ACTION_KEY = web.RequestKey("voice_action", str)  # the API action a request named


@dataclass(frozen=True, slots=True)
class CallRecord(RecordedCall):
    """One API call and the action it named."""

    action: str


class VoiceState(EmulatorStateBase[Fault, CallRecord, Any]):
    """The agents (the emulator's apps), the instances in creation order and the LLM requests."""

    def __init__(self, agents: dict[str, Any]) -> None:
        super().__init__()
        self.apps: dict[str, Any] = agents
        self.chats: dict[str, Transcript] = {}  # a voice call has no chat view
        self.instances: dict[str, Call] = {}
        self.requests: list[LlmRequest] = []


class VoiceEmulator(EmulatorServer[Fault, CallRecord, Any, SocketInfo]):
    """A voice cloud on one port: its API, its agent, its callbacks and the control plane."""

    provider: ClassVar[str]  # "zego" or "aliyun": the control plane's `provider`
    title: ClassVar[str]  # how `channeld emulate` names it
    retry_delays: ClassVar[tuple[float, ...]] = ()  # the cloud's callback retry schedule
    supports_unseen: ClassVar[bool] = False  # rounds recorded without asking the endpoint
    default_agents: ClassVar[tuple[Any, ...]] = ()  # the agents that exist unless told

    def __init__(
        self,
        agents: Iterable[Any],
        *,
        callback_url: str = "",
        retry_scale: float = 1.0,
        callback_timeout: float = 5.0,
        llm_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.state: VoiceState = VoiceState(self.agent_records(agents))
        self.gateway: GatewayBase[Any, Any] = no_gateway(self.state)  # no socket to hold
        self.callback_url = callback_url
        self.llm_timeout = llm_timeout
        self.callbacks = CallbackSender(
            retry_delays=self.retry_delays,
            retry_scale=retry_scale,
            timeout=callback_timeout,
            changed=self.state.changed,
        )
        self._llm: aiohttp.ClientSession | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Binds and serves, opens the agent's and the callbacks' HTTP clients; the base URL."""
        url = await super().start(host, port)
        self.callbacks.start()
        self._llm = aiohttp.ClientSession()
        return url

    async def stop(self) -> None:
        """Drops pending callbacks and timers, closes the clients and the server."""
        await self.callbacks.stop()
        if self._llm is not None:
            await self._llm.close()
            self._llm = None
        await super().stop()

    def add_routes(self, app: web.Application) -> None:
        """The cloud's API and the control plane."""
        self.add_api_routes(app)
        VoiceControl(self).add_routes(app)

    def call_record(
        self, request: web.Request, response: web.StreamResponse | None, call: RecordedCall
    ) -> CallRecord:
        """The call with its action; credentials inside the body are masked."""
        call = replace(call, body=self.scrubbed(call.body))
        return call.extended(CallRecord, action=request.get(ACTION_KEY, ""))

    def fault_response(self, request: web.Request, fault: Fault) -> web.Response:
        """The fault's HTTP status with the cloud's error body."""
        status = fault.status or 500
        return web.json_response(self.error_body(status, "injected fault"), status=status)

    # -- what a cloud adds -----------------------------------------------------------------------

    def agent_records(self, agents: Iterable[Any]) -> dict[str, Any]:
        """The agents that exist from the start, by id."""
        raise NotImplementedError

    def add_api_routes(self, app: web.Application) -> None:
        """The cloud's API."""
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """The cloud's error body for an injected fault."""
        raise NotImplementedError

    def scrubbed(self, body: Any) -> Any:
        """A recorded request body without the credentials it carries."""
        return body

    def llm_url(self, call: Call) -> str:
        """Where the call's agent sends its requests."""
        raise NotImplementedError

    def next_round(self, call: Call) -> int:
        """The id of the call's next round."""
        raise NotImplementedError

    def request_for(self, call: Call, turn: Turn) -> tuple[str, dict[str, str], dict[str, Any]]:
        """URL, headers and body of the round's request, from the call's context."""
        raise NotImplementedError

    def user_spoke(self, call: Call, turn: Turn) -> None:
        """The caller said something (before the endpoint is asked)."""

    def answered(self, call: Call, turn: Turn) -> None:
        """The round ended (its answer read, or none)."""

    def heard_in_context(self, call: Call, turn: Turn) -> str:
        """What the context keeps of an interrupted answer."""
        return turn.heard

    def interrupted(self, call: Call, turn: Turn) -> None:
        """The caller spoke over the round's answer."""

    def end(self, call: Call, why: str) -> None:
        """Ends the instance (`why`: "stop" by the API, "hangup", "expired", "replaced") with
        the cloud's callback."""
        raise NotImplementedError

    def call_view(self, call: Call) -> dict[str, Any]:
        """How `GET calls` shows a call."""
        return call.view(self.llm_url(call))

    def console_view(self) -> dict[str, Any]:
        """The console settings, secrets masked."""
        raise NotImplementedError

    def set_console(self, **fields: Any) -> dict[str, Any]:
        """Changes console settings (ValueError for an unknown one); the new view."""
        raise NotImplementedError

    def describe_console(self) -> list[str]:
        """Lines `channeld emulate voice` prints about the console."""
        return []

    # -- the agent -------------------------------------------------------------------------------

    def call(self, instance_id: str | None = None) -> Call:
        """The instance named, else the latest active one; KeyError for an unknown id,
        LookupError when none is active."""
        if instance_id is not None:
            return self.state.instances[instance_id]
        for call in reversed(self.state.instances.values()):
            if call.active:
                return call
        raise LookupError("no active call")

    def _active(self, instance_id: str | None) -> Call:
        call = self.call(instance_id)
        if not call.active:
            raise LookupError(f"call {call.instance_id} ended ({call.ended})")
        return call

    async def say(
        self,
        text: str,
        *,
        instance_id: str | None = None,
        unseen: bool = False,
        answer: str = "",
    ) -> dict[str, Any]:
        """The caller says `text`; the agent asks the endpoint and reads the answer. `unseen`:
        the round is recorded (with `answer`) without asking the endpoint."""
        if not text:
            raise ValueError("text is required")
        if unseen and not self.supports_unseen:
            raise ValueError(f"{self.provider} records no unseen rounds")
        call = self._active(instance_id)
        async with call.lock:
            self._active(call.instance_id)  # it may have ended while this waited
            turn = Turn(self.next_round(call), text, now_ms(), len(call.context), not unseen)
            if not unseen:  # first: a cloud that cannot ask (no LLM URL set) hears nothing
                turn.url, turn.headers, turn.body = self.request_for(call, turn)
            call.turns.append(turn)
            self.user_spoke(call, turn)
            if unseen:
                turn.answer = answer
                turn.answered_at = now_ms()
            else:
                await self._ask(call, turn, repeat=False)
            call.remember(turn, turn.answer)
            self.answered(call, turn)
            self.state.changed()
        return turn.result()

    async def repeat(self, instance_id: str | None = None) -> dict[str, Any]:
        """The cloud sends the last round's request again (same round id, same body); the new
        answer replaces the old one in the context."""
        call = self._active(instance_id)
        async with call.lock:
            turn = call.last_turn()
            if not turn.seen:
                raise LookupError(f"round {turn.round} was never sent")
            turn.played = None
            await self._ask(call, turn, repeat=True)
            call.remember(turn, turn.answer)
            self.answered(call, turn)
            self.state.changed()
        return turn.result()

    async def _ask(self, call: Call, turn: Turn, *, repeat: bool) -> None:
        if self._llm is None:
            raise RuntimeError("voice emulator not started")
        reply = await ask(self._llm, turn.url, turn.headers, turn.body, self.llm_timeout)
        turn.reply = reply
        turn.answer = reply.answer
        turn.answered_at = now_ms()
        self.state.requests.append(
            LlmRequest(
                len(self.state.requests) + 1,
                call.instance_id,
                turn.round,
                repeat,
                turn.url,
                masked(turn.headers),
                json.loads(json.dumps(turn.body)),  # a copy later rounds cannot change
                reply.status,
                reply.error,
            )
        )

    async def interrupt(
        self, played_chars: int, *, instance_id: str | None = None
    ) -> dict[str, Any]:
        """The caller heard only the first `played_chars` characters of the last answer."""
        call = self._active(instance_id)
        async with call.lock:
            turn = call.last_turn()
            if turn.answer is None or turn.interrupted:
                raise LookupError(f"round {turn.round} has no answer being spoken")
            if isinstance(played_chars, bool) or not 0 <= played_chars < len(turn.answer):
                raise ValueError(f"played_chars must be 0 to {len(turn.answer) - 1}")
            turn.played = turn.answer[:played_chars]
            call.remember(turn, self.heard_in_context(call, turn))
            self.interrupted(call, turn)
            self.state.changed()
        return turn.view()

    async def hangup(self, instance_id: str | None = None) -> dict[str, Any]:
        """The caller leaves: the instance ends with the cloud's callback."""
        call = self._active(instance_id)
        async with call.lock:
            if call.active:
                self.end(call, "hangup")
        return self.call_view(call)

    def finish(self, call: Call, why: str) -> bool:
        """Marks an instance ended; False when it already was."""
        if not call.active:
            return False
        call.active = False
        call.ended = why
        self.state.changed()
        return True

    # -- observations ----------------------------------------------------------------------------

    def instances(self) -> list[dict[str, Any]]:
        """Every instance, ended ones included, oldest first."""
        return [self.call_view(c) for c in self.state.instances.values()]

    def llm_requests(self, instance_id: str | None = None) -> list[LlmRequest]:
        """Every LLM request the agent sent (of one instance), oldest first."""
        return [r for r in self.state.requests if instance_id in (None, r.instance_id)]

    def callback_attempts(
        self, event: str | None = None, instance_id: str | None = None
    ) -> list[CallbackAttempt]:
        """Every callback POST (of one event, of one instance), oldest first."""
        return [
            a
            for a in self.callbacks.attempts
            if event in (None, a.event) and instance_id in (None, a.instance_id)
        ]

    def describe(self) -> list[str]:
        """What `channeld emulate voice` prints."""
        target = self.callback_url or (
            "none (--callback-url http://127.0.0.1:8789/hooks/<channel id>/voice, "
            "or POST /_emulator/voice/console)"
        )
        return [
            f"{self.title} emulator listening on {self.url}",
            f"  agents: {', '.join(self.state.apps) or '(none yet)'}",
            f"  callbacks: {target}",
            *self.describe_console(),
            f"  voice control: {self.url}/_emulator/voice/calls (say, interrupt, hangup, ...)",
        ]
