"""Pure rendering: the results dictionary as the markdown report (tables, goals, plots)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tools.bench.cells import MB, get, ms, num, step_at, table, times
from tools.bench.report_webhooks import METHOD as WEBHOOKS_METHOD
from tools.bench.report_webhooks import callback_goal, webhooks_section
from tools.bench.stats import ratio


def comparison_rate(load: Mapping[str, Any]) -> float | None:
    """The highest rate both targets sustained, else the lowest rate both ran."""
    held = list(load["sustained"].values())
    if held and all(v is not None for v in held):
        return float(min(held))
    rates = [{float(s["rate"]) for s in steps} for steps in load["steps"].values()]
    common = set.intersection(*rates) if rates else set()
    return min(common) if common else None


# (label, path into a step, formatter)
FIGURES: list[tuple[str, tuple[str, ...], str]] = [
    ("ack latency p50", ("ack", "p50"), "ms"),
    ("ack latency p99", ("ack", "p99"), "ms"),
    ("of which inside channeld p99 (histogram)", ("ack_inside", "p99"), "ms"),
    ("receipt → card shown p50", ("card_shown", "p50"), "ms"),
    ("receipt → LLM request p50", ("llm_request", "p50"), "ms"),
    ("receipt → first visible text p50", ("first_text", "p50"), "ms"),
    ("receipt → first visible text p99", ("first_text", "p99"), "ms"),
    ("LLM first token → visible p50", ("first_text_after_token", "p50"), "ms"),
    ("last token → final update p50", ("last_token_to_final", "p50"), "ms"),
    ("last token → final update p99", ("last_token_to_final", "p99"), "ms"),
    ("receipt → final answer p50", ("reply", "p50"), "ms"),
    ("platform API calls per reply", ("api_calls_per_reply",), "n"),
    ("reply throughput (msg/s)", ("throughput",), "n"),
    ("CPU seconds per 1000 replies", ("cpu_per_1000",), "n"),
    ("event-loop lag p99 (histogram)", ("loop_lag", "p99"), "ms"),
]


def _cell(value: float | None, kind: str) -> str:
    return ms(value) if kind == "ms" else num(value, 2)


def _comparison(ours: Mapping[str, Any] | None, base: Mapping[str, Any] | None) -> list[list[str]]:
    rows = []
    for label, path, kind in FIGURES:
        a, b = get(ours, *path), get(base, *path)
        cells = [_cell(a, kind), _cell(b, kind)]
        for i, step in enumerate((ours, base)):
            if path[-1] == "p99" and get(step, path[0], "p99_capped"):
                cells[i] = "≥ " + cells[i]  # beyond the histogram's largest bound
        rows.append([label, *cells, times(ratio(a, b))])
    return rows


def _busy(step: Mapping[str, Any]) -> str:
    """CPU use of the target, the emulator and the LLM during a step, in % of one core."""
    seconds = get(step, "seconds")
    if not seconds:
        return "–"
    others = step.get("other_cpu_seconds", {})
    parts = [step.get("cpu_seconds"), others.get("emulator"), others.get("llm")]
    return " / ".join("–" if p is None else f"{100 * p / seconds:.0f}" for p in parts)


def load_section(load: Mapping[str, Any], reference: float) -> list[str]:
    """Scenarios a and b: the figure-by-figure comparison and the per-rate detail."""
    steps = load["steps"]
    rate = comparison_rate(load)
    channels = load.get("channels", 1)
    lines = [
        f"### Latency and throughput at {num(rate, 0)} msg/s, the highest rate both sustained",
        "",
        f"Load spread over {channels} apps per target; ratio = channeld / bare SDK.",
    ]
    if rate is None:
        return [*lines, "", "No rate was run by both targets.", ""]
    ours, base = step_at(steps["channeld"], rate), step_at(steps["baseline"], rate)
    rows = _comparison(ours, base)
    sustained = load["sustained"]
    a, b = sustained.get("channeld"), sustained.get("baseline")
    rows.append(
        ["sustained msg/s before latency degrades", num(a, 0), num(b, 0), times(ratio(a, b))]
    )
    lines += ["", *table(["figure", "channeld", "bare SDK", "ratio"], rows), ""]
    bursts = load.get("burst", {})
    if bursts:
        ours, base = bursts.get("channeld"), bursts.get("baseline")
        answered = [f"{b['answered']}/{b['sent']}" if b else "–" for b in (ours, base)]
        lines += [
            f"### Burst: {reference:g} msg/s offered for a short while to each target",
            "",
            *table(
                ["figure", "channeld", "bare SDK", "ratio"],
                [["answered (before the drain deadline)", *answered, ""], *_comparison(ours, base)],
            ),
            "",
        ]
    lines += ["#### Every step", ""]
    detail = []
    for name, label in (("channeld", "channeld"), ("baseline", "bare SDK")):
        for step in steps[name]:
            detail.append(
                [
                    label,
                    num(get(step, "rate"), 0),
                    f"{step['answered']}/{step['sent']}",
                    num(get(step, "throughput"), 1),
                    ms(get(step, "ack", "p99")),
                    ms(get(step, "first_text", "p50")),
                    ms(get(step, "reply", "p50")),
                    ms(get(step, "loop_lag", "p99")),
                    num(get(step, "cpu_per_1000"), 1),
                    _busy(step),
                ]
            )
    header = ["target", "offered msg/s", "answered", "replies/s", "ack p99", "first text p50"]
    header += ["final p50", "loop lag p99", "CPU s/1000", "CPU % of a core: target/emulator/LLM"]
    return [*lines, *table(header, detail), ""]


def scale_section(scale: Mapping[str, Any]) -> list[str]:
    """Scenario c."""
    rows = [
        [
            str(r["channels"]),
            f"{r['connected']}/{r['channels']}",
            num(r["time_to_first"], 2, " s"),
            num(r["time_to_all"], 2, " s"),
            num(r["rss_bytes"] / MB, 1, " MB"),
            num(r["rss_per_channel"] / 1024, 0, " KB"),
            num(r["idle_cpu_percent"], 2, " %"),
        ]
        for r in scale["runs"]
    ]
    marginal = scale.get("rss_marginal_per_channel")
    header = ["channels", "connected", "spawn → first connected", "spawn → all connected"]
    header += ["RSS", "RSS / channel"]
    header.append("idle CPU (one core)")
    return [
        "### Scale: channels on one daemon",
        "",
        *table(header, rows),
        "",
        f"Marginal RSS per added channel (least squares): {num(marginal and marginal / 1024, 0)}"
        " KB.",
        "",
    ]


def coalescing_section(co: Mapping[str, Any]) -> list[str]:
    """Scenario d."""
    rows = [
        ["concurrent streams (finished)", f"{co['streams']} ({co['finished']})"],
        ["per-channel budget", num(co["budget_per_second"], 0, " updates/s")],
        ["streaming requests/s, busiest 1 s window", str(co["stream_rps_max_1s"])],
        ["streaming requests/s, mean while streaming", num(co["stream_rps_mean"], 1)],
        ["all card requests/s, busiest 1 s window", str(co["card_rps_max_1s"])],
        [
            "bucket size needed by the calls (configured)",
            f"{num(co['needed_burst'], 1)} ({co['bucket_burst']})",
        ],
        ["within budget", "yes" if co["within_budget"] else "no"],
        ["updates per stream p50", num(co["updates_per_stream"]["p50"], 0)],
        ["update staleness p50", ms(co["staleness"]["p50"])],
        ["update staleness p99", ms(co["staleness"]["p99"])],
    ]
    return ["### Coalescing under load", "", *table(["figure", "value"], rows), ""]


def goals(results: Mapping[str, Any]) -> list[list[str]]:
    """Each goal of the issue: target, measured value, met or not."""
    settings = results["settings"]
    reference = float(settings["reference_rate"])
    load = results.get("load")
    burst = load.get("burst", {}).get("channeld") if load else None
    rate = comparison_rate(load) if load else None
    steady = step_at(load["steps"]["channeld"], rate) if load and rate is not None else None
    rows: list[list[str]] = []

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("met" if ok else "not met")

    ack = get(burst, "ack", "p99")
    rows.append(
        [
            f"ack p99 < 10 ms at {reference:g} msg/s (burst)",
            ms(ack),
            verdict(None if ack is None else ack < 0.01),
        ]
    )
    first = get(steady, "first_text", "p50")
    over = None if first is None else first - float(settings["first_token_delay"])
    rows.append(
        [
            "first visible update p50 ≤ first-token delay + 20 ms",
            f"{ms(first)} = delay + {ms(over)} (at {num(rate, 0)} msg/s)",
            verdict(None if over is None else over <= 0.02),
        ]
    )
    if load:
        a, b = load["sustained"].get("channeld"), load["sustained"].get("baseline")
        ok = None if a is None else (b is None or a >= b)
        rows.append(
            ["sustained throughput ≥ bare SDK", f"{num(a, 0)} vs {num(b, 0)} msg/s", verdict(ok)]
        )
    scale = results.get("scale")
    big = max(scale["runs"], key=lambda r: r["channels"]) if scale and scale["runs"] else None
    if big is not None:
        rss = big["rss_bytes"] / MB
        rows.append(
            [f"{big['channels']} channels < 250 MB RSS", num(rss, 1, " MB"), verdict(rss < 250)]
        )
    lag = get(burst, "loop_lag", "p99")
    steady_lag = get(steady, "loop_lag", "p99")
    rows.append(
        [
            f"loop lag p99 < 20 ms at load ({reference:g} msg/s burst)",
            f"{ms(lag)} (at {num(rate, 0)} msg/s sustained: {ms(steady_lag)})",
            verdict(None if lag is None else lag < 0.02),
        ]
    )
    if "webhooks" in results:
        rows.append(callback_goal(results["webhooks"]))
    return rows


METHOD = """\
### How each figure is measured

