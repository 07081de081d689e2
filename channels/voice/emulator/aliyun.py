"""`AliyunAgentEmulator`: Alibaba Cloud IMS "AI 实时互动" (ICE) as channeld meets it.

The API (`aliyun_api`): GenerateAIAgentCall (Expire honoured: the instance ends with
`agent_stop` when it passes; 0 means no expiry here), StartAIAgentInstance,
StopAIAgentInstance (a finished instance stops again without a callback),
DescribeAIAgentInstance and ListAIAgentDialogues (by SessionId and time, paged; the SDK's
response model has only `Dialogues` and `RequestId`, so the last page is the short one).

The console (CLI options, or `POST /_emulator/voice/console` at run time): the self-developed
LLM's base URL, API key and model id, the callback URL and token, whether `chat_record`
callbacks are sent, and `HistorySyncWithTTS` unless an instance's AgentConfig says.

The agent, per utterance: `POST <base URL>/chat/completions` with `Authorization: Bearer <API
key>`, the body `model`, `stream: true`, `messages` = at most 20 records of the instance's own
history + the utterance, `extendData` {instanceId, channelId, sentenceId (an int, one per
round), userData (the UserData given at start, verbatim)}. After an interruption the answer's
record in that history is the played part followed by `<ims_agent_interrupted>`
(HistorySyncWithTTS). Every round, sent or not, is two dialogues (user, agent).

Callbacks carry the console's token verbatim in `Authorization`, are sent once (no retry
policy is documented), and have the body {aiAgentId, instanceId, event, data, code, message,
timestamp, userData, extendData}; `chat_record`'s data {"dialogues": [...]} mirrors
ListAIAgentDialogues' items, which is this emulator's guess at the voice variant.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from aiohttp import web

from channels.voice.emulator import aliyun_api as a
from channels.voice.emulator.calls import Call, Turn, now_ms
from channels.voice.emulator.llm import headers_for, mask
from channels.voice.emulator.server import ACTION_KEY, VoiceEmulator

DEFAULT_AGENT = "channeld-voice"
DEFAULT_ACCESS_KEY_ID = "LTAI5tEmulatorAccessKey"
DEFAULT_ACCESS_KEY_SECRET = "emulator-access-key-secret"  # noqa: S105 - the emulator's own
HISTORY_LIMIT = 20  # records of history in each request
MAX_EXPIRE = 604800
MAX_PAGE_SIZE = 100
INTERRUPTED = "<ims_agent_interrupted>"
SECRET_SETTINGS = frozenset({"llm_api_key", "callback_token"})


@dataclass(frozen=True)
class Console:
    """What is set in Alibaba's console for the agent and its callbacks."""

    llm_base_url: str = ""
    llm_api_key: str = ""
    llm_model: str = "channeld-voice"
    callback_token: str = ""
    chat_record: bool = False
    history_sync: bool = True  # LlmConfig.HistorySyncWithTTS of the console's template


@dataclass(kw_only=True)
class AliyunCall(Call):
    """An agent instance: its agent, RTC channel, session, UserData and history setting."""

    agent_id: str
    channel_id: str
    session_id: str
    user_data: str
    agent_user_id: str
    history_sync: bool | None
    runtime: dict[str, Any]
    expiry: asyncio.Task[None] | None = None


Action = Callable[[Mapping[str, str]], Awaitable[dict[str, Any]]]


