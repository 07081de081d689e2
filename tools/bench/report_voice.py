"""The pure parts of scenario `voice`: each round's figures from the emulator's timing and the
LLM's trace, and their rendering: channeld's first SSE chunk against the LLM's own first token,
and against the floor, a voice agent asking the same LLM itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tools.bench import stats
from tools.bench.cells import get, ms, num, table

GOAL_SECONDS = 0.01  # issue 14: first chunk ≤ the agent's first token + 10 ms
TARGETS = ("baseline", "channeld")
SHAPES = ("single", "concurrent", "staggered")


@dataclass(frozen=True, slots=True)
class Said:
    """One utterance as the emulator's agent timed it."""

    target: str  # "channeld" or "baseline"
    shape: str  # one of SHAPES; "warmup" is not measured
    tag: str
    posted: float  # the harness' time.monotonic() just before it asked the emulator
    first_chunk: float | None  # seconds from the agent's request to its first `data:` line
    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        """Answered, and read without a framing error."""
        return self.status == 200 and self.first_chunk is not None and not self.error


def quantiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p95, p99 and max."""
    return {
        "count": len(values),
        "p50": stats.percentile(values, 50),
        "p95": stats.percentile(values, 95),
        "p99": stats.percentile(values, 99),
        "max": max(values) if values else None,
    }


def timings(said: Said, trace: Mapping[str, Any] | None) -> dict[str, float] | None:
    """One round's figures in seconds, None without an answer or its LLM trace.

    `overhead` is what the path adds to the LLM's own first-token time: the agent's request on
    its way (through channeld) until the LLM has all of it, and the first token's way back as a
    chunk. It splits there; the harness' `posted` stands in for the agent's send, one
    control-plane hop earlier, so `before_llm` is that hop too long and `after_token` as much
    too short, alike for both targets: their differences are exact.
    """
    times = trace.get("token_times") if trace is not None else None
    if not said.ok or trace is None or not times or "started" not in trace:
        return None
    assert said.first_chunk is not None  # noqa: S101 - `ok` says so; narrows for mypy
    arrived, first_token = float(trace["started"]), float(times[0])
    llm_first_token = first_token - arrived
    return {
        "first_chunk": said.first_chunk,
        "llm_first_token": llm_first_token,
        "overhead": said.first_chunk - llm_first_token,
        "before_llm": arrived - said.posted,
        "after_token": said.posted + said.first_chunk - first_token,
    }


FIGURES = ("first_chunk", "llm_first_token", "overhead", "before_llm", "after_token")


def summarize(
    said: Iterable[Said], traces: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """target -> shape -> rounds, answered, timed and the quantiles of each figure."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    rounds = list(said)
    for target in TARGETS:
        result[target] = {}
        for shape in SHAPES:
            mine = [s for s in rounds if s.target == target and s.shape == shape]
            timed = [t for s in mine if (t := timings(s, traces.get(s.tag))) is not None]
            result[target][shape] = {
                "rounds": len(mine),
                "answered": sum(s.ok for s in mine),
                "timed": len(timed),
                "errors": sorted({s.error or f"HTTP {s.status}" for s in mine if not s.ok})[:5],
                **{name: quantiles([t[name] for t in timed]) for name in FIGURES},
            }
    return result


def _in_ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.1f}"


def _spread(node: Mapping[str, Any] | None, figure: str, which: tuple[str, ...]) -> str:
    """Some quantiles of one figure, in ms."""
    values = [get(node, figure, q) for q in which]
    if all(v is None for v in values):
        return "–"
    return " / ".join(_in_ms(v) for v in values) + " ms"


def _difference(
    ours: Mapping[str, Any] | None,
    base: Mapping[str, Any] | None,
    figure: str,
    which: tuple[str, ...] = ("p50", "p95"),
) -> str:
    """channeld's quantiles of a figure minus the floor's."""
    cells = []
    for q in which:
        a, b = get(ours, figure, q), get(base, figure, q)
        cells.append(None if a is None or b is None else a - b)
    if all(c is None for c in cells):
        return "–"
    return " / ".join("–" if c is None else f"{c * 1000:+.1f}" for c in cells) + " ms"


def _answered(node: Mapping[str, Any] | None) -> str:
    return "–" if not node else f"{node['answered']}/{node['rounds']}"


def _shapes(settings: Mapping[str, Any]) -> dict[str, str]:
    """Each shape's name in the goal row and the table (results from before the staggered shape
    lack its settings)."""
    calls = settings["calls"]
    window = settings.get("stagger_window")
    over = "" if window is None else f" over {float(window):g} s"
    return {
        "single": "1 call",
        "concurrent": f"{calls} calls at once",
        "staggered": f"{calls} calls staggered{over}",
    }


def voice_goal(voice: Mapping[str, Any]) -> list[str]:
    """The goal row: channeld's first chunk within 10 ms of the LLM's first token (p95), for each
    shape; the verdict names the shapes that miss it."""
    ours = voice["targets"]["channeld"]
    names = _shapes(voice["settings"])
    p95 = {shape: get(ours.get(shape), "overhead", "p95") for shape in SHAPES}
    measured = "first token " + ", ".join(
        f"+ {ms(p95[shape])} ({names[shape]})" for shape in SHAPES
    )
    known = {shape: v for shape, v in p95.items() if v is not None}
    missed = [names[shape] for shape, v in known.items() if v > GOAL_SECONDS]
    if not known:
        verdict = "–"
    elif not missed:
        verdict = "met"
    elif len(missed) == len(known):
        verdict = "not met"
    else:
        verdict = "not met: " + ", ".join(missed)
    return ["first SSE chunk p95 ≤ LLM first token + 10 ms", measured, verdict]


