"""The FAQ: matching, its configuration, and a FAQ question answered end to end without the LLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.base import AgentRequest
from agents.faq import FAQ_AGENT, FaqAgent, FaqEntry, FaqMatcher, normalise
from channels.dingtalk.emulator import EmulatorThread
from daemon.app import Daemon
from daemon.config import ConfigurationError, validate
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import dingtalk_emulator
from tests.e2e_support import CHANNEL, FAST_BACKOFF, Stack, settings_for
from tests.test_e2e_dingtalk import cards, finished
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture"]

HOURS = "We are open 9:00-18:00, Monday to Friday."
RETURNS = "Returns are accepted within 30 days with the receipt."


def entry(*patterns: str, answer: str = HOURS, match: str = "fuzzy") -> FaqEntry:
    return FaqEntry.model_validate({"patterns": list(patterns), "answer": answer, "match": match})


def answer_of(matcher: FaqMatcher, question: str) -> str | None:
    hit = matcher.match(question)
    return None if hit is None else hit.entry.answer


# -- normalising and matching ---------------------------------------------------------------------


def test_normalise_folds_width_case_punctuation_and_spaces() -> None:
    assert normalise("  ＯＰＥＮＩＮＧ　Hours?! ") == "opening hours"
    assert normalise("营业时间？") == "营业时间"
    assert normalise("9:00-18:00") == "9 00 18 00"
    assert normalise("?!…") == ""


def test_exact_entry_matches_only_the_normalised_pattern() -> None:
    matcher = FaqMatcher([entry("Opening hours", match="exact")])
    assert answer_of(matcher, "opening HOURS?") == HOURS
    assert answer_of(matcher, "opening hour") is None  # would score 96 fuzzily
    assert answer_of(matcher, "what are your opening hours") is None


def test_fuzzy_english_above_and_below_the_threshold() -> None:
    matcher = FaqMatcher([entry("opening hours", "when are you open")], threshold=90)
    assert answer_of(matcher, "What are your opening hours?") == HOURS  # WRatio 90
    assert answer_of(matcher, "when are u open") == HOURS  # 93.75
    assert answer_of(matcher, "what time do you open") is None  # 68
    assert answer_of(matcher, "how do I reset my password") is None
    strict = FaqMatcher([entry("opening hours", "when are you open")], threshold=95)
    assert answer_of(strict, "when are u open") is None


def test_fuzzy_chinese_above_and_below_the_threshold() -> None:
    matcher = FaqMatcher([entry("营业时间")], threshold=90)
    hit = matcher.match("请问营业时间是几点")  # the pattern inside a longer question
    assert hit is not None
    assert hit.entry.answer == HOURS
    assert hit.score == pytest.approx(90.0)
    assert answer_of(matcher, "营业时间？") == HOURS
    assert answer_of(matcher, "营业时问") is None  # one character wrong of four: 75
    assert answer_of(matcher, "退货怎么办理") is None


def test_best_score_wins_and_the_first_entry_wins_a_tie() -> None:
    matcher = FaqMatcher(
        [
            entry("opening hour", answer="first"),
            entry("opening hourz", answer="second"),
            entry("opening hours", answer="exact one"),
        ]
    )
    assert answer_of(matcher, "opening hours") == "exact one"  # equality beats similarity
    assert answer_of(matcher, "opening hoursx") == "exact one"  # 96 beats 92
    assert answer_of(matcher, "opening hourq") == "first"  # 92 both: the earlier entry


def test_a_pattern_repeated_across_entries_answers_with_the_first() -> None:
    matcher = FaqMatcher([entry("returns", answer=RETURNS), entry("returns", answer=HOURS)])
    assert answer_of(matcher, "Returns") == RETURNS


def test_an_empty_question_or_table_matches_nothing() -> None:
    assert answer_of(FaqMatcher([entry("营业时间")]), "  ?? ") is None
    empty = FaqMatcher([])
    assert not empty
    assert answer_of(empty, "营业时间") is None


def test_hundreds_of_patterns_still_find_the_right_entry() -> None:
    entries = [entry(f"question number {i} about topic {i * 7}", answer=str(i)) for i in range(500)]
    matcher = FaqMatcher([*entries, entry("营业时间", "opening hours")])
    assert answer_of(matcher, "question number 321 about topic 2247") == "321"
    assert answer_of(matcher, "请问营业时间是几点") == HOURS
    assert answer_of(matcher, "完全无关的问题") is None


async def test_faq_agent_streams_the_fixed_answer() -> None:
    agent = FaqAgent(HOURS)
    request = AgentRequest(system_prompt="", history=(), user_text="when are you open")
    assert agent.name == FAQ_AGENT
    assert [delta async for delta in agent.stream(request)] == [HOURS]
    await agent.aclose()


# -- configuration --------------------------------------------------------------------------------


def config_with(faq: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    return {"agents": {"default": {"type": "echo"}}, "faq": faq, **top}


def test_config_reads_entries_and_threshold() -> None:
    settings = validate(
        config_with(
            [{"patterns": ["营业时间", "opening hours"], "answer": HOURS}],
            faq_threshold=85,
        )
    )
    assert settings.faq[0].match == "fuzzy"
    assert settings.faq_threshold == 85
    assert validate(config_with([])).faq_threshold == 90


@pytest.mark.parametrize(
    ("faq", "top", "explained"),
    [
        ([{"patterns": [], "answer": HOURS}], {}, "faq.0.patterns: must not be empty"),
        ([{"patterns": ["?!"], "answer": HOURS}], {}, "can never match"),
        ([{"patterns": ["hours"], "answer": "  "}], {}, "faq.0.answer"),
        ([{"patterns": ["hours"]}], {}, "faq.0.answer"),
        ([{"patterns": ["hours"], "answer": HOURS, "match": "regex"}], {}, "faq.0.match"),
        ([{"patterns": ["hours"], "answer": HOURS, "typo": 1}], {}, "faq.0.typo"),
        ([], {"faq_threshold": 101}, "faq_threshold"),
    ],
)
def test_config_explains_bad_entries(
    faq: list[dict[str, Any]], top: dict[str, Any], explained: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        validate(config_with(faq, **top))
    assert explained in str(caught.value)


# -- end to end -----------------------------------------------------------------------------------


def faq_answers(daemon: Daemon) -> float | None:
    found: float | None = daemon.metrics.registry.get_sample_value(
        "channeld_faq_answers_total", {"channel": CHANNEL}
    )
    return found


async def test_faq_answered_in_a_card_without_the_llm_and_kept_in_history(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    settings = settings_for(tmp_path, dingtalk_emulator.url, fake_llm)
    settings = settings.model_copy(
        update={"faq": [entry("营业时间", "when are you open"), entry("returns", answer=RETURNS)]}
    )
    fake_llm.script_reply("Paris is the capital of France.")
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        sent = await stack.say("请问营业时间是几点？")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 1 and finished(cards(i)[0])
        )
        card = cards(items)[0]
        assert card["text"] == HOURS
        assert card["flow_status"] == "3"
        await stack.idle()
        assert fake_llm.requests == []
        assert faq_answers(daemon) == 1

        await stack.say("What is the capital of France?")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 2 and finished(cards(i)[1])
        )
        assert cards(items)[1]["text"] == "Paris is the capital of France."
        [request] = fake_llm.requests
        # the FAQ exchange is history like any other: the model sees what the user was told
        assert [(m["role"], m["content"]) for m in request.messages if m["role"] != "system"] == [
            ("user", "请问营业时间是几点？"),
            ("assistant", HOURS),
            ("user", "What is the capital of France?"),
        ]
        await stack.idle()
        assert faq_answers(daemon) == 1
    finally:
        await stack.stop()


async def test_reload_replaces_the_faq_for_running_channels(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    settings = settings_for(tmp_path, dingtalk_emulator.url, fake_llm)
    daemon = Daemon(settings, backoff=FAST_BACKOFF)  # no [[faq]] at start
    await daemon.start()
    stack = Stack(daemon, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        await daemon.reload(
            settings.model_copy(
                update={"faq": [entry("returns policy", answer=RETURNS, match="exact")]}
            )
        )
        sent = await stack.say("Returns policy?")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 1 and finished(cards(i)[0])
        )
        assert cards(items)[0]["text"] == RETURNS
        await stack.idle()
        assert fake_llm.requests == []
        assert faq_answers(daemon) == 1
        assert daemon.settings.faq[0].answer == RETURNS
    finally:
        await stack.stop()
