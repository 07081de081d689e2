"""Easemob end to end through `channeld emulate easemob --rewrite`: the pre-send callback is
answered at once (the platform waits 200 ms for it by default), the answer follows as a REST
message rewritten as it grows (`stream = "edit"`, at most 9 rewrites). Receipt is the emulator
posting the signed pre-send callback."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tools.bench import config as cfg
from tools.bench import e2e, edited, measure, stats
from tools.bench.config import BenchSettings
from tools.bench.probe import EmulatorClient
from tools.bench.procs import Processes

CHANNEL = "em-bench"
WARMUP_STEP, STEADY_STEP, BURST_STEP = 65, 66, 67  # tags bm65n...: not measured
ORG = APP = "bench"
SEND_PATH = f"/{ORG}/{APP}/messages/users"
REWRITE = re.compile(rf"^/{ORG}/{APP}/messages/rewrite/(\d+)$")
PRESEND_WAIT_MS = 200  # the console's default wait for a pre-send verdict


def _text(body: Any, field: str) -> str:
    inner = body.get(field) if isinstance(body, dict) else None
    text = inner.get("msg") if isinstance(inner, dict) else None
    return text if isinstance(text, str) else ""


def message_calls(calls: Iterable[Mapping[str, Any]]) -> list[edited.Call]:
    """The bot's REST sends and rewrites (HTTP 200: accepted)."""
    result = []
    for call in calls:
        path, body, ok = str(call["path"]), call.get("body"), call.get("status") == 200
        rewrite = REWRITE.match(path)
        if path == SEND_PATH and call.get("method") == "POST" and isinstance(body, dict):
            user = str((body.get("to") or [""])[0])
            result.append(edited.Call(float(call["at"]), "send", user, "", _text(body, "body"), ok))
        elif rewrite and call.get("method") == "PUT":
            text = _text(body, "new_msg")
            result.append(edited.Call(float(call["at"]), "edit", "", rewrite[1], text, ok))
    return result


def bot_cards(cards: Iterable[Mapping[str, Any]], bot: str) -> list[edited.Card]:
    """The bot's rewritable messages; a rewrite names one by its msg_id."""
    result = []
    for card in cards:
        members = str(card["chat_id"]).split("|")
        if card.get("sender") != bot or len(members) != 2:
            continue
        user = members[1] if members[0] == bot else members[0]
        texts = tuple(str(x) for x in card.get("texts") or [card.get("text", "")])
        result.append(edited.Card(user, str(card["msg_id"]), int(card["msg_id"]), texts))
    return result


def presend_figures(presends: Iterable[Mapping[str, Any]], msg_ids: set[str]) -> dict[str, Any]:
    """How long channeld took to answer the pre-send callbacks of these messages, and how
    many answers missed the wait (the platform then applies its default policy)."""
    mine = [p for p in presends if str(p["msg_id"]) in msg_ids]
    after = [float(p["answered_after"]) for p in mine if p.get("answered_after") is not None]
    return {
        "answer": stats.summary(after),
        "count": len(mine),
        "late": sum(1 for p in mine if not p.get("in_time")),
        "blocked": sum(1 for p in mine if p.get("verdict") == "block"),
        "wait_ms": PRESEND_WAIT_MS,
    }


def rewrite_figures(calls: Iterable[edited.Call], statuses: Iterable[int]) -> dict[str, Any]:
    """Rewrites per message (accepted), refused ones, and 429 answers of sends or rewrites."""
    per_message = Counter(c.handle for c in calls if c.kind == "edit" and c.accepted)
    refused = sum(1 for c in calls if c.kind == "edit" and not c.accepted)
    return {
        "per_message_max": max(per_message.values(), default=0),
        "refused": refused,
        "too_many_requests": sum(1 for s in statuses if s == 429),
    }


class Easemob:
    """The Easemob emulator as an end-to-end `Platform`."""

    name = "Easemob"

    def __init__(self, emu: EmulatorClient) -> None:
        self.emu = emu

    async def user_message(self, text: str, user: str) -> str:
        """A user writes to the bot; its pre- and post-send callbacks are over on return."""
        body = {"bot_user": cfg.EASEMOB_BOT, "from_user": user, "text": text}
        return str((await self.emu.post("messages", body))["msg_id"])

    async def receipts(self) -> dict[str, float]:
        """Message id -> when its pre-send callback was posted."""
        return {str(p["msg_id"]): float(p["sent_at"]) for p in await self.emu.get("presend")}

    def finished(self, calls: e2e.Calls, traces: e2e.Traces) -> set[str]:
        """Answers whose whole text a send or rewrite showed."""
        return edited.finished_tags(message_calls(calls), edited.full_answers(traces))

    async def replies(
        self,
        sent: Mapping[str, str],
        receipts: Mapping[str, float],
        calls: e2e.Calls,
        traces: e2e.Traces,
    ) -> list[measure.Reply]:
        """Timed from the bot's message and its rewrites."""
        cards = bot_cards(await self.emu.get("cards"), cfg.EASEMOB_BOT)
        return edited.collect_replies(sent, receipts, message_calls(calls), cards, traces)

    def api_calls(self, calls: e2e.Calls) -> dict[str, int]:
        """Sends and rewrites (the token and the bot user are once per start)."""
        return dict(Counter(c.kind for c in message_calls(calls)))

    async def own_figures(
        self, sent: Mapping[str, str], calls: e2e.Calls, since: float
    ) -> dict[str, Any]:
        """The pre-send answer times and the rewrites."""
        mine = message_calls(calls)
        statuses = [
            int(c["status"]) for c in calls if SEND_PATH in c["path"] or "rewrite" in c["path"]
        ]
        return {
            "presend": presend_figures(await self.emu.get("presend"), set(sent.values())),
            "rewrites": rewrite_figures(mine, statuses),
        }


async def run(
    session: aiohttp.ClientSession,
    procs: Processes,
    settings: BenchSettings,
    *,
    llm_url: str,
    traces: e2e.TraceFile,
    workdir: Path,
) -> dict[str, Any]:
    """The Easemob emulator (rewriting enabled) and a daemon with one Easemob channel."""

    def emulator_argv(hooks: str) -> list[str]:
        return [
            "--listen",
            "127.0.0.1:0",
            "--bot-user",
            cfg.EASEMOB_BOT,
            "--org",
            ORG,
            "--app",
            APP,
            "--client-id",
            cfg.EASEMOB_CLIENT_ID,
            "--client-secret",
            cfg.EASEMOB_SECRET,
            "--callback",
            f"http://{hooks}/hooks/{CHANNEL}",
            "--callback-secret",
            cfg.EASEMOB_CALLBACK_SECRET,
            "--presend-wait-ms",
            str(PRESEND_WAIT_MS),
            "--rewrite",
        ]

    def config(admin: str, hooks: str, api_base: str) -> str:
        return cfg.easemob_config(
            state_dir=workdir / "state-easemob",
            admin_listen=admin,
            webhooks_listen=hooks,
            api_base=api_base,
            llm_url=llm_url,
            channel_id=CHANNEL,
        )

    results = await e2e.run_channel(
        session,
        procs,
        settings,
        name="easemob",
        emulator_argv=emulator_argv,
        config=config,
        platform=Easemob,
        channel_id=CHANNEL,
        steps=(WARMUP_STEP, STEADY_STEP, BURST_STEP),
        traces=traces,
        workdir=workdir,
    )
    return results
