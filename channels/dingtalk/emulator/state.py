"""What the DingTalk emulator knows and remembers beyond the state every emulator keeps: apps,
card templates, sessionWebhooks, AI cards and conversations, and DingTalk's error shapes."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from channels.emulator import http
from channels.emulator.state import (
    CardStatus,
    EmulatorStateBase,
    RecordedCall,
    Transcript,
    json_fields,
)
from channels.emulator.state import Fault as FaultBase

DEFAULT_CONTENT_KEY = "content"


@dataclass(frozen=True, slots=True)
class EmulatorApp:
    """One enterprise-internal app: AppKey (client id), AppSecret and robot code."""

    client_id: str
    client_secret: str
    robot_code: str = ""

    @property
    def effective_robot_code(self) -> str:
        """Internal apps use the AppKey as robot code unless told otherwise."""
        return self.robot_code or self.client_id


@dataclass
class EmulatedUser:
    """A member of the emulated organisation, as the contacts API shows them."""

    staff_id: str
    name: str = ""
    email: str = ""
    mobile: str = ""
    job_number: str = ""

    @classmethod
    def default(cls, staff_id: str, name: str = "") -> EmulatedUser:
        """Someone the emulator made up: `<staff id>@example.com`, a mobile and a job number
        derived from the staff id (the same on every run)."""
        digits = str(int(hashlib.sha256(staff_id.encode()).hexdigest(), 16))
        return cls(
            staff_id,
            name or staff_id,
            f"{staff_id}@example.com",
            "138" + digits[:8],
            "E" + digits[8:13],
        )

    def to_json(self) -> dict[str, str]:
        """A JSON-ready summary for the control plane."""
        return json_fields(self)


# what the app was granted of the contacts API: "full" (members, e-mail and mobile), "basic"
# (members, without e-mail and mobile), "none" (no member reads: errcode 88, sub_code 60011)
PROFILE_ACCESS = ("full", "basic", "none")

# an app, or (client_id, client_secret[, robot_code])
AppSpec = EmulatorApp | tuple[str, str] | tuple[str, str, str]


class ApiError(http.ApiError[str]):
    """An OpenAPI-style error answer: HTTP status plus DingTalk's `code` and `message`."""

    def body(self) -> dict[str, Any]:
        """The JSON body DingTalk sends with an error."""
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict[str, Any]:
    """DingTalk's new-style OpenAPI error shape."""
    return {"requestid": str(uuid.uuid4()).upper(), "code": code, "message": message}


@dataclass(frozen=True, slots=True)
class CallRecord(RecordedCall):
    """One HTTP call the emulator answered; the access-token header value is never kept."""

    client_id: str  # the app the call was made for, "" when unknown


@dataclass(frozen=True, slots=True)
class AckRecord:
    """One frame the client sent back on a Stream connection."""

    message_id: str
    connection_id: str
    client_id: str
    at: float  # time.monotonic() when it arrived
    code: int | None
    message: str
    data: Any  # `data` decoded when it is a JSON string
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CardUpdate:
    """One change to a card, in arrival order."""

    at: float  # time.monotonic()
    kind: str  # "create", "deliver", "update", "stream"
    body: dict[str, Any]


