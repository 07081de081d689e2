"""What the ZIM emulator knows and remembers beyond the state every emulator keeps: the app and
its secrets, robots, peer conversations with their messages and edits, the rate-limit window
and its refusals, and ZIM's error shape (HTTP 200 with a non-zero `Code`)."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channels.emulator import http
from channels.emulator.state import CardStatus, EmulatorStateBase, RecordedCall, Transcript
from channels.emulator.state import Fault as FaultBase

# Return codes (ZIM server "Return codes" page and each API's own table)
OK = 0
RATE_LIMITED = 7  # public: requests per second over the API's limit
APP_UNKNOWN = 100000010  # the gateway found no ServerSecret for the AppId
TIMESTAMP_EMPTY = 100000002
TIMESTAMP_FORMAT = 100000003
SIGNATURE_EXPIRED = 100000004
SIGNATURE_INVALID = 100000005
ACTION_EMPTY = 100000006
ACTION_UNSUPPORTED = 100000007
NONCE_EMPTY = 100000008
SIGNATURE_EMPTY = 100000009
VERSION_EMPTY = 100000013
VERSION_UNSUPPORTED = 100000014
APP_ID_FORMAT = 100000001
BAD_PARAM = 660000002
TOO_MANY_USERS = 660000011
MESSAGE_TOO_LARGE = 660400001
NOT_REGISTERED = 660500002  # the sender never logged in nor was registered
ROBOT_EXISTS = 660700002
ROBOT_NAME_TOO_LONG = 660700006
ROBOT_AVATAR_TOO_LONG = 660700007
EDIT_WINDOW_PASSED = 661000001
EDIT_FAILED = 661000005

ROBOT_PREFIX = "@RBT#"
MAX_USER_ID_BYTES = 32
FIRST_MSG_ID = 857639062792568832  # the docs' example: ids are 64-bit, above 2**53


@dataclass
class Robot:
    """A robot users can write to; `registered` once RobotRegister took it (or from the start)."""

    robot_id: str
    registered: bool = False
    name: str = ""
    avatar: str = ""


RobotSpec = Robot | str


class ApiError(http.ApiError[int]):
    """A ZIM server API error: HTTP 200 with `{"Code","Message","RequestId"}`."""

    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(200, code, message)
        self.extra = extra
        self.request_id = ""

    def body(self) -> dict[str, Any]:
        """The JSON body ZIM sends with an error."""
        body = {"Code": self.code, "Message": self.message, "RequestId": self.request_id}
        return {**body, **self.extra}


@dataclass(kw_only=True)
class Fault(FaultBase):
    """An injected fault: an HTTP status, or HTTP 200 with a business `code`; `action` narrows
    it to one API (every action is `POST /`)."""

    action: str | None = None
    code: int | None = None
    message: str = ""

    def matches(self, method: str, path: str) -> bool:
        """Faults naming an action are matched by `take_action_fault`, which sees the query."""
        return self.action is None and super().matches(method, path)

    def matches_action(self, method: str, path: str, action: str) -> bool:
        """Method and path (as `matches`) and the action."""
        return self.action == action and FaultBase.matches(self, method, path)


@dataclass(frozen=True, slots=True)
class CallRecord(RecordedCall):
    """One API call: its action and the `Code` it was answered with (None: not JSON)."""

    action: str
    code: int | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused for rate: the app-wide window was full."""

    at: float  # the emulator's clock
    action: str
    in_window: int  # requests already accepted within the last window


@dataclass
class PeerMessage(CardStatus):
    """One message of a peer conversation, with its edits; a robot's message shows as a card
    that is done once nothing changed it for `settle` seconds (ZIM has no "finished" signal)."""

    msg_id: str
    msg_seq: int
    chat_id: str
    sender: str
    receiver: str
    msg_type: int
    text: str
    sent_at: float  # the emulator's clock
    msg_time: int  # wall clock, ms
    source: int  # 0 client SDK, 1 server API
    edit_seq: int = 0
    changed_at: float = 0.0
    latest_edit_time: int = 0  # wall clock, s
    texts: list[str] = field(default_factory=list)  # every text it had, in order
    settled: bool = False

    @property
    def status(self) -> str:
        """`created` (never edited, still fresh), `streaming` (edited, still fresh), `finished`."""
        if self.settled:
            return "finished"
        return "streaming" if self.edit_seq else "created"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary for the control plane."""
        return {
            "msg_id": self.msg_id,
            "msg_seq": self.msg_seq,
            "chat_id": self.chat_id,
            "sender": self.sender,
            "receiver": self.receiver,
            "msg_type": self.msg_type,
            "text": self.text,
            "edits": self.edit_seq,
            "texts": list(self.texts),
            "status": self.status,
            "done": self.done,
        }


@dataclass
class ChatItem:
    """One entry of a transcript: a user's message or a robot's (its latest text when shown)."""

    id: str  # the msg_id
    kind: str  # "user" or "card"
    at: float
    sender: str
    text: str


@dataclass
class Chat(Transcript):
    """The peer conversation of one user and one robot, as both see it."""

    chat_id: str
    robot_id: str
    user_id: str

    def key(self) -> str:
        """The chat id."""
        return self.chat_id


def chat_id_of(robot_id: str, user_id: str) -> str:
    """The id of the conversation between a robot and a user."""
    return f"{robot_id}:{user_id}"


class RateWindow:
    """An app-wide limit counted in a sliding window: a request is refused when `limit` were
    accepted within the last `window` seconds; refused requests do not count."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._accepted: collections.deque[float] = collections.deque()

    def admit(self) -> int | None:
        """None when admitted (and counted); else how many the window holds."""
        now = self._clock()
        while self._accepted and self._accepted[0] <= now - self.window:
            self._accepted.popleft()
        if len(self._accepted) >= self.limit:
            return len(self._accepted)
        self._accepted.append(now)
        return None


