"""ZEGO ZIM end to end through `channeld emulate zim`: a robot answers in one message edited
as the answer grows (`stream = "edit"`), every send and edit of the app within ZIM's app-wide 20
requests per sliding second. Receipt is the emulator posting the signed `send_msg` callback."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tools.bench import config as cfg
from tools.bench import e2e, edited, measure
from tools.bench.config import BenchSettings
from tools.bench.probe import EmulatorClient
from tools.bench.procs import Processes

CHANNEL = "zim-bench"
WARMUP_STEP, STEADY_STEP, BURST_STEP = 60, 61, 62  # tags bm60n...: not measured
SEND, EDIT = "SendPeerMessage", "EditC2cMsgBody"
MESSAGE_ACTIONS = (SEND, EDIT)
QPS = 20  # the emulator's app-wide limit, ZIM's default
RETRY_SCALE = 0.1  # callback retries after 0.2, 0.4, ... s instead of 2, 4, ... s


def _text(body: Mapping[str, Any]) -> str:
    message = body.get("MessageBody")
    text = message.get("Message") if isinstance(message, dict) else None
    return text if isinstance(text, str) else ""


def message_calls(calls: Iterable[Mapping[str, Any]]) -> list[edited.Call]:
    """The robot's sends and edits (`Code` 0: accepted)."""
    result = []
    for call in calls:
        body, action = call.get("body"), call.get("action")
        if action not in MESSAGE_ACTIONS or not isinstance(body, dict):
            continue
        accepted = call.get("code") == 0
        if action == SEND:
            receivers = body.get("ToUserId") or [""]
            user, handle = str(receivers[0]), ""
        else:
            user, handle = "", f"{body.get('ConvId')}:{body.get('ConvMsgSeq')}"
        kind = "send" if action == SEND else "edit"
        result.append(edited.Call(float(call["at"]), kind, user, handle, _text(body), accepted))
    return result


def robot_cards(cards: Iterable[Mapping[str, Any]], robot: str) -> list[edited.Card]:
    """The robot's stored messages; an edit names one by its receiver and MsgSeq."""
    return [
        edited.Card(
            str(c["receiver"]),
            f"{c['receiver']}:{c['msg_seq']}",
            int(c["msg_seq"]),
            tuple(str(x) for x in c.get("texts") or [c.get("text", "")]),
        )
        for c in cards
        if c.get("sender") == robot
    ]


def api_calls(calls: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Sends and edits by action, refused ones included."""
    return dict(Counter(str(c["action"]) for c in calls if c.get("action") in MESSAGE_ACTIONS))


def budget(
    calls: Iterable[Mapping[str, Any]], refusals: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The app-wide budget: accepted sends and edits in the busiest sliding second, refusals."""
    accepted = [float(c["at"]) for c in calls if c.get("action") in MESSAGE_ACTIONS]
    refused = list(refusals)
    return {
        "peak_per_second": edited.peak_per_window(accepted),
        "rate_refusals": len(refused),
        "refused_actions": dict(Counter(str(r.get("action")) for r in refused)),
    }


class Zim:
    """The ZIM emulator as an end-to-end `Platform`."""

    name = "ZIM"

    def __init__(self, emu: EmulatorClient) -> None:
        self.emu = emu

    async def user_message(self, text: str, user: str) -> str:
        """A user writes to the robot; the callback's first attempt is over when this returns."""
        body = {"robot_id": cfg.ZIM_ROBOT, "from_user_id": user, "text": text}
        return str((await self.emu.post("messages", body))["message_id"])

    async def receipts(self) -> dict[str, float]:
        """Message id -> when the first `send_msg` callback the listener took was posted."""
        found: dict[str, float] = {}
        for attempt in (await self.emu.get("callbacks", event="send_msg"))["attempts"]:
            if attempt["ok"]:
                found.setdefault(str(attempt["msg_id"]), float(attempt["at"]))
        return found

    def finished(self, calls: e2e.Calls, traces: e2e.Traces) -> set[str]:
        """Answers whose whole text a send or edit showed."""
        return edited.finished_tags(message_calls(calls), edited.full_answers(traces))

    async def replies(
        self,
        sent: Mapping[str, str],
        receipts: Mapping[str, float],
        calls: e2e.Calls,
        traces: e2e.Traces,
    ) -> list[measure.Reply]:
        """Timed from the robot's message and its edits."""
        cards = robot_cards(await self.emu.get("cards"), cfg.ZIM_ROBOT)
        return edited.collect_replies(sent, receipts, message_calls(calls), cards, traces)

    def api_calls(self, calls: e2e.Calls) -> dict[str, int]:
        """Sends and edits (registration is once per start)."""
        return api_calls(calls)

    async def own_figures(
        self, sent: Mapping[str, str], calls: e2e.Calls, since: float
    ) -> dict[str, Any]:
        """The budget: the busiest second and the emulator's refusals for rate."""
        refusals = [r for r in await self.emu.get("refusals") if float(r["at"]) >= since]
        accepted = [c for c in calls if c.get("code") == 0]
        return {"budget": budget(accepted, refusals)}


async def run(
    session: aiohttp.ClientSession,
    procs: Processes,
    settings: BenchSettings,
    *,
    llm_url: str,
    traces: e2e.TraceFile,
    workdir: Path,
) -> dict[str, Any]:
    """The ZIM emulator and a daemon with one ZIM channel: a steady step and a burst."""

    def emulator_argv(hooks: str) -> list[str]:
        return [
            "--listen",
            "127.0.0.1:0",
            "--robot",
            cfg.ZIM_ROBOT,
            "--app-id",
            cfg.ZIM_APP_ID,
            "--server-secret",
            cfg.ZIM_SECRET,
            "--callback",
            f"http://{hooks}/hooks/{CHANNEL}",
            "--retry-scale",
            f"{RETRY_SCALE:g}",
            "--qps",
            str(QPS),
        ]

    def config(admin: str, hooks: str, api_base: str) -> str:
        return cfg.zim_config(
            state_dir=workdir / "state-zim",
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
        name="zim",
        emulator_argv=emulator_argv,
        config=config,
        platform=Zim,
        channel_id=CHANNEL,
        steps=(WARMUP_STEP, STEADY_STEP, BURST_STEP),
        traces=traces,
        workdir=workdir,
    )
    return {**results, "qps": QPS}