@dataclass
class CardState(CardStatus):
    """A card instance as DingTalk keeps it, plus its history."""

    out_track_id: str
    client_id: str
    template_id: str
    content_key: str
    card_data: dict[str, str]
    open_space_ids: list[str] = field(default_factory=list)
    conversation_ids: list[str] = field(default_factory=list)
    contents: dict[str, str] = field(default_factory=dict)  # streamed text per key
    finalized: bool = False
    error: bool = False
    guids: set[str] = field(default_factory=set)
    history: list[CardUpdate] = field(default_factory=list)

    @property
    def flow_status(self) -> str | None:
        """AI cards carry their status ("1".."5") in the card data."""
        return self.card_data.get("flowStatus")

    @property
    def text(self) -> str:
        """What the user reads: the streamed content, else the card data value of the key."""
        if self.content_key in self.contents:
            return self.contents[self.content_key]
        return self.card_data.get(self.content_key, "")

    @property
    def status(self) -> str:
        """`created`, `streaming`, `finished` or `failed`."""
        if self.error or self.flow_status == "5":
            return "failed"
        if self.finalized or self.flow_status == "3":
            return "finished"
        if self.contents or self.flow_status in ("2", "4"):
            return "streaming"
        return "created"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary for the control plane."""
        return {
            "out_track_id": self.out_track_id,
            "client_id": self.client_id,
            "template_id": self.template_id,
            "open_space_ids": list(self.open_space_ids),
            "text": self.text,
            "status": self.status,
            "flow_status": self.flow_status,
            "finalized": self.finalized,
            "error": self.error,
            "card_data": dict(self.card_data),
            "contents": dict(self.contents),
            "updates": len(self.history),
        }


@dataclass
class ChatItem:
    """One entry of a chat transcript: a user message, a bot message or a card."""

    id: str
    kind: str  # "user", "message", "card"
    at: float  # time.monotonic()
    via: str = ""  # "stream", "session", "robot", "card"
    msgtype: str = ""
    text: str = ""
    title: str = ""
    sender: str = ""
    at_user_ids: list[str] = field(default_factory=list)


@dataclass
class Conversation(Transcript):
    """A chat as the user sees it."""

    conversation_id: str
    client_id: str
    conversation_type: str  # "1" single, "2" group
    title: str = ""

    def key(self) -> str:
        """The openConversationId."""
        return self.conversation_id


@dataclass
class Session:
    """A sessionWebhook handed out with an incoming message."""

    client_id: str
    conversation_id: str
    sender_staff_id: str
    expires_at_ms: int
    revoked: bool = False

    def valid(self) -> bool:
        """The webhook works until its expiry time (wall clock, as DingTalk states it)."""
        return not self.revoked and time.time() * 1000 < self.expires_at_ms


def default_fault_body(status: int) -> dict[str, Any]:
    """A realistic error body for an injected status."""
    if status == 401:
        return error_body("InvalidAuthentication", "不合法的access_token")
    if status == 403:
        return {
            **error_body(
                "Forbidden.AccessDenied.AccessTokenPermissionDenied",
                "没有调用该接口的权限，接口权限申请参考：https://open.dingtalk.com/document/orgapp-server/add-api-permission",
            ),
            "accessdenieddetail": {"requiredScopes": ["Card.Streaming.Write"]},
        }
    if status == 429:
        return error_body("Throttling", "Request was denied due to flow control.")
    if status >= 500:
        return error_body(
            "ServiceUnavailable", "The request has failed due to a temporary failure."
        )
    return error_body("InvalidParameter", "The request is invalid.")


QPS_LIMIT_BODY: dict[str, Any] = error_body(
    "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
    "the qps of app over limit, please retry later",
)


@dataclass(kw_only=True)
class Fault(FaultBase):
    """An injected HTTP fault: a status answer (with a body and Retry-After), a delay, or both."""

    body: Any = None  # None: a realistic body for the status
    retry_after: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary; the control plane calls the delay `latency`."""
        summary = super().to_json()
        summary["latency"] = summary.pop("delay")
        del summary["body"]
        return summary


def stable_id(*parts: str, length: int = 22) -> str:
    """A deterministic base64 id, shaped like DingTalk's opaque ids."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return base64.b64encode(digest).decode()[:length]


class EmulatorState(EmulatorStateBase[Fault, CallRecord, CardState]):
    """All mutable state; `notify()` wakes everyone waiting for a change."""

    def __init__(self, apps: list[EmulatorApp], templates: Mapping[str, str]) -> None:
        super().__init__()
        self.apps: dict[str, EmulatorApp] = {app.client_id: app for app in apps}
        self.templates = dict(templates)  # template id -> its streaming content key
        self.acks: list[AckRecord] = []
        self.chats: dict[str, Conversation] = {}  # by openConversationId
        self.direct: dict[tuple[str, str], str] = {}  # (client_id, staff id) -> conversation id
        self.sessions: dict[str, Session] = {}
        self.failing_deliveries: list[str] = []  # errorMsg of forced deliverResult failures
        self.users: dict[str, EmulatedUser] = {}  # by staff id
        self.profile_access = "full"  # see PROFILE_ACCESS
        self._item_seq = 0

    def direct_conversation_id(self, client_id: str, staff_id: str) -> str:
        """The single chat between a user and a bot (DingTalk keeps one per pair)."""
        key = (client_id, staff_id)
        if key not in self.direct:
            self.direct[key] = "cid" + stable_id("direct", client_id, staff_id) + "=="
        return self.direct[key]

    def conversation(
        self, client_id: str, conversation_id: str, conversation_type: str, title: str = ""
    ) -> Conversation:
        """Gets or creates a chat."""
        conv = self.chats.get(conversation_id)
        if conv is None:
            conv = Conversation(conversation_id, client_id, conversation_type, title)
            self.chats[conversation_id] = conv
        elif title and not conv.title:
            conv.title = title
        return conv

    def next_item_id(self) -> str:
        """Ids for message items; cards use their outTrackId."""
        self._item_seq += 1
        return f"m{self._item_seq}"

    def item_view(self, item: ChatItem) -> dict[str, Any]:
        """The item's fields; a card with its text and status as they are now."""
        entry = json_fields(item)
        card = self.cards.get(item.id) if item.kind == "card" else None
        if card is not None:
            entry.update(
                text=card.text,
                status=card.status,
                done=card.done,
                flow_status=card.flow_status,
                template_id=card.template_id,
                card_data=dict(card.card_data),
            )
        return entry
