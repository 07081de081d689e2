"""Routing: each `[[routes]]` filter, their combination and order, the configuration's checks, and
a keyword sending a question to a second agent end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agents.faq import FaqEntry
from agents.routes import MessageFacts, Route, RouteTable, choose
from channels.dingtalk.emulator import EmulatorThread
from daemon.app import Daemon
from daemon.config import EXIT_CONFIG_ERROR, ConfigurationError, Settings, validate
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import dingtalk_emulator
from tests.e2e_support import CHANNEL, FAST_BACKOFF, Stack, settings_for
from tests.test_e2e_dingtalk import cards, finished
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture"]


def route(agent: str = "strong", **filters: Any) -> Route:
    return Route.model_validate({"agent": agent, **filters})


def facts(
    text: str = "hello",
    *,
    channel: str = "dingtalk-main",
    platform: str = "dingtalk",
    groups: tuple[str, ...] = (),
    content_types: frozenset[str] = frozenset({"text"}),
) -> MessageFacts:
    return MessageFacts(channel, platform, groups, text, content_types)


def chosen(routes: list[Route], message: MessageFacts) -> str | None:
    found = choose(routes, message)
    return None if found is None else found.agent


# -- each filter alone ----------------------------------------------------------------------------


def test_a_route_without_filters_matches_every_message() -> None:
    assert chosen([route()], facts()) == "strong"
    assert chosen([route()], facts("", content_types=frozenset())) == "strong"


def test_channels_filter() -> None:
    routes = [route(channels=["dingtalk-main", "dingtalk-b"])]
    assert chosen(routes, facts(channel="dingtalk-b")) == "strong"
    assert chosen(routes, facts(channel="feishu-main")) is None


def test_platforms_filter() -> None:
    routes = [route(platforms=["feishu"])]
    assert chosen(routes, facts(platform="feishu")) == "strong"
    assert chosen(routes, facts(platform="dingtalk")) is None


def test_user_groups_filter_needs_any_one_group() -> None:
    routes = [route(user_groups=["vip", "staff"])]
    assert chosen(routes, facts(groups=("customers", "vip"))) == "strong"
    assert chosen(routes, facts(groups=("customers",))) is None
    assert chosen(routes, facts(groups=())) is None  # an unknown sender is in no group


def test_min_chars_filter_counts_characters_not_bytes() -> None:
    routes = [route(min_chars=5)]
    assert chosen(routes, facts("合同审核吗")) == "strong"  # five characters, fifteen bytes
    assert chosen(routes, facts("合同审核")) is None
    assert chosen(routes, facts("  hi     ")) is None  # surrounding spaces do not count


def test_keywords_filter_any_keyword_normalised_like_the_faq() -> None:
    routes = [route(keywords=["合同", "Contract"])]
    assert chosen(routes, facts("Please review my CONTRACT.")) == "strong"
    assert chosen(routes, facts("Ｃｏｎｔｒａｃｔ?")) == "strong"  # full-width folded
    assert chosen(routes, facts("请帮我看一下这份合同")) == "strong"  # no spaces around it
    assert chosen(routes, facts("What are your opening hours?")) is None


def test_content_types_filter_and_the_image_alias() -> None:
    routes = [route(content_types=["image", "audio"])]
    assert routes[0].content_types == ("picture", "audio")
    assert chosen(routes, facts("", content_types=frozenset({"picture"}))) == "strong"
    assert chosen(routes, facts("hi", content_types=frozenset({"text", "audio"}))) == "strong"
    assert chosen(routes, facts("hi", content_types=frozenset({"text"}))) is None
    assert chosen(routes, facts("", content_types=frozenset({"file"}))) is None


# -- several filters, order, no match -------------------------------------------------------------


def test_every_given_filter_must_match() -> None:
    routes = [route(platforms=["dingtalk"], user_groups=["vip"], keywords=["contract"])]
    assert chosen(routes, facts("my contract", groups=("vip",))) == "strong"
    assert chosen(routes, facts("my contract", groups=())) is None
    assert chosen(routes, facts("my invoice", groups=("vip",))) is None
    assert chosen(routes, facts("my contract", groups=("vip",), platform="feishu")) is None


def test_the_first_matching_route_wins() -> None:
    routes = [
        route("lawyer", keywords=["contract"], user_groups=["vip"]),
        route("strong", keywords=["contract"]),
        route("catch-all"),
    ]
    assert chosen(routes, facts("contract", groups=("vip",))) == "lawyer"
    assert chosen(routes, facts("contract")) == "strong"
    assert chosen(routes, facts("hello")) == "catch-all"
    assert chosen(list(reversed(routes)), facts("contract", groups=("vip",))) == "catch-all"


def test_no_route_matching_leaves_the_channels_agent() -> None:
    assert chosen([], facts()) is None
    assert chosen([route(keywords=["contract"]), route(min_chars=500)], facts("hi")) is None


def test_the_table_is_replaced_whole() -> None:
    table = RouteTable([route(keywords=["contract"])])
    assert table
    assert table.choose(facts("contract")) is not None
    table.replace([])
    assert not table
    assert table.choose(facts("contract")) is None


# -- configuration --------------------------------------------------------------------------------


def config_with(routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "agents": {"default": {"type": "echo"}, "strong": {"type": "echo"}},
        "channels": [
            {
                "id": "dingtalk-main",
                "type": "dingtalk",
                "agent": "default",
                "client_id": "ding-id",
                "client_secret": "ding-secret",
            }
        ],
        "routes": routes,
    }


def test_config_reads_routes_in_order() -> None:
    settings = validate(
        config_with(
            [
                {"agent": "strong", "channels": ["dingtalk-main"], "keywords": ["合同"]},
                {"agent": "default", "platforms": ["feishu"], "min_chars": 200},
            ]
        )
    )
    assert [r.agent for r in settings.routes] == ["strong", "default"]
    assert settings.routes[0].keywords == ("合同",)
    assert validate(config_with([])).routes == []


@pytest.mark.parametrize(
    ("routes", "explained"),
    [
        ([{"agent": "strong"}, {"agent": "ghost"}], "routes.1.agent: unknown agent 'ghost'"),
        (
            [{"agent": "strong", "channels": ["dingtalk-main", "feishu-x"]}],
            "routes.0.channels: unknown channel 'feishu-x'",
        ),
        ([{"agent": "strong", "platforms": ["wechat"]}], "routes.0.platforms: unknown platform"),
        ([{"channels": ["dingtalk-main"]}], "routes.0.agent"),
        ([{"agent": "strong", "keywords": []}], "routes.0.keywords: Value error, must not be"),
        ([{"agent": "strong", "keywords": ["?!"]}], "can never match"),
        ([{"agent": "strong", "content_types": ["imgae"]}], "unknown content type 'imgae'"),
        ([{"agent": "strong", "min_chars": 0}], "routes.0.min_chars"),
        ([{"agent": "strong", "typo": 1}], "routes.0.typo"),
    ],
)
def test_config_explains_bad_routes(routes: list[dict[str, Any]], explained: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        validate(config_with(routes))
    assert explained in str(caught.value)


ROUTED_FILE = """
[agents.default]
type = "echo"

