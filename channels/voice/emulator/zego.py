"""`ZegoAgentEmulator`: ZEGO AI Agent (实时互动 AI Agent) as channeld meets it.

The API: `POST /?Action=RegisterAgent|CreateAgentInstance|DeleteAgentInstance` signed as every
ZEGO server API (`zego_api`); at most `max_instances` (ZEGO's default: 10) live instances per
app; a new instance whose AgentUserId is already in use pushes the older one out (code 1203).

The agent, per utterance: `POST LLM.Url` with `Authorization: Bearer LLM.ApiKey`, the body
`model`, `temperature` (default 0.7), `top_p` (0.9), every `LLM.Params` key at the top level,
`stream: true`, `messages` = the system prompt + the last `WindowSize` (20) messages of the
instance's context + the utterance, then `agent_info` (with AddAgentInfo) and
`agent_extra_info` (AgentExtraInfo). Round ids go up, not one by one. The context keeps what
was played: after an interruption only the played part (nothing when none was).

Callbacks to the console's URL, signed: `Timestamp` in milliseconds, `Nonce`, `Signature` =
sha1 of the sorted secret, timestamp and nonce (ZIM's rule); only the events `CallbackConfig`
asked for, and `AgentInstanceDeleted` always (Code 0 after DeleteAgentInstance, 1202 when the
caller left, 1203 when pushed out); retried after 2, 4, 8, 16 and 32 s.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from channels.emulator import http
from channels.voice.emulator import zego_api as z
from channels.voice.emulator.calls import Call, Turn, now_ms
from channels.voice.emulator.llm import headers_for
from channels.voice.emulator.server import ACTION_KEY, VoiceEmulator
from channels.zim.emulator import state as gateway
from channels.zim.emulator.signing import callback_signature

DEFAULT_APP_ID = "1234567890"
DEFAULT_SECRET = "0123456789abcdef0123456789abcdef"  # noqa: S105 - the emulator's well-known one
FIRST_INSTANCE_ID = 1912122918452641792  # the docs' example
RETRY_DELAYS = (2.0, 4.0, 8.0, 16.0, 32.0)
DELETED_CODES = {"stop": 0, "hangup": 1202, "replaced": 1203}
SENTENCE = re.compile(r"[^。！？!?.\n]+[。！？!?.\n]*")  # LLMResult comes sentence by sentence


@dataclass
class Agent:
    """A registered agent: its defaults for the instances created from it."""

    agent_id: str
    name: str = ""
    llm: dict[str, Any] | None = None


@dataclass(kw_only=True)
class ZegoCall(Call):
    """An agent instance: its RTC ids, LLM block, window and callback choices."""

    agent: Agent
    rtc: dict[str, str]
    llm: dict[str, Any]
    window: int
    events: set[str]
    last_round: int = 0
    first_chunk_ms: list[float] = field(default_factory=list)


class ZegoAgentEmulator(VoiceEmulator):
    """A local ZEGO AI Agent app: signed API, the agent, signed callbacks with retries."""

    provider = "zego"
    title = "ZEGO AI Agent"
    retry_delays = RETRY_DELAYS

    def __init__(
        self,
        agents: Iterable[Agent | str] = (),
        *,
        app_id: str = DEFAULT_APP_ID,
        server_secret: str = DEFAULT_SECRET,
        callback_secret: str | None = None,
        max_instances: int = 10,
        rng: random.Random | None = None,
        **options: Any,
    ) -> None:
        super().__init__(agents, **options)
        self.app_id = app_id
        self.server_secret = server_secret
        self.callback_secret = server_secret if callback_secret is None else callback_secret
        self.max_instances = max_instances
        self._rng = rng or random.Random()  # noqa: S311 - ids and nonces only need to differ
        self._request_ids = iter(range(3151527792559699732, 2**63))
        self._instance_ids = iter(range(FIRST_INSTANCE_ID, 2**63))
        self._sequence = 0
        self._actions: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]] = {
            "RegisterAgent": self._register,
            "CreateAgentInstance": self._create,
            "DeleteAgentInstance": self._delete,
        }

    def agent_records(self, agents: Iterable[Agent | str]) -> dict[str, Any]:
        """Agents registered from the start."""
        records = [a if isinstance(a, Agent) else Agent(a) for a in agents]
        return {a.agent_id: a for a in records}

    # -- the API ---------------------------------------------------------------------------------

    def add_api_routes(self, app: web.Application) -> None:
        """`POST /?Action=...`."""
        app.router.add_post("/", self._handle)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """An injected fault's body."""
        return {"Code": 1, "Message": message, "RequestId": self._request_id(), "Data": None}

    def scrubbed(self, body: Any) -> Any:
        """The body with `LLM.ApiKey` masked (channeld's per-call secret)."""
        if isinstance(body, dict) and isinstance(body.get("LLM"), dict):
            return {**body, "LLM": {**body["LLM"], "ApiKey": "***"}}
        return body

    def _request_id(self) -> str:
        return str(next(self._request_ids))

    async def _handle(self, request: web.Request) -> web.Response:
        action = request[ACTION_KEY] = request.query.get("Action", "")
        try:
            if not action:
                raise z.ZegoError(gateway.ACTION_EMPTY, "Action is empty")
            if action not in self._actions:
                raise z.ZegoError(gateway.ACTION_UNSUPPORTED, f"unsupported Action {action}")
            z.check_public(request.query, self.app_id, self.server_secret)
            body = await http.json_object(
                request, lambda what: z.ZegoError(z.BAD_JSON, f"body is not {what}")
            )
            data = await self._actions[action](body)
        except z.ZegoError as exc:
            exc.request_id = self._request_id()
            return exc.response()
        return z.ok(self._request_id(), data)

    async def _register(self, body: dict[str, Any]) -> None:
        agent_id = z.text(body, "AgentId", pattern=z.AGENT_ID)
        name = z.text(body, "Name", required=False, max_len=256)
        llm = z.llm_block(body["LLM"]) if body.get("LLM") is not None else None
        if agent_id in self.state.apps:
            raise z.ZegoError(z.AGENT_EXISTS, "agent already exists")
        self.state.apps[agent_id] = Agent(agent_id, name, llm)
        self.state.changed()

    async def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        agent = self.state.apps.get(z.text(body, "AgentId", pattern=z.AGENT_ID))
        if agent is None:
            raise z.ZegoError(z.AGENT_NOT_FOUND, "agent not found")
        user_id = z.text(body, "UserId", pattern=z.USER_ID)
        rtc = z.rtc_block(body, user_id)
        llm = body.get("LLM") if body.get("LLM") is not None else agent.llm
        if llm is None:
            raise z.ZegoError(z.BAD_PARAM, "LLM is required: the agent was registered without")
        llm = z.llm_block(llm)
        context, window = z.message_history(body)
        events = z.callback_config(body)
        live = [self._zego(c) for c in self.state.instances.values() if c.active]
        # ZEGO: an older instance with the same agent user id is pushed out of the room
        pushed = [c for c in live if c.rtc["AgentUserId"] == rtc["AgentUserId"]]
        if len(live) - len(pushed) >= self.max_instances:
            raise z.ZegoError(z.TOO_MANY_INSTANCES, "too many concurrent agent instances")
        for other in pushed:
            self.end(other, "replaced")
        call = ZegoCall(
            instance_id=str(next(self._instance_ids)),
            user_id=user_id,
            started_at=now_ms(),
            context=context,
            agent=agent,
            rtc=rtc,
            llm=llm,
            window=window,
            events=events,
            last_round=self._rng.randrange(10**8, 9 * 10**8),
        )
        self.state.instances[call.instance_id] = call
        self.state.changed()
        return {"AgentInstanceId": call.instance_id}

    async def _delete(self, body: dict[str, Any]) -> None:
        call = self.state.instances.get(z.text(body, "AgentInstanceId"))
        if call is None or not call.active:
            raise z.ZegoError(z.INSTANCE_NOT_FOUND, "agent instance not found")
        self.end(call, "stop")

    # -- the agent -------------------------------------------------------------------------------

    def llm_url(self, call: Call) -> str:
        """`LLM.Url`, as given."""
        return str(self._zego(call).llm["Url"])

    def next_round(self, call: Call) -> int:
        """Ascending, not contiguous, like ZEGO's rounds."""
        zego = self._zego(call)
        zego.last_round += self._rng.randint(2, 97)
        return zego.last_round

    def request_for(self, call: Call, turn: Turn) -> tuple[str, dict[str, str], dict[str, Any]]:
        """ZEGO's request for one utterance (see the module docstring)."""
        zego = self._zego(call)
        llm = zego.llm
        messages: list[dict[str, str]] = []
        if llm.get("SystemPrompt"):
            messages.append({"role": "system", "content": llm["SystemPrompt"]})
        if zego.window:  # a window of 0 sends no history ([-0:] would send all of it)
            messages.extend(dict(m) for m in zego.context[-zego.window :])
        messages.append({"role": "user", "content": turn.user})
        body: dict[str, Any] = {
            "model": llm["Model"],
            "temperature": llm.get("Temperature", 0.7),
            "top_p": llm.get("TopP", 0.9),
            **(llm.get("Params") or {}),
            "stream": True,
            "messages": messages,
        }
        if llm.get("AddAgentInfo"):
            body["agent_info"] = {
                "room_id": zego.rtc["RoomId"],
                "agent_instance_id": zego.instance_id,
                "agent_user_id": zego.rtc["AgentUserId"],
                "user_id": zego.user_id,
                "round_id": turn.round,
                "time_stamp": turn.at,
            }
        if llm.get("AgentExtraInfo"):
            body["agent_extra_info"] = llm["AgentExtraInfo"]
        return str(llm["Url"]), headers_for(str(llm.get("ApiKey", ""))), body

    def user_spoke(self, call: Call, turn: Turn) -> None:
        """`ASRResult`, when asked for."""
        self._callback(
            call, "ASRResult", {"UserId": call.user_id, "Round": turn.round, "Text": turn.user}
        )

    def answered(self, call: Call, turn: Turn) -> None:
        """`LLMResult` per sentence, when asked for."""
        zego = self._zego(call)
        if turn.reply is not None and turn.reply.first_chunk_ms is not None:
            zego.first_chunk_ms.append(turn.reply.first_chunk_ms)
        for sentence in SENTENCE.findall(turn.answer or ""):
            if sentence.strip():
                self._callback(call, "LLMResult", {"Round": turn.round, "Text": sentence.strip()})

    def interrupted(self, call: Call, turn: Turn) -> None:
        """`Interrupted` with what was played, when asked for."""
        data = {"Round": turn.round, "Reason": 1, "PlayedText": turn.played}
        self._callback(call, "Interrupted", data)

    def end(self, call: Call, why: str) -> None:
        """`AgentInstanceDeleted` with the code of `why`."""
        if not self.finish(call, why):
            return
        ttfts = self._zego(call).first_chunk_ms
        data = {
            "Code": DELETED_CODES[why],
            "DeletedTimestamp": now_ms(),
            "LatencyData": {
                "LLMTTFT": round(sum(ttfts) / len(ttfts)) if ttfts else 0,
                "LLMTPS": 0.0,  # tokens are not counted here
                "TTSAudioFirstFrameTime": 0,
                "TotalCost": 0,
            },
        }
        self._callback(call, "AgentInstanceDeleted", data, always=True)

    def _callback(
        self, call: Call, event: str, data: dict[str, Any], *, always: bool = False
    ) -> None:
        zego = self._zego(call)
        if not always and event not in zego.events:
            return
        timestamp = now_ms()
        nonce = str(self._rng.randrange(10**18, 10**19))
        self._sequence += 1
        body = {
            "AppId": int(self.app_id),
            "AgentInstanceId": zego.instance_id,
            "AgentUserId": zego.rtc["AgentUserId"],
            "AgentId": zego.agent.agent_id,
            "Name": zego.agent.name,
            "RoomId": zego.rtc["RoomId"],
            "Sequence": self._sequence,
            "Data": data,
            "Event": event,
            "Nonce": nonce,
            "Signature": callback_signature(self.callback_secret, timestamp, nonce),
            "Timestamp": timestamp,
        }
        self.callbacks.send(self.callback_url, event, zego.instance_id, body)

    @staticmethod
    def _zego(call: Call) -> ZegoCall:
        if not isinstance(call, ZegoCall):
            raise TypeError(f"not a ZEGO instance: {call.instance_id}")
        return call

    # -- console and views -----------------------------------------------------------------------

    def call_view(self, call: Call) -> dict[str, Any]:
        """The call with its agent and RTC ids."""
        zego = self._zego(call)
        return {**super().call_view(call), "agent_id": zego.agent.agent_id, "rtc": dict(zego.rtc)}

    def console_view(self) -> dict[str, Any]:
        """The callback URL and whether a distinct callback secret is set."""
        return {
            "callback_url": self.callback_url,
            "callback_secret": "***",
            "app_id": self.app_id,
            "max_instances": self.max_instances,
        }

    def set_console(self, **fields: Any) -> dict[str, Any]:
        """`callback_url`, `callback_secret`."""
        unknown = set(fields) - {"callback_url", "callback_secret"}
        if unknown:
            raise ValueError(f"unknown console settings: {sorted(unknown)}")
        for name, value in fields.items():
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
        self.callback_url = fields.get("callback_url", self.callback_url)
        self.callback_secret = fields.get("callback_secret", self.callback_secret)
        self.state.changed()
        return self.console_view()

    def describe_console(self) -> list[str]:
        """The app and the voice section for channeld.toml."""
        return [
            f"  app id: {self.app_id}",
            "  voice settings for channeld.toml:",
            "    [channels.voice.zego]",
            f"    app_id = {self.app_id}",
            '    server_secret = "${ZEGO_SERVER_SECRET}"',
            '    agent_id = "channeld-voice"',
            f'    api_base = "{self.url}"',
            f"  (ZEGO_SERVER_SECRET={self.server_secret})",
        ]