- Processes on one machine, over loopback: the DingTalk emulator (`channeld emulate dingtalk`),
  the fake LLM (`tools.bench.llm`: `tools.fake_llm` plus a trace of when each token was
  written), channeld (`channeld run`, SQLite in a temporary directory, log level WARNING), the
  baseline bot (`tools.bench.baseline_bot`) and the harness. Every timestamp is
  `time.monotonic()`, i.e. CLOCK_MONOTONIC, one clock for the whole machine on Linux; each run
  checks that a child process reads a value between two readings of the parent.
- Load is open loop: message i leaves at start + i / rate whatever happened to earlier ones,
  round-robin over the target's apps, from users who write every 4 s. After each step the
  harness waits up to the drain time for the answers; a target stops after its first step that
  does not hold. A short burst at the reference rate is offered to each target at the end.
- Ack latency: from the emulator writing the CALLBACK frame to the socket to the ack frame
  arriving, both in the emulator. The SDK acks when the handler returns, so the baseline's ack
  includes its whole answer. "Inside channeld" is channeld's own ack histogram.
- Card shown, first visible text, final answer: arrival at the emulator of the
  createAndDeliver call, of the first card streaming call with text, and of the streaming call
  with isFinalize. For the baseline the sessionWebhook message is both first and final text.