class EmulatorState(EmulatorStateBase[Fault, CallRecord, PeerMessage]):
    """All mutable state; `notify()` wakes everyone waiting for a change. Robot messages are
    the cards (`cards[msg_id]`)."""

    def __init__(self, robots: list[Robot], clock: Callable[[], float], settle: float) -> None:
        super().__init__()
        self.apps: dict[str, Robot] = {r.robot_id: r for r in robots}
        self.chats: dict[str, Chat] = {}
        self.messages: dict[str, PeerMessage] = {}  # msg_id -> message
        self.conversations: dict[frozenset[str], list[PeerMessage]] = {}  # by its two users
        self.users: set[str] = set()  # users that wrote (logged in, for ZIM)
        self.refusals: list[Refusal] = []
        self.clock = clock
        self.settle = settle
        self._ids = itertools.count(FIRST_MSG_ID)
        self._request_ids = itertools.count(343649807833778782)

    def request_id(self) -> str:
        """A fresh RequestId."""
        return str(next(self._request_ids))

    def known_user(self, user_id: str) -> bool:
        """A user the server would send for: logged in, or a registered robot."""
        robot = self.apps.get(user_id)
        return user_id in self.users or (robot is not None and robot.registered)

    def store(
        self,
        sender: str,
        receiver: str,
        text: str,
        *,
        msg_type: int,
        source: int,
        msg_time: int,
        robot_id: str | None = None,
    ) -> PeerMessage:
        """Persists a message: a new MsgId and the next MsgSeq of its conversation; a robot's
        message becomes a card, and a robot's conversation shows in a chat."""
        pair = frozenset((sender, receiver))
        conversation = self.conversations.setdefault(pair, [])
        user = receiver if robot_id == sender else sender
        chat_id = chat_id_of(robot_id, user) if robot_id is not None else ""
        now = self.clock()
        message = PeerMessage(
            msg_id=str(next(self._ids)),
            msg_seq=len(conversation) + 1,
            chat_id=chat_id,
            sender=sender,
            receiver=receiver,
            msg_type=msg_type,
            text=text,
            sent_at=now,
            msg_time=msg_time,
            source=source,
            changed_at=now,
            texts=[text],
        )
        conversation.append(message)
        self.messages[message.msg_id] = message
        if robot_id is not None:
            chat = self.chats.get(chat_id)
            if chat is None:
                chat = self.chats[chat_id] = Chat(chat_id, robot_id, user)
            robot_sent = sender == robot_id
            if robot_sent:
                self.cards[message.msg_id] = message
            kind = "card" if robot_sent else "user"
            self.add_item(chat, ChatItem(message.msg_id, kind, now, sender, text))
        else:
            self.changed()
        return message

    def find(self, sender: str, peer: str, msg_seq: int) -> PeerMessage | None:
        """The message `sender` sent to `peer` with that MsgSeq."""
        for message in self.conversations.get(frozenset((sender, peer)), []):
            if message.msg_seq == msg_seq and message.sender == sender:
                return message
        return None

    def refresh(self, card: PeerMessage) -> None:
        """A robot's message is done once `settle` seconds passed without a change."""
        card.settled = self.clock() >= card.changed_at + self.settle

    def item_view(self, item: ChatItem) -> dict[str, Any]:
        """What members see of an item; a robot's message with its latest text."""
        entry: dict[str, Any] = {
            "id": item.id,
            "kind": item.kind,
            "at": item.at,
            "sender": item.sender,
            "text": item.text,
        }
        card = self.cards.get(item.id) if item.kind == "card" else None
        if card is not None:
            self.refresh(card)
            entry.update(text=card.text, status=card.status, done=card.done, edits=card.edit_seq)
        return entry