class AliyunAgentEmulator(VoiceEmulator):
    """A local ICE AI agent service: the SDK's API, the agent, token-carrying callbacks."""

    provider = "aliyun"
    title = "Alibaba Cloud IMS AI agent"
    supports_unseen = True
    default_agents = (DEFAULT_AGENT,)

    def __init__(
        self,
        agents: Iterable[str] = (DEFAULT_AGENT,),
        *,
        access_keys: Mapping[str, str] | None = None,
        verify_signature: bool = True,
        console: Console | None = None,
        expire_scale: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__(agents, **options)
        keys = access_keys or {DEFAULT_ACCESS_KEY_ID: DEFAULT_ACCESS_KEY_SECRET}
        self.auth = a.Authenticator(keys, verify=verify_signature)
        self.console = console or Console()
        self.expire_scale = expire_scale
        self.dialogues: list[a.Dialogue] = []
        self._actions: dict[str, Action] = {
            "GenerateAIAgentCall": self._generate,
            "StartAIAgentInstance": self._start,
            "StopAIAgentInstance": self._stop,
            "DescribeAIAgentInstance": self._describe,
            "ListAIAgentDialogues": self._dialogues,
        }

    def agent_records(self, agents: Iterable[str]) -> dict[str, Any]:
        """The console's AI agents (their ids)."""
        return {str(agent): str(agent) for agent in agents}

    # -- the API ---------------------------------------------------------------------------------

    def add_api_routes(self, app: web.Application) -> None:
        """`POST /`, the action in `x-acs-action`."""
        app.router.add_post("/", self._handle)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """An injected fault's body."""
        code = "ServiceUnavailable" if status >= 500 else "InvalidParameter"
        return {"Code": code, "Message": message, "RequestId": self._request_id()}

    @staticmethod
    def _request_id() -> str:
        return str(uuid.uuid4()).upper()

    async def _handle(self, request: web.Request) -> web.Response:
        action = request[ACTION_KEY] = request.headers.get("x-acs-action", "")
        try:
            self.auth.check(request, await request.read())
            handler = self._actions.get(action)
            if handler is None:
                raise a.AliyunError(
                    404, "InvalidAction.NotFound", f"Specified api is not found: {action!r}"
                )
            data = await handler(request.query)
        except a.AliyunError as exc:
            exc.request_id = self._request_id()
            return exc.response()
        return web.json_response({"RequestId": self._request_id(), **data})

    def _agent(self, query: Mapping[str, str]) -> str:
        agent_id = a.text(query, "AIAgentId", required=True)
        if agent_id not in self.state.apps:
            raise a.AliyunError(404, "InvalidAIAgentId.NotFound", "the AI agent does not exist")
        return agent_id

    def _instance(self, query: Mapping[str, str]) -> AliyunCall:
        call = self.state.instances.get(a.text(query, "InstanceId", required=True))
        if not isinstance(call, AliyunCall):
            raise a.AliyunError(404, "InvalidInstanceId.NotFound", "the instance does not exist")
        return call

    def _open(
        self, query: Mapping[str, str], *, user_id: str, channel_id: str, runtime: dict[str, Any]
    ) -> AliyunCall:
        agent_id = self._agent(query)
        history, sync = a.llm_config(a.json_object(query, "AgentConfig"))
        call = AliyunCall(
            instance_id=uuid.uuid4().hex,
            user_id=user_id,
            started_at=now_ms(),
            context=history,
            agent_id=agent_id,
            channel_id=channel_id,
            session_id=a.text(query, "SessionId") or uuid.uuid4().hex,
            user_data=a.text(query, "UserData"),
            agent_user_id=f"agent-{uuid.uuid4().hex[:12]}",
            history_sync=sync,
            runtime=runtime,
        )
        self.state.instances[call.instance_id] = call
        self.state.changed()
        return call

    async def _generate(self, query: Mapping[str, str]) -> dict[str, Any]:
        expire = a.whole(query, "Expire", 3600, 0, MAX_EXPIRE)
        user_id = a.text(query, "UserId", max_len=64) or f"user-{uuid.uuid4().hex[:12]}"
        channel_id = uuid.uuid4().hex
        call = self._open(query, user_id=user_id, channel_id=channel_id, runtime={})
        if expire:
            call.expiry = self.callbacks.spawn(self._expire(call, expire * self.expire_scale))
        return {
            "InstanceId": call.instance_id,
            "ChannelId": call.channel_id,
            "Token": secrets.token_urlsafe(32),
            "UserId": call.user_id,
            "AIAgentUserId": call.agent_user_id,
        }

    async def _start(self, query: Mapping[str, str]) -> dict[str, Any]:
        runtime = a.json_object(query, "RuntimeConfig", required=True)
        nested = runtime.get("VoiceChat")
        voice: dict[str, Any] = nested if isinstance(nested, dict) else runtime
        channel_id = voice.get("ChannelId")
        if not isinstance(channel_id, str) or not channel_id:
            raise a.invalid("RuntimeConfig.VoiceChat.ChannelId is mandatory")
        call = self._open(query, user_id="", channel_id=channel_id, runtime=runtime)
        return {"InstanceId": call.instance_id}

    async def _stop(self, query: Mapping[str, str]) -> dict[str, Any]:
        self.end(self._instance(query), "stop")
        return {}

    async def _describe(self, query: Mapping[str, str]) -> dict[str, Any]:
        call = self._instance(query)
        instance = {
            "Status": "Executing" if call.active else "Finished",
            "SessionId": call.session_id,
            "UserData": call.user_data,
            "RuntimeConfig": call.runtime
            or {"VoiceChat": {"AgentUserId": call.agent_user_id, "ChannelId": call.channel_id}},
            "CallLogUrl": "",
            "GmtCreate": a.iso(call.started_at),
        }
        return {"Instance": instance}

    async def _dialogues(self, query: Mapping[str, str]) -> dict[str, Any]:
        session = a.text(query, "SessionId", required=True)
        start = a.whole(query, "StartTime", None, 0, 2**63 - 1)
        end = a.whole(query, "EndTime", None, 0, 2**63 - 1)
        page = a.whole(query, "PageNumber", 1, 1, 2**31 - 1)
        size = a.whole(query, "PageSize", 20, 1, MAX_PAGE_SIZE)
        order = query.get("Order", "DESC")
        if order not in ("ASC", "DESC"):
            raise a.invalid("Order must be ASC or DESC")
        found = [d for d in self.dialogues if d.session_id == session and start <= d.time <= end]
        return {"Dialogues": [d.to_json() for d in a.page(found, page, size, order)]}

    async def _expire(self, call: AliyunCall, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.end(call, "expired")

    # -- the agent -------------------------------------------------------------------------------

    def llm_url(self, call: Call) -> str:
        """The console's base URL with `/chat/completions` appended."""
        return self.console.llm_base_url.rstrip("/") + "/chat/completions"

    def next_round(self, call: Call) -> int:
        """1, 2, 3...: one sentence id per round."""
        return len(call.turns) + 1

    def request_for(self, call: Call, turn: Turn) -> tuple[str, dict[str, str], dict[str, Any]]:
        """Alibaba's request for one utterance (see the module docstring)."""
        if not self.console.llm_base_url:
            raise LookupError("the console has no LLM base URL (--llm-base-url, or POST console)")
        ali = self._aliyun(call)
        history = [dict(m) for m in ali.context[-HISTORY_LIMIT:]]
        body = {
            "model": self.console.llm_model,
            "stream": True,
            "messages": [*history, {"role": "user", "content": turn.user}],
            "extendData": {
                "instanceId": ali.instance_id,
                "channelId": ali.channel_id,
                "sentenceId": turn.round,
                "userData": ali.user_data,
            },
        }
        return self.llm_url(call), headers_for(self.console.llm_api_key), body

    def heard_in_context(self, call: Call, turn: Turn) -> str:
        """With HistorySyncWithTTS: the played part and Alibaba's marker."""
        sync = self._aliyun(call).history_sync
        if self.console.history_sync if sync is None else sync:
            return turn.heard + INTERRUPTED
        return turn.answer or ""

    def answered(self, call: Call, turn: Turn) -> None:
        """The round's two dialogues (replacing a repeated round's), and `chat_record`."""
        ali = self._aliyun(call)
        self.dialogues = [
            d for d in self.dialogues if (d.instance_id, d.round) != (ali.instance_id, turn.round)
        ]
        pair = [
            a.Dialogue(ali.session_id, ali.instance_id, turn.round, "user", turn.user, turn.at),
            a.Dialogue(
                ali.session_id, ali.instance_id, turn.round, "agent", turn.heard, turn.answered_at
            ),
        ]
        self.dialogues.extend(pair)
        if self.console.chat_record:
            data = {"dialogues": [d.to_callback() for d in pair]}
            self._callback(ali, "chat_record", data, sentence=turn.round)

    def interrupted(self, call: Call, turn: Turn) -> None:
        """The agent's dialogue keeps only what was played."""
        for dialogue in self.dialogues:
            key = (dialogue.instance_id, dialogue.round, dialogue.producer)
            if key == (call.instance_id, turn.round, "agent"):
                dialogue.text = turn.heard

    def end(self, call: Call, why: str) -> None:
        """`agent_stop`."""
        ali = self._aliyun(call)
        if not self.finish(ali, why):
            return
        if ali.expiry is not None and ali.expiry is not asyncio.current_task():
            ali.expiry.cancel()
        self._callback(ali, "agent_stop", {}, message=why)

    def _callback(
        self,
        call: AliyunCall,
        event: str,
        data: dict[str, Any],
        *,
        sentence: int | None = None,
        message: str = "",
    ) -> None:
        extend: dict[str, Any] = {"channelId": call.channel_id}
        if sentence is not None:
            extend["sentenceId"] = sentence
        body = {
            "aiAgentId": call.agent_id,
            "instanceId": call.instance_id,
            "event": event,
            "data": data,
            "code": 0,
            "message": message,
            "timestamp": a.iso(now_ms()),
            "userData": call.user_data,
            "extendData": extend,
        }
        token = self.console.callback_token
        headers = {"Authorization": token} if token else {}
        self.callbacks.send(self.callback_url, event, call.instance_id, body, headers)

    @staticmethod
    def _aliyun(call: Call) -> AliyunCall:
        if not isinstance(call, AliyunCall):
            raise TypeError(f"not an Alibaba instance: {call.instance_id}")
        return call

    # -- console and views -----------------------------------------------------------------------

    def call_view(self, call: Call) -> dict[str, Any]:
        """The call with its agent, channel and session."""
        ali = self._aliyun(call)
        ids = {"agent_id": ali.agent_id, "channel_id": ali.channel_id, "session_id": ali.session_id}
        return {**super().call_view(call), **ids}

    def console_view(self) -> dict[str, Any]:
        """The console settings, the key and token masked."""
        view = asdict(self.console)
        for name in SECRET_SETTINGS:
            view[name] = mask(view[name]) if view[name] else ""
        return {"callback_url": self.callback_url, **view}

    def set_console(self, **settings: Any) -> dict[str, Any]:
        """Any `Console` field, and `callback_url`."""
        types = {f.name: type(getattr(self.console, f.name)) for f in fields(Console)}
        callback_url = settings.pop("callback_url", self.callback_url)
        unknown = set(settings) - set(types)
        if unknown:
            raise ValueError(f"unknown console settings: {sorted(unknown)}")
        wrong = [n for n, v in settings.items() if type(v) is not types[n]]
        if wrong or not isinstance(callback_url, str):
            raise ValueError(f"wrongly typed console settings: {sorted(wrong) or ['callback_url']}")
        self.console = replace(self.console, **settings)
        self.callback_url = callback_url
        self.state.changed()
        return self.console_view()

    def describe_console(self) -> list[str]:
        """The access key, the console's LLM settings and the voice section for channeld.toml."""
        key_id = next(iter(self.auth.keys))
        base = self.console.llm_base_url or (
            "none (--llm-base-url http://127.0.0.1:8789/voice/<channel id>, --llm-api-key KEY)"
        )
        return [
            f"  access key: {key_id}",
            f"  self-developed LLM: {base} (model {self.console.llm_model})",
            "  voice settings for channeld.toml:",
            "    [channels.voice.aliyun]",
            '    access_key_id = "${ALIYUN_AK_ID}"',
            '    access_key_secret = "${ALIYUN_AK_SECRET}"',
            f'    agent_id = "{next(iter(self.state.apps), DEFAULT_AGENT)}"',
            '    llm_api_key = "${ALIYUN_LLM_KEY}"  # the console\'s --llm-api-key',
            '    callback_token = "${ALIYUN_CB_TOKEN}"  # the console\'s --callback-token',
            f'    endpoint = "{self.url}"',
            f"  (ALIYUN_AK_ID={key_id} ALIYUN_AK_SECRET={self.auth.keys[key_id]})",
        ]
