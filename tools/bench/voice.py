"""Scenario `voice`: how soon a caller hears channeld's answer begin, against the LLM's own first
token (issue 14: receipt → first SSE chunk ≤ the agent's first token + 10 ms), for one call, for
ten at once (ZEGO's default limit of live agent instances per app), and for ten whose callers each
speak at a random moment of a one-second window, as callers do.

Processes: the ZEGO AI Agent emulator (`channeld emulate voice --provider zego`), a daemon with
one ZIM channel (and the ZIM emulator it connects to) offering ZEGO calls, and this scenario's
LLM (`python -m tools.bench.voice`: `FirstTokenFirstLLM`). Calls are started through the admin
API. In each round the harness has the emulator's agent say one utterance
(`POST /_emulator/voice/say`); the agent times its request to the first `data:` line it reads
(`first_chunk_ms`), and the LLM's trace tells when the same utterance's completion request
arrived and when its first token was written.

The floor, in the same run: agent instances the harness creates itself, whose `LLM.Url` is the
LLM, with the same request shape and window as channeld's. Baseline and channeld rounds
alternate on the same emulator and LLM, so that both meet the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import dataclasses
import itertools
import json
import random
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from channels.voice.config import ZegoVoice
from channels.zego_signing import signed_query
from daemon.admin_token import read_token, token_path
from tools.bench import config as cfg
from tools.bench import e2e, measure
from tools.bench.llm import TracingLLM
from tools.bench.probe import EmulatorClient
from tools.bench.procs import OutsideLoad, Processes, channeld, free_port, python_module
from tools.bench.report_voice import TARGETS, Said, summarize
from tools.fake_llm import Behaviour

CHANNEL = "zim-voice"
VOICE_APP_ID = 1234567890
VOICE_SECRET = "benchvoice0123456789abcdef012345"  # noqa: S105 - the emulator's throwaway
BASELINE_AGENT = "bench-baseline"
INSTANCE_LIMIT = 10  # ZEGO's default live agent instances per app
WARMUP_STEP, SINGLE_STEP, CONCURRENT_STEP, STAGGERED_STEP = 95, 96, 97, 98  # bm95n...: not measured
WINDOW: int = ZegoVoice.model_fields["window_size"].default  # channeld's MessageHistory window


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    """What sizes the scenario; `for_run(quick=True)` keeps it around half a minute."""

    first_token_delay: float = 0.2
    token_interval: float = 0.02
    calls: int = INSTANCE_LIMIT
    single_rounds: int = 40  # per target, one call
    concurrent_rounds: int = 10  # per target, every call at once
    staggered_rounds: int = 10  # per target, every call once at its own moment of the window
    stagger_window: float = 1.0  # each call speaks uniform(0, window) s into its round
    stagger_seed: int = 14  # the same moments in every run, and for both targets
    words: int = 6  # an utterance: its tag and filler; the echo answer has one token more

    @classmethod
    def for_run(cls, *, quick: bool) -> VoiceSettings:
        """The full or the quick scenario."""
        return cls(single_rounds=12, concurrent_rounds=4, staggered_rounds=3) if quick else cls()


def stagger(seed: int, rounds: int, calls: int, window: float) -> list[list[float]]:
    """Per round, when each call speaks: seconds into the round, uniform in [0, window]."""
    rng = random.Random(seed)  # noqa: S311 - reproducible moments, nothing secret
    return [[rng.uniform(0, window) for _ in range(calls)] for _ in range(rounds)]


_RECEIVED: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "voice_llm_received", default=None
)


class FirstTokenFirstLLM(TracingLLM):
    """The traced fake LLM, its stream starting with its first token, its trace timed from the
    whole request.

    `tools.fake_llm` writes an empty `role` chunk the moment a request arrives and only then
    waits out the first-token delay. channeld skips empty deltas, but an agent pointed straight
    at the LLM would take that chunk for the first one and the floor would be about 1 ms. Here
    the whole response, headers included, waits out the delay (`stall_before_headers`), then
    the role chunk and the first token leave together, as a real LLM's first chunk carries its
    first token.

    A trace line's `started` is when the request's body had been read (`TracingLLM`'s is when
    its headers were): under load a client may send the body well after the headers, and that
    wait is the client's, not the LLM's first-token time.
    """

    def __init__(self, sink: TextIO, **options: Any) -> None:
        super().__init__(None, **options)  # the lines are written here, with `started` moved
        self.out = sink

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        received: list[float] = []
        reset = _RECEIVED.set(received)
        try:
            return await super()._completions(request)
        finally:
            _RECEIVED.reset(reset)
            trace = self.traces[-1]  # this request's: appended with no await since
            line = trace.to_json() | {"started": received[0] if received else trace.started}
            self.out.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.out.flush()

    async def _record(self, request: web.Request) -> Any:
        body = await super()._record(request)
        received = _RECEIVED.get()
        if received is not None:
            received.append(time.monotonic())
        return body

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        # every request consumes one scripted behaviour (all alike: order does not matter)
        self.script(Behaviour(stall_before_headers=self.first_token_delay, first_token_delay=0))
        return await super()._answer(request)


def daemon_config(
    *,
    state_dir: Path,
    admin_listen: str,
    webhooks_listen: str,
    zim_api: str,
    voice_api: str,
    llm_url: str,
) -> str:
    """A channeld TOML file: one ZIM channel on the callback listener, offering ZEGO calls."""
    voice = [
        "[channels.voice]",
        f'public_base_url = "http://{webhooks_listen}"',
        "",
        "[channels.voice.zego]",
        f"app_id = {VOICE_APP_ID}",
        f'server_secret = "{VOICE_SECRET}"',
        f'api_base = "{voice_api}"',
        "",
    ]
    zim = cfg.zim_config(
        state_dir=state_dir,
        admin_listen=admin_listen,
        webhooks_listen=webhooks_listen,
        api_base=zim_api,
        llm_url=llm_url,
        channel_id=CHANNEL,
    )
    return zim.rstrip("\n") + "\n\n" + "\n".join(voice)  # a sub-table of the last [[channels]]


async def start_call(
    session: aiohttp.ClientSession, admin_url: str, token: str, n: int
) -> dict[str, Any]:
    """`POST /api/v1/voice/calls` for caller n, as an app's backend does; the call."""
    body = {
        "provider": "zego",
        "channel_id": CHANNEL,
        "user_id": f"caller-{n}",
        "zego": {
            "room_id": f"room-{n}",
            "user_id": f"u{n}",
            "user_stream_id": f"u{n}-main",
            "agent_user_id": f"agent-{n}",
            "agent_stream_id": f"agent-{n}-main",
        },
    }
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(f"{admin_url}/api/v1/voice/calls", json=body, headers=headers) as resp:
        call: dict[str, Any] = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"call {n} did not start: HTTP {resp.status} {call}")
    return call


