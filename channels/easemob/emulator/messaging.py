"""What the server does with messages: stores them, shows them in chats, takes rewrites, and echoes
the bot's REST sends and rewrites back as post-send callbacks (as Easemob fires post-send for
REST messages too)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from channels.easemob.emulator.callbacks import CallbackSender
from channels.easemob.emulator.state import (
    MAX_EDITS,
    BotCard,
    Chat,
    ChatItem,
    EmulatorState,
    Message,
    now_ms,
    pair_chat_id,
)

REST_OPERATOR = "easemob_rest_app_admin"  # who an edit event says rewrote through REST


class Messaging:
    """Messages of one app: users' messages from the control plane, the bot's from REST."""

    def __init__(
        self,
        state: EmulatorState,
        sender: CallbackSender,
        *,
        rewrite: bool,
        settle: float,
        echo: bool,
    ) -> None:
        self.state = state
        self.sender = sender
        self.rewrite_enabled = rewrite
        self.settle = settle  # seconds without a rewrite after which a bot message is final
        self.echo = echo
        self._settlers: dict[str, asyncio.TimerHandle] = {}

    def stop(self) -> None:
        """Cancels pending settle timers."""
        for handle in self._settlers.values():
            handle.cancel()
        self._settlers.clear()

    def user_message(
        self, sender: str, to: str, body: dict[str, Any], *, group: bool = False
    ) -> Message:
        """A message a user's client sent (not yet shown: the pre-send verdict decides)."""
        if sender not in self.state.users:
            self.state.add_user(sender)
        return self._store(sender, to, body, {}, group=group)

    def show_user_message(self, message: Message) -> ChatItem:
        """Puts a user's message in its chat."""
        chat = self._chat_of(message)
        item = ChatItem(message.msg_id, "user", time.monotonic(), message.sender, message.text)
        return self.state.add_item(chat, item)

    def block(self, item: ChatItem, message: Message, code: str) -> None:
        """Marks a user's message the pre-send callback refused (its sender sees `code`)."""
        item.blocked = code
        self.state.notify(message.chat_id)

    def bot_send(
        self, sender: str, recipients: list[str], body: dict[str, Any], ext: dict[str, Any]
    ) -> dict[str, str]:
        """A REST send to users: one message each; returns recipient -> message id."""
        sent: dict[str, str] = {}
        for to in recipients:
            message = self._store(sender, to, body, ext)
            sent[to] = message.msg_id
            chat = self._chat_of(message)
            rewritable = self.rewrite_enabled and body.get("type") in ("txt", "custom")
            kind = "card" if rewritable else "message"
            if rewritable:
                card = BotCard(message.msg_id, chat.chat_id, sender, message.text)
                card.texts.append(message.text)
                self.state.cards[message.msg_id] = card
                self._settle_later(message.msg_id, chat.chat_id)
            item = ChatItem(message.msg_id, kind, time.monotonic(), sender, message.text)
            self.state.add_item(chat, item)
            if self.echo:
                self._echo_send(_snapshot(message))
        return sent

    def rewrite(
        self, message: Message, new_msg: dict[str, Any], new_ext: Any, combine: bool
    ) -> None:
        """Applies one rewrite (the caller checked the cap) and echoes its edit event."""
        message.body = dict(new_msg)
        if isinstance(new_ext, dict):
            message.ext = {**message.ext, **new_ext} if combine else dict(new_ext)
        message.edits += 1
        chat_id = message.chat_id
        card = self.state.cards.get(message.msg_id)
        if card is not None:
            card.text = message.text
            card.edits = message.edits
            card.texts.append(message.text)
            if card.edits >= MAX_EDITS:
                self._settle(message.msg_id, chat_id)
            else:
                self._settle_later(message.msg_id, chat_id)
        else:
            for item in self.state.chats[chat_id].items:
                if item.id == message.msg_id:
                    item.text = message.text
        self.state.notify(chat_id)
        if self.echo:
            self._echo_edit(_snapshot(message), self.state.ids.next(), now_ms())

    def settle_all(self) -> None:
        """Marks every rewritable bot message final now (no more rewrites are expected)."""
        for msg_id, card in list(self.state.cards.items()):
            self._settle(msg_id, card.chat_id)

    # -- plumbing --------------------------------------------------------------------------------
    # echoes carry the message as it was when sent or rewritten, whenever they go out

    def _echo_send(self, message: Message) -> None:
        signing = self.sender.signing()
        self.sender.echo(lambda: self.sender.postsend(message, flat=False, signing=signing))

    def _echo_edit(self, message: Message, event_id: str, edit_time: int) -> None:
        self.sender.echo(lambda: self.sender.edited(message, event_id, REST_OPERATOR, edit_time))

    def _store(
        self,
        sender: str,
        to: str,
        body: dict[str, Any],
        ext: dict[str, Any],
        *,
        group: bool = False,
    ) -> Message:
        chat_id = to if group else pair_chat_id(sender, to)
        message = Message(
            self.state.ids.next(),
            sender,
            to,
            chat_id,
            "groupchat" if group else "chat",
            dict(body),
            dict(ext),
            now_ms(),
        )
        self.state.messages[message.msg_id] = message
        return message

    def _chat_of(self, message: Message) -> Chat:
        members = [message.to] if message.chat_type == "groupchat" else [message.sender, message.to]
        return self.state.chat(message.chat_id, message.chat_type, sorted(members))

    def _settle_later(self, msg_id: str, chat_id: str) -> None:
        previous = self._settlers.pop(msg_id, None)
        if previous is not None:
            previous.cancel()
        loop = asyncio.get_running_loop()
        self._settlers[msg_id] = loop.call_later(self.settle, self._settle, msg_id, chat_id)

    def _settle(self, msg_id: str, chat_id: str) -> None:
        handle = self._settlers.pop(msg_id, None)
        if handle is not None:
            handle.cancel()
        card = self.state.cards.get(msg_id)
        if card is not None and not card.settled:
            card.settled = True
            self.state.notify(chat_id)


def _snapshot(message: Message) -> Message:
    """A copy that later rewrites do not change."""
    return dataclasses.replace(message, body=dict(message.body), ext=dict(message.ext))
