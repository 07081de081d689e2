"""Pure rendering of scenario e: the callback listener against a bare handler, and WuKongIM, ZIM
and Easemob answers end to end beside DingTalk's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tools.bench.cells import get, ms, num, step_at, table, times
from tools.bench.stats import ratio

GOAL_SECONDS = 0.05  # issue 12: p99 under 50 ms at 50 callbacks/s

PHASES = (("single", "1 message per callback"), ("batch", "10 messages per callback"))


def _phase_title(name: str, label: str, phase: Mapping[str, Any]) -> str:
    batch = int(phase.get("batch", 1))
    label = label if batch == (1 if name == "single" else 10) else f"{batch} messages per callback"
    return (
        f"**{label}, {num(get(phase, 'rate'), 0)}/s for {num(get(phase, 'seconds'), 0)} s**"
        f" ({phase['callbacks']} callbacks)"
    )


def _busy(phase: Mapping[str, Any]) -> float | None:
    cpu, seconds = get(phase, "cpu_seconds"), get(phase, "elapsed")
    return None if cpu is None or not seconds else 100 * cpu / seconds


def _latency_rows(ours: Mapping[str, Any], base: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for q in ("p50", "p99", "max"):
        a, b = get(ours, "latency", q), get(base, "latency", q)
        rows.append([f"answer latency {q}", ms(a), ms(b), times(ratio(a, b))])
    inside = get(ours, "inside", "p99")
    capped = "≥ " if get(ours, "inside", "p99_capped") else ""
    rows += [
        ["of which inside channeld p99 (histogram)", capped + ms(inside), "–", ""],
        [
            "answers other than 200",
            f"{ours['not_ok']}/{ours['callbacks']}",
            f"{base['not_ok']}/{base['callbacks']}",
            "",
        ],
        [
            "listener process CPU while the load lasted (% of one core)",
            num(_busy(ours), 0),
            num(_busy(base), 0),
            times(ratio(_busy(ours), _busy(base))),
        ],
        [
            "the messages answered (by the LLM, through the emulator)",
            f"{ours.get('answered', '–')}/{ours['messages']}"
            f" in {num(get(ours, 'drain_seconds'), 1)} s after the load",
            "–",
            "",
        ],
        [
            "CPU of other processes on the machine meanwhile (% of one core)",
            num(get(ours, "outside_cpu_percent"), 0),
            num(get(base, "outside_cpu_percent"), 0),
            "",
        ],
        [
            "harness: callbacks sent late, max",
            ms(get(ours, "send_lateness", "max")),
            ms(get(base, "send_lateness", "max")),
            "",
        ],
    ]
    return rows


def callback_goal(webhooks: Mapping[str, Any]) -> list[str]:
    """The goal row: callback answer p99 under 50 ms at 50 callbacks/s."""
    callbacks = webhooks["callbacks"]
    single = callbacks.get("single", {}).get("channeld")
    batch = callbacks.get("batch", {}).get("channeld")
    worst = max(
        (v for v in (get(single, "latency", "p99"), get(batch, "latency", "p99")) if v is not None),
        default=None,
    )
    verdict = "–" if worst is None else ("met" if worst < GOAL_SECONDS else "not met")
    rate = num(get(single, "rate"), 0)
    measured = (
        f"{ms(get(single, 'latency', 'p99'))} (1 message each), "
        f"{ms(get(batch, 'latency', 'p99'))} (10 each)"
    )
    return [f"callback answer p99 < 50 ms at {rate} callbacks/s", measured, verdict]


# (label, path into a step, formatter)
E2E_FIGURES: list[tuple[str, tuple[str, ...], str]] = [
    ("user's message → webhook push / callback p50", ("push_delay", "p50"), "ms"),
    ("user's message → webhook push / callback p99", ("push_delay", "p99"), "ms"),
    ("callback inside channeld p99 (histogram)", ("callback_inside", "p99"), "ms"),
    ("ack latency p99 (DingTalk: frame → ack)", ("ack", "p99"), "ms"),
    ("receipt → anchor / card shown p50", ("card_shown", "p50"), "ms"),
    ("receipt → LLM request p50", ("llm_request", "p50"), "ms"),
    ("receipt → first visible text p50", ("first_text", "p50"), "ms"),
    ("receipt → first visible text p99", ("first_text", "p99"), "ms"),
    ("LLM first token → visible p50", ("first_text_after_token", "p50"), "ms"),
    ("last token → final update p50", ("last_token_to_final", "p50"), "ms"),
    ("last token → final update p99", ("last_token_to_final", "p99"), "ms"),
    ("receipt → final answer p50", ("reply", "p50"), "ms"),
    ("receipt → final answer p99", ("reply", "p99"), "ms"),
    ("platform API calls per reply", ("api_calls_per_reply",), "n"),
    ("CPU seconds per 1000 replies", ("cpu_per_1000",), "n"),
    ("event-loop lag p99 (histogram)", ("loop_lag", "p99"), "ms"),
    ("CPU of other processes on the machine (% of one core)", ("outside_cpu_percent",), "%"),
]


def _e2e_rows(columns: list[Mapping[str, Any] | None]) -> list[list[str]]:
    rows = [
        [
            "answered (before the drain deadline)",
            *(f"{c['answered']}/{c['sent']}" if c else "–" for c in columns),
        ]
    ]
    for label, path, kind in E2E_FIGURES:
        cells = []
        for column in columns:
            value = get(column, *path)
            cells.append(ms(value) if kind == "ms" else num(value, 0 if kind == "%" else 2))
        rows.append([label, *cells])
    return rows


def _own_rows(wh: Mapping[str, Any]) -> list[list[str]]:
    """What only ZIM (the app-wide budget) and Easemob (pre-send, rewrites) have."""
    zim, em = wh.get("zim") or {}, wh.get("easemob") or {}
    rows: list[list[str]] = []

    def both(label: str, source: Mapping[str, Any], path: tuple[str, ...], kind: str) -> None:
        cells = []
        for shape in ("steady", "burst"):
            value = get(source.get(shape), *path)
            cells.append(ms(value) if kind == "ms" else num(value, 0))
        if any(c != "–" for c in cells):
            rows.append([label, *cells])

    limit = num(get(zim, "qps"), 0)
    both(
        f"ZIM: sends + edits in the busiest sliding second (limit {limit})",
        zim,
        ("budget", "peak_per_second"),
        "n",
    )
    both("ZIM: requests refused for rate (must be 0)", zim, ("budget", "rate_refusals"), "n")
    both("ZIM: edits", zim, ("api_calls", "EditC2cMsgBody"), "n")
    for q in ("p50", "p99", "max"):
        both(f"Easemob: pre-send callback answer {q}", em, ("presend", "answer", q), "ms")
    both("Easemob: pre-send answers later than the wait", em, ("presend", "late"), "n")
    both("Easemob: rewrites of one message, max (cap 9)", em, ("rewrites", "per_message_max"), "n")
    both("Easemob: rewrites refused", em, ("rewrites", "refused"), "n")
    both("Easemob: 429 answers", em, ("rewrites", "too_many_requests"), "n")
    return rows


def _e2e_tables(results: Mapping[str, Any]) -> list[str]:
    """Steady and burst, one column per platform."""
    wh = results["webhooks"]
    load = results.get("load") or {}
    platforms = [("WuKongIM", wh.get("end_to_end") or {})]
    platforms += [
        (name, wh.get(key) or {}) for name, key in (("ZIM", "zim"), ("Easemob", "easemob"))
    ]
    lines: list[str] = []
    for shape in ("steady", "burst"):
        mine = [(name, shapes.get(shape)) for name, shapes in platforms if shapes.get(shape)]
        rate = get(mine[0][1], "rate") if mine else None
        if load and rate is not None:
            dingtalk = (
                step_at(load["steps"]["channeld"], rate)
                if shape == "steady"
                else load.get("burst", {}).get("channeld")
            )
        else:
            dingtalk = None
        columns = [dingtalk, *(c for _, c in mine)]
        what = shape
        seconds = get(
            results.get("settings"), "burst_seconds" if shape == "burst" else "step_seconds"
        )
        what = f"{what}, {num(rate, 0)} msg/s for {num(seconds, 0)} s"
        header = ["figure (" + what + ")", "DingTalk", *(name for name, _ in mine)]
        lines += [*table(header, _e2e_rows(columns)), ""]
    own = _own_rows(wh)
    if own:
        lines += [*table(["figure", "steady", "burst"], own), ""]
    return lines


def webhooks_section(results: Mapping[str, Any]) -> list[str]:
    """Scenario e: the listener's table and the end-to-end tables, and what they include."""
    wh = results["webhooks"]
    callbacks = wh["callbacks"]
    rows: list[list[str]] = []
    for name, label in PHASES:
        phase = callbacks.get(name)
        if not phase:
            continue
        ours, base = phase["channeld"], phase["baseline"]
        rows.append([_phase_title(name, label, ours), "", "", ""])
        rows += _latency_rows(ours, base)
    interval = float(wh["push_interval"]) * 1000
    return [
        "### Webhook platforms: the callback listener",
        "",
        "Open-loop `msg.notify` callbacks POSTed to channeld's callback listener (one WuKongIM"
        " channel, which answers every message through the WuKongIM emulator while the load"
        " lasts) and to a bare aiohttp handler that parses the JSON, commits the messages to"
        " SQLite (WAL, synchronous FULL) and answers 200 (`tools/bench/ack_server.py`, its own"
        " process), the same load in the same run. Ratio = channeld / bare handler.",
        "",
        *table(["figure", "channeld", "bare handler", "ratio"], rows),
        "",
        "### Webhook platforms end to end, beside DingTalk",
        "",
        "Users write through each platform's emulator to one channel on its own daemon."
        f" WuKongIM: the webhook pushes every {interval:.0f} ms (the server's default is"
        f" 500 ms), update budget {num(get(wh, 'updates_per_second'), 0)}/s (one WuKongIM"
        " server, one webhook, one channel, where the DingTalk load spreads over many apps of"
        ' 20/s each). ZIM (`stream = "edit"`) and Easemob (`stream = "edit"`, rewriting'
        " enabled) run with every other setting at its default: one ZIM app shares 20"
        " requests per sliding second, of which the channel uses 15"
        " (`api_requests_per_second`); both channels' updates share"
        " `card_updates_per_second` = 20. DingTalk: channeld in the load scenario of this run"
        " (– when it did not run).",
        "",
        *_e2e_tables(results),
    ]