async def baseline_instance(
    session: aiohttp.ClientSession, api_url: str, n: int, llm_url: str
) -> str:
    """`CreateAgentInstance` of an agent that asks the LLM itself, with channeld's request
    shape (agent info, window); its AgentInstanceId."""
    body = {
        "AgentId": BASELINE_AGENT,
        "UserId": f"bu{n}",
        "RTC": {
            "RoomId": f"baseline-room-{n}",
            "AgentStreamId": f"baseline-{n}-main",
            "AgentUserId": f"baseline-{n}",
            "UserStreamId": f"bu{n}-main",
        },
        "LLM": {
            "Url": f"{llm_url}/chat/completions",
            "ApiKey": "bench",
            "Model": cfg.MODEL,
            "AddAgentInfo": True,
            "AgentExtraInfo": {"call": f"baseline-{n}"},
        },
        "MessageHistory": {"SyncMode": 1, "Messages": [], "WindowSize": WINDOW},
        "CallbackConfig": {"Interrupted": 1},
    }
    query = signed_query("CreateAgentInstance", VOICE_APP_ID, VOICE_SECRET, int(time.time()))
    async with session.post(f"{api_url}/", params=query, json=body) as resp:
        answer = await resp.json()
    if not isinstance(answer, dict) or answer.get("Code") != 0:
        raise RuntimeError(f"baseline instance {n} not created: {answer}")
    return str(answer["Data"]["AgentInstanceId"])