def voice_table(voice: Mapping[str, Any]) -> list[str]:
    """One call, every call at once and every call staggered, channeld beside the floor
    (README-ready)."""
    settings = voice["settings"]
    ours, base = voice["targets"]["channeld"], voice["targets"]["baseline"]
    spread = ("p50", "p95", "max")
    rows: list[list[str]] = []

    def row(label: str, cell: Any) -> None:
        rows.append([label, *(cell(ours.get(s), base.get(s)) for s in SHAPES)])

    row("rounds answered: channeld, floor", lambda o, b: f"{_answered(o)}, {_answered(b)}")
    row("first SSE chunk, channeld p50 / p95 / max", lambda o, b: _spread(o, "first_chunk", spread))
    row(
        "first SSE chunk, floor (agent → LLM) p50 / p95 / max",
        lambda o, b: _spread(b, "first_chunk", spread),
    )
    row("channeld − floor, p50 / p95", lambda o, b: _difference(o, b, "first_chunk"))
    row(
        "channeld: first chunk − the LLM's first-token time, p50 / p95 / max",
        lambda o, b: _spread(o, "overhead", spread),
    )
    row(
        "floor: first chunk − the LLM's first-token time, p50 / p95 / max",
        lambda o, b: _spread(b, "overhead", spread),
    )
    # p50 only: the harness' hop to the emulator, inside both parts, has outliers of its own
    row(
        "of which until the LLM has the request: channeld − floor, p50",
        lambda o, b: _difference(o, b, "before_llm", ("p50",)),
    )
    row(
        "of which from the LLM's first token to the chunk: channeld − floor, p50",
        lambda o, b: _difference(o, b, "after_token", ("p50",)),
    )
    row(
        "the LLM's own first-token time p50 / max (channeld's requests)",
        lambda o, b: _spread(o, "llm_first_token", ("p50", "max")),
    )
    busy = voice.get("outside_cpu_percent") or {}
    rows.append(
        ["CPU of other processes meanwhile (% of one core)", *(num(busy.get(s), 0) for s in SHAPES)]
    )
    names = _shapes(settings)
    counts = {shape: settings.get(f"{shape}_rounds") for shape in SHAPES}
    header = [
        "figure",
        *(
            names[shape] + ("" if counts[shape] is None else f", {counts[shape]} rounds")
            for shape in SHAPES
        ),
    ]
    return table(header, rows)


def voice_section(voice: Mapping[str, Any]) -> list[str]:
    """Scenario `voice`: the goal, the table, and how it is measured."""
    settings = voice["settings"]
    delay = float(settings["first_token_delay"]) * 1000
    interval = float(settings["token_interval"]) * 1000
    errors = sorted(
        {e for t in voice["targets"].values() for s in t.values() for e in s.get("errors", [])}
    )
    lines = [
        "### Voice: first answer chunk against the LLM's first token",
        "",
        "A daemon with one ZIM channel offering ZEGO calls, the ZEGO AI Agent emulator, and an"
        f" LLM whose first token comes {delay:.0f} ms after a request, then one every"
        f" {interval:.0f} ms. The floor: the emulator's agent asking that LLM itself. Times in"
        " ms.",
        "",
        *table(["goal", "measured", "verdict"], [voice_goal(voice)]),
        "",
        *voice_table(voice),
        "",
    ]
    if errors:
        lines += ["Unanswered rounds: " + "; ".join(errors), ""]
    return [*lines, METHOD]


METHOD = """\
- Voice: each round the harness has the ZEGO emulator's agent say a tagged utterance
  (`POST /_emulator/voice/say`); the agent sends ZEGO's request (bearer, `agent_info`, its
  window) and reads the stream with the strict SSE reader; first SSE chunk is its own time from
  sending the request to the first `data:` line. Calls are started through the admin API
  (`POST /api/v1/voice/calls`), so channeld signs `CreateAgentInstance` with its endpoint and a
  per-call secret; the floor's instances, created by the harness on the same emulator (its
  instance limit raised for them), name the LLM as `LLM.Url` with channeld's request shape and
  window. Baseline and channeld rounds alternate; one unrecorded round on every call first.
  Three shapes: one call, round after round; every call at once, each round's utterances sent
  in the same instant (a worst case); every call staggered, each call in each round speaking
  once at a moment drawn uniformly from the round's window (seeded: the same moments in every
  run, and the floor's instances get the same moments as channeld's calls).
  The LLM (`python -m tools.bench.voice`) holds its whole response until the first token is
  due, so its first chunk carries it (the stock fake LLM's empty role chunk would otherwise be
  the floor's first chunk). Its trace gives, per utterance, when the LLM had read the whole
  request and when it wrote the first token; first chunk − (first token − request read) is what
  the path adds to the LLM. That splits at the request read: before it runs from the harness
  asking the emulator (one control-plane hop before the agent's request, the same for both
  targets but for its own outliers, hence shown as channeld − floor at p50), after it from the
  token to the chunk.
"""