[agents.strong]
type = "echo"

[[channels]]
id = "dingtalk-main"
type = "dingtalk"
agent = "default"
client_id = "ding-id"
client_secret = "ding-secret"

[[routes]]
agent = "strong"
keywords = ["contract"]

[[routes]]
agent = "strong"
channels = ["dingtalk-main", "dingtalk-typo"]
"""


def test_check_config_refuses_a_route_to_an_unknown_channel(tmp_path: Path) -> None:
    path = tmp_path / "channeld.toml"

    def check_config(text: str) -> subprocess.CompletedProcess[str]:
        path.write_text(text, encoding="utf-8")
        return subprocess.run(
            [sys.executable, "-m", "daemon", "check-config", "--config", str(path)],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "STATE_DIRECTORY": str(tmp_path)},
            check=False,
            timeout=60,
        )

    refused = check_config(ROUTED_FILE)
    assert refused.returncode == EXIT_CONFIG_ERROR
    assert "routes.1.channels: unknown channel 'dingtalk-typo'" in refused.stderr
    accepted = check_config(ROUTED_FILE.replace(', "dingtalk-typo"', ""))
    assert accepted.returncode == 0, accepted.stderr


# -- end to end -----------------------------------------------------------------------------------

STRONG_PROMPT = "You review contracts carefully."


def two_agents(settings: Settings, routes: list[Route]) -> Settings:
    """The fake LLM behind two OpenAI agents told apart by the model each request names."""
    default = settings.agents["default"]
    strong = default.model_copy(
        update={"model": "strong-model", "system_prompt": STRONG_PROMPT, "history_messages": 0}
    )
    return settings.model_copy(
        update={"agents": {"default": default, "strong": strong}, "routes": routes}
    )


def routed(daemon: Daemon, agent: str) -> float | None:
    found: float | None = daemon.metrics.registry.get_sample_value(
        "channeld_route_total", {"channel": CHANNEL, "agent": agent}
    )
    return found


async def test_a_keyword_routes_the_question_to_the_second_agent(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    settings = settings_for(tmp_path, dingtalk_emulator.url, fake_llm)
    settings = two_agents(settings, [route("strong", keywords=["contract", "合同"])])
    fake_llm.script_reply("Clause 4 is unusual.")
    fake_llm.script_reply("Hello there.")
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        sent = await stack.say("Could you check this CONTRACT for me?")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 1 and finished(cards(i)[0])
        )
        assert cards(items)[0]["text"] == "Clause 4 is unusual."
        await stack.idle()
        [first] = fake_llm.requests
        assert first.body["model"] == "strong-model"
        assert first.messages[0] == {"role": "system", "content": STRONG_PROMPT}
        assert routed(daemon, "strong") == 1

        await stack.say("Thanks, bye")  # no keyword: the channel's own agent
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 2 and finished(cards(i)[1])
        )
        assert cards(items)[1]["text"] == "Hello there."
        await stack.idle()
        second = fake_llm.requests[1]
        assert second.body["model"] == "fake-model"
        assert second.messages[0]["content"] != STRONG_PROMPT
        assert routed(daemon, "strong") == 1
        assert routed(daemon, "default") is None  # the channel's own agent is not "routed"
        assert len(second.messages) == 4  # the channel's agent sees the first exchange

        await stack.say("One more 合同 question")
        await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 3 and finished(cards(i)[2])
        )
        await stack.idle()
        third = fake_llm.requests[2]
        assert third.body["model"] == "strong-model"
        # the routed agent's own history size (0), not the channel agent's (20)
        assert [m["role"] for m in third.messages] == ["system", "user"]
        assert routed(daemon, "strong") == 2
    finally:
        await stack.stop()


async def test_reload_replaces_the_routes_and_refuses_an_agent_not_running(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    settings = two_agents(settings_for(tmp_path, dingtalk_emulator.url, fake_llm), [])
    fake_llm.script_reply("Routed after the reload.")
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        new_routes = [route("strong", keywords=["invoice"])]
        await daemon.reload(settings.model_copy(update={"routes": new_routes}))
        # agents start only with the daemon: routes naming a new one keep the previous routes
        await daemon.reload(settings.model_copy(update={"routes": [route("ghost")]}))
        assert daemon.settings.routes == new_routes
        sent = await stack.say("Where is my invoice?")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 1 and finished(cards(i)[0])
        )
        assert cards(items)[0]["text"] == "Routed after the reload."
        await stack.idle()
        [request] = fake_llm.requests
        assert request.body["model"] == "strong-model"
        assert routed(daemon, "strong") == 1
    finally:
        await stack.stop()


async def test_a_picture_routes_by_content_type_not_by_the_note_describing_it(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    # the agent is told "[The user sent an image ...]"; a keyword "image" is not the user's word
    settings = settings_for(tmp_path, dingtalk_emulator.url, fake_llm)
    routes = [route("default", keywords=["image"]), route("strong", content_types=["image"])]
    settings = two_agents(settings, routes)
    fake_llm.script_reply("A nice picture.")
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        sent = await stack.say("", msgtype="picture", download_code="pic-1")
        await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 1 and finished(cards(i)[0])
        )
        await stack.idle()
        [request] = fake_llm.requests
        assert "image" in request.messages[-1]["content"]  # the note the agent reads
        assert request.body["model"] == "strong-model"
        assert routed(daemon, "strong") == 1
        assert routed(daemon, "default") is None
    finally:
        await stack.stop()


async def test_the_faq_answers_before_any_route(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    settings = settings_for(tmp_path, dingtalk_emulator.url, fake_llm)
    settings = two_agents(settings, [route("strong", keywords=["contract"])])
    faq = FaqEntry(patterns=["contract template"], answer="See the Downloads page.")
    settings = settings.model_copy(update={"faq": [faq]})
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        sent = await stack.say("Contract template?")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 1 and finished(cards(i)[0])
        )
        assert cards(items)[0]["text"] == "See the Downloads page."
        await stack.idle()
        assert fake_llm.requests == []
        assert routed(daemon, "strong") is None
    finally:
        await stack.stop()
