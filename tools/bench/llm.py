"""The benchmark's LLM: `tools.fake_llm` plus a trace of when each token left, one JSON line each.

`FakeLLM` records when a request arrived, not when its tokens were written, and staleness and
"last token to final update" need the latter. Its streaming loop calls `_pause()` once before the
response (stall, 0 s), once for the first-token delay and once before every later token, and
writes the token right after each return; wrapping `_pause()` therefore timestamps every token.
tests/test_bench_smoke.py checks that the marks and the tokens still line up.

Usage: python -m tools.bench.llm --first-token-delay S --token-interval S --trace FILE
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from tools.fake_llm import Behaviour, FakeLLM


@dataclass
class Trace:
    """One chat completion as the fake LLM served it; times are time.monotonic()."""

    started: float
    user: str = ""
    tokens: list[str] = field(default_factory=list)
    marks: list[float] = field(default_factory=list)  # after each pause
    ended: float = 0.0

    @property
    def token_times(self) -> list[float]:
        """When each token was written: the mark right before it (the first mark is the stall)."""
        return self.marks[1 : 1 + len(self.tokens)]

    def to_json(self) -> dict[str, Any]:
        """One line of the trace file."""
        return {
            "started": self.started,
            "ended": self.ended,
            "user": self.user,
            "tokens": self.tokens,
            "token_times": self.token_times,
        }


_CURRENT: contextvars.ContextVar[Trace | None] = contextvars.ContextVar(
    "bench_llm_trace", default=None
)


class TracingLLM(FakeLLM):
    """A FakeLLM that appends a `Trace` of every chat completion to `sink`."""

    def __init__(self, sink: TextIO | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.sink = sink
        self.traces: list[Trace] = []

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        trace = Trace(time.monotonic())
        reset = _CURRENT.set(trace)
        try:
            return await super()._completions(request)
        finally:
            _CURRENT.reset(reset)
            trace.ended = time.monotonic()
            self.traces.append(trace)
            if self.sink is not None:
                self.sink.write(json.dumps(trace.to_json(), ensure_ascii=False) + "\n")
                self.sink.flush()

    def _tokens(self, messages: list[dict[str, Any]], behaviour: Behaviour) -> list[str]:
        tokens = super()._tokens(messages, behaviour)
        trace = _CURRENT.get()
        if trace is not None:
            users = [m for m in messages if m.get("role") == "user"]
            trace.user = str(users[-1].get("content", "")) if users else ""
            trace.tokens = list(tokens)
        return tokens

    async def _pause(self, seconds: float) -> None:
        await super()._pause(seconds)
        trace = _CURRENT.get()
        if trace is not None:
            trace.marks.append(time.monotonic())


async def _serve(args: argparse.Namespace, sink: TextIO) -> None:
    llm = TracingLLM(
        sink, first_token_delay=args.first_token_delay, token_interval=args.token_interval
    )
    await llm.start(args.host, args.port)
    print(f"fake LLM listening on {llm.url}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await llm.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench.llm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-token-delay", type=float, default=0.3, metavar="SECONDS")
    parser.add_argument("--token-interval", type=float, default=0.02, metavar="SECONDS")
    parser.add_argument("--trace", required=True, help="append one JSON line per completion")
    args = parser.parse_args(argv)
    with Path(args.trace).open("a", encoding="utf-8") as sink:
        asyncio.run(_serve(args, sink))


if __name__ == "__main__":
    main()
