"""A whole daemon whose callback listener serves a webhook platform's emulator, on loopback.

A platform's test module subclasses `WebhookStack` with its channel (`channel_id`, `platform`,
`credentials`), its bot and how a user writes to it, and how the emulator is pointed at the
listener (`aim`); `webhook_stack(kind, ...)` runs the daemon with `[webhooks] listen` on port 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from daemon.app import Daemon
from daemon.config import WebhooksSection
from tests.e2e_support import FAST_BACKOFF, Stack, settings_for
from tools.fake_llm import FakeLLM

Items = list[dict[str, Any]]
W = TypeVar("W", bound="WebhookStack")

__all__ = ["Items", "WebhookStack", "context_then_new", "says", "user_turns", "webhook_stack"]


class WebhookStack(Stack):
    """A running daemon with one channel on a webhook platform's emulator, which calls it back."""

    platform: ClassVar[str]
    credentials: ClassVar[dict[str, Any]]  # the channel's config beyond the common settings
    bot: ClassVar[str]
    user_field: ClassVar[str]  # how `send_user_message` names the user who writes
    user: ClassVar[str]  # the user who writes unless told otherwise

    @property
    def hooks(self) -> str:
        """The callback listener's `/hooks` address."""
        assert self.daemon.webhooks is not None and self.daemon.webhooks.port is not None
        return f"http://127.0.0.1:{self.daemon.webhooks.port}/hooks"

    async def aim(self) -> None:
        """Points the emulator's callbacks at this channel on the listener."""
        await self.emulator.set_callback(f"{self.hooks}/{self.channel_id}")

    def metric(self, name: str, **labels: str) -> float:
        """A sample of this channel's metrics; 0 for a labelled series not counted yet."""
        return self.sample(name, **labels) or 0.0

    async def say(self, text: str, user: str | None = None, **kwargs: Any) -> Any:
        """A user writes to the bot; the emulator's record of the send (delivered or not)."""
        sender = {self.user_field: user or self.user}
        return await self.emulator.send_user_message(self.bot, text=text, **sender, **kwargs)

    async def answered(
        self, chat_id: str, done: Callable[[Items], bool], timeout: float = 15.0
    ) -> Items:
        """The bot's items in the chat once `done` holds for them."""

        def check(emulator: Any) -> Items | None:
            view = emulator.chat_view(chat_id) or {"items": []}
            items = [i for i in view["items"] if self.is_bot(i)]
            return items if done(items) else None

        found: Items | None = await self.emulator.wait_for(check, timeout)
        assert found is not None
        return found


@asynccontextmanager
async def webhook_stack(
    kind: type[W], tmp_path: Path, emulator: Any, llm: FakeLLM | None, **channel: Any
) -> AsyncIterator[W]:
    """A daemon with `kind`'s channel on `emulator` (`channel` overriding its config) and the
    emulator aimed at its callback listener; stopped on leaving."""
    base = {
        "id": kind.channel_id,
        "type": kind.platform,
        "agent": "default",
        "api_base": emulator.url,
        "card_update_interval": 0.05,
        "request_timeout": 3,
        **kind.credentials,
    }
    settings = settings_for(tmp_path, emulator.url, llm, base_channel=base, channel=channel)
    settings = settings.model_copy(update={"webhooks": WebhooksSection(listen="127.0.0.1:0")})
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        stack = kind(daemon, emulator, llm)
        await stack.aim()
        yield stack
    finally:
        await daemon.stop()


def says(*texts: str) -> Callable[[Items], bool]:
    """`done` for `answered`: the bot's items show exactly these texts."""
    return lambda items: [i["text"] for i in items] == list(texts)


def user_turns(llm: FakeLLM) -> list[str]:
    """The user's turns in every request the LLM got."""
    return [m["content"] for r in llm.requests for m in r.messages if m["role"] == "user"]


async def context_then_new(stack: WebhookStack, llm: FakeLLM) -> None:
    """A conversation keeps its context across turns, and `/new` starts it afresh."""
    first = await stack.say("my name is Ada")
    await stack.answered(first.chat_id, says("Echo: my name is Ada"))
    await stack.idle()
    await stack.say("what is my name")
    await stack.answered(first.chat_id, lambda i: len(i) == 2 and "name" in i[1]["text"])
    await stack.idle()
    second = llm.requests[1].messages
    assert [m["content"] for m in second if m["role"] == "user"] == [
        "my name is Ada",
        "what is my name",
    ]
    assert any(m["role"] == "assistant" for m in second)
    await stack.say("/new")
    await stack.answered(first.chat_id, lambda i: len(i) == 3)
    await stack.idle()
    await stack.say("who am I")
    await stack.answered(first.chat_id, lambda i: len(i) == 4 and "who" in i[3]["text"])
    third = llm.requests[2].messages
    assert [m["content"] for m in third if m["role"] != "system"] == ["who am I"]