METHOD = """\
- Callback listener: callback i is POSTed at start + i / 50 s, whatever became of the earlier
  ones, to `/hooks/wk-bench?key=...&event=msg.notify`; its latency runs from just before the
  request to the end of the answer's body, on the harness' clock. Each message is a DM from a
  user who writes every 4 s, so channeld answers each one (the fake LLM, streamed through the
  emulator) while later callbacks arrive; the bare handler answers nothing. The baseline goes
  first in each phase, and channeld's answers finish before the next phase. CPU is the
  listener process' while the load lasted.
- WuKongIM end to end: users write through the emulator's control plane (POST
  /_emulator/messages), its webhook pusher batches them to the daemon. Receipt is the time the
  emulator recorded for the webhook push that delivered the message (`/_emulator/acks`, taken
  once the daemon's 200 arrived: receipt figures leave out the callback's own answer time, the
  histogram row above); the user's message → push figure runs from the harness posting it to
  that time, the push interval included (at a steady rate whose period is a multiple of the
  push interval, each message meets the ticker at the same phase: that figure is then one draw
  from 0 to one interval). The anchor, the first `stream.delta` with text and the first event that
  ends the stream (`stream.close` or `stream.finish`) are their arrival at the emulator. API
  calls per reply count every call the emulator recorded in the step, `/varz` included.
- ZIM and Easemob end to end: a fresh daemon each, warmed up by 5 unrecorded messages. Receipt
  is when the emulator posted the message's first signed callback that channeld took (ZIM:
  `send_msg`; Easemob: the pre-send callback), so, unlike WuKongIM's, it includes the
  callback's own answer time. Both answer in one message edited as it grows, with no
  end-of-answer marker: first visible text is the arrival of the answer's send at the
  emulator, the final answer the first accepted send or edit whose text is the LLM's whole
  answer (its trace's tokens; channeld never repeats a text, so this is also the last edit).
  An edit names its message by a handle only the send's answer carried (ZIM: user and MsgSeq,
  Easemob: msg_id); the emulator's stored robot messages link them (a user's n-th accepted send
  is that user's n-th robot message). API calls per reply: sends and edits (ZIM: the actions
  SendPeerMessage and EditC2cMsgBody, refused ones included; Easemob: POST messages/users and
  PUT messages/rewrite). ZIM's busiest second counts accepted sends and edits in any sliding
  second, as ZIM counts; its refusals are the emulator's (`/_emulator/refusals`). Easemob's
  pre-send answer time is the emulator's, from posting the callback to reading the answer.
"""