async def say(
    emu: EmulatorClient,
    target: str,
    shape: str,
    instance: str,
    *,
    step: int,
    index: int,
    words: int,
    after: float = 0.0,
) -> Said:
    """The caller of `instance` says one tagged utterance `after` seconds from now; returns once
    the answer was read."""
    if after > 0:
        await asyncio.sleep(after)  # the caller's own moment to speak, not a wait for anything
    posted = time.monotonic()
    text = measure.user_text(step, index, words)
    result = await emu.post("voice/say", {"text": text, "instance_id": instance})
    first = result.get("first_chunk_ms")
    return Said(
        target,
        shape,
        measure.tag(step, index),
        posted,
        None if first is None else float(first) / 1000,
        result.get("status"),
        str(result.get("error", "")),
    )


@dataclass(frozen=True, slots=True)
class Shape:
    """One part of the run: how many calls speak in each round, and when."""

    name: str
    step: int  # the tags' step
    calls: int
    moments: Sequence[Sequence[float]]  # per round, when each call speaks (seconds into the round)

    @classmethod
    def at_once(cls, name: str, step: int, calls: int, rounds: int) -> Shape:
        """Every call speaks the moment its round starts."""
        return cls(name, step, calls, [[0.0] * calls for _ in range(rounds)])


def plan(settings: VoiceSettings) -> list[Shape]:
    """A warm-up on every call, then one call, then every call at once, then staggered."""
    calls = settings.calls
    moments = stagger(
        settings.stagger_seed, settings.staggered_rounds, calls, settings.stagger_window
    )
    return [
        Shape.at_once("warmup", WARMUP_STEP, calls, 1),
        Shape.at_once("single", SINGLE_STEP, 1, settings.single_rounds),
        Shape.at_once("concurrent", CONCURRENT_STEP, calls, settings.concurrent_rounds),
        Shape("staggered", STAGGERED_STEP, calls, moments),
    ]


async def rounds(
    emu: EmulatorClient,
    instances: Mapping[str, Sequence[str]],
    settings: VoiceSettings,
    outside: OutsideLoad,
) -> tuple[list[Said], dict[str, float]]:
    """Each shape round after round; in a round the targets take turns, first one then the
    other, each with the round's moments. Also the other processes' CPU per shape."""
    numbers = itertools.count()
    said: list[Said] = []
    busy: dict[str, float] = {}
    for shape in plan(settings):
        count = len(shape.moments)
        print(f"  voice: {shape.name}, {shape.calls} call(s), {count} round(s) each", flush=True)
        outside.start()
        for number, moments in enumerate(shape.moments):
            order = TARGETS if number % 2 == 0 else TARGETS[::-1]
            for target in order:
                said += await asyncio.gather(
                    *(
                        say(
                            emu,
                            target,
                            shape.name,
                            instance,
                            step=shape.step,
                            index=next(numbers),
                            words=settings.words,
                            after=after,
                        )
                        for instance, after in zip(
                            instances[target][: shape.calls], moments, strict=True
                        )
                    )
                )
        busy[shape.name] = outside.percent()
    busy.pop("warmup")
    return [s for s in said if s.shape != "warmup"], busy