- LLM request and tokens: when the fake LLM received the completion request and wrote each
  token (its trace). Last token to final update uses the last token.
- Platform API calls per reply: OpenAPI calls the emulator recorded for the target's apps in
  the step (Stream gateway excluded), divided by the answers.
- Throughput: answers per second between the 10th and 90th percentile of their completion times,
  against the offered rate measured the same way on frame times. A step holds when 99 % were
  answered before the drain deadline, throughput is at least 90 % of the offered rate and the
  p50 receipt-to-final latency is within 1.25 times the lowest step's; "sustained" is the
  highest step before the first that does not hold.
- CPU seconds per 1000 replies: utime + stime of the target process (all threads) over the
  step and its drain, from /proc/PID/stat.
- Event-loop lag: how late a 250 ms timer fires, channeld's own histogram scraped before and
  after the step, the baseline's identical probe; both reduced with the same buckets and
  Prometheus' histogram_quantile. Four samples a second: at step length, p99 is close to max.
- Scale: from spawning the daemon to the first connection of every app being opened at the
  emulator; RSS (VmRSS) after the idle window; idle CPU over that window.
- Coalescing: the users ask at once on one channel. Staleness is, per token, the time from the
  LLM writing it to the emulator receiving the first streaming call that shows it. The calls are
  within budget when they conform to the channel's token bucket (rate card_updates_per_second,
  bucket of the same size, as channels.manager sizes it).
"""


def render_markdown(results: Mapping[str, Any], images: Sequence[str] = ()) -> str:
    """The whole report."""
    m, settings = results["machine"], results["settings"]
    mode = "quick" if results["quick"] else "full"
    clock = results["clock"]
    lines = [
        f"## Benchmark results ({mode} run, {results['started']}, "
        f"{results.get('wall_seconds', '?')} s)",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}, {m['architecture']}), "
        f"{m['memory_gb']} GB RAM, Linux {m['kernel']}, Python {m['python']}. "
        f"LLM: first token after {settings['first_token_delay'] * 1000:.0f} ms, then one token "
        f"every {settings['token_interval'] * 1000:.0f} ms; {settings['words']}-word questions. "
        f"Clock: time.monotonic() is {clock['implementation']}, shared across processes: "
        f"{'yes' if clock['shared'] else 'NO'}.",
        "",
        "### Goals",
        "",
        *table(["goal", "measured", "verdict"], goals(results)),
        "",
    ]
    if "load" in results:
        lines += load_section(results["load"], float(settings["reference_rate"]))
    if "scale" in results:
        lines += scale_section(results["scale"])
    if "coalescing" in results:
        lines += coalescing_section(results["coalescing"])
    if "webhooks" in results:
        lines += webhooks_section(results)
    lines += [f"![{name}]({name})" for name in images]
    lines += ["", METHOD]
    if "webhooks" in results:
        lines.append(WEBHOOKS_METHOD)
    return "\n".join(lines).rstrip() + "\n"