async def wait_traces(
    traces: e2e.TraceFile, tags: set[str], within: float = 10.0
) -> dict[str, Mapping[str, Any]]:
    """The LLM's traces of `tags` (each is written once its completion ended)."""
    deadline = time.monotonic() + within
    while True:  # a file that grows: nothing to await but time
        found = traces.update()
        if tags <= set(found) or time.monotonic() > deadline:
            return dict(found)
        await asyncio.sleep(0.05)


async def run(
    session: aiohttp.ClientSession, procs: Processes, *, quick: bool, workdir: Path
) -> dict[str, Any]:
    """The whole scenario in its own processes."""
    settings = VoiceSettings.for_run(quick=quick)
    trace_path = workdir / "voice-llm-traces.jsonl"
    llm = await procs.start(
        "voice-llm",
        python_module(
            "tools.bench.voice",
            "--first-token-delay",
            f"{settings.first_token_delay:g}",
            "--token-interval",
            f"{settings.token_interval:g}",
            "--trace",
            str(trace_path),
        ),
    )
    voice = await procs.start(
        "voice-zego",
        channeld(
            "emulate",
            "voice",
            "--provider",
            "zego",
            "--listen",
            "127.0.0.1:0",
            "--app-id",
            str(VOICE_APP_ID),
            "--server-secret",
            VOICE_SECRET,
            # the baseline's instances stand for a second app's, beside channeld's ten
            "--max-instances",
            str(2 * settings.calls),
            "--agent",
            BASELINE_AGENT,
        ),
    )
    admin, hooks = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    zim = await procs.start(
        "voice-zim",
        channeld(
            "emulate",
            "zim",
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
        ),
    )
    state = workdir / "state-voice"
    conf = workdir / "voice.toml"
    conf.write_text(
        daemon_config(
            state_dir=state,
            admin_listen=admin,
            webhooks_listen=hooks,
            zim_api=zim.url,
            voice_api=voice.url,
            llm_url=llm.url,
        )
    )
    daemon = await procs.start(
        "channeld-voice", channeld("run", "--config", str(conf)), wait_url=False
    )
    admin_url = f"http://{admin}"
    await e2e.wait_up(session, admin_url, CHANNEL, daemon)
    token = read_token(token_path(state))
    instances = {
        "channeld": [
            str((await start_call(session, admin_url, token, n))["agent_instance_id"])
            for n in range(settings.calls)
        ],
        "baseline": [
            await baseline_instance(session, voice.url, n, llm.url) for n in range(settings.calls)
        ],
    }
    said, busy = await rounds(
        EmulatorClient(session, voice.url), instances, settings, OutsideLoad(procs)
    )
    traces = await wait_traces(e2e.TraceFile(trace_path), {s.tag for s in said if s.ok})
    for proc in (daemon, zim, voice, llm):
        await proc.stop()
    return {
        "settings": dataclasses.asdict(settings),
        "instance_limit": INSTANCE_LIMIT,
        "outside_cpu_percent": busy,
        "targets": summarize(said, traces),
    }


# -- the scenario's LLM, in its own process --------------------------------------------------------


async def _serve(args: argparse.Namespace, sink: TextIO) -> None:
    llm = FirstTokenFirstLLM(
        sink, first_token_delay=args.first_token_delay, token_interval=args.token_interval
    )
    await llm.start("127.0.0.1", 0)
    print(f"voice LLM listening on {llm.url}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await llm.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m tools.bench.voice`: serve `FirstTokenFirstLLM` until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.voice",
        description="The voice scenario's LLM: a traced fake LLM whose stream starts with its "
        "first token",
    )
    parser.add_argument("--first-token-delay", type=float, required=True, metavar="SECONDS")
    parser.add_argument("--token-interval", type=float, required=True, metavar="SECONDS")
    parser.add_argument("--trace", required=True, help="append one JSON line per completion")
    args = parser.parse_args(argv)
    with Path(args.trace).open("a", encoding="utf-8") as sink:
        asyncio.run(_serve(args, sink))


if __name__ == "__main__":
    main()
