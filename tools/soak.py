"""Soak: the daemon under steady traffic and churn, every message accounted for.

    make soak MINUTES=10          # or: .venv/bin/python tools/soak.py --minutes 10

The daemon (`channeld run`) and the fake LLM (`python -m tools.fake_llm`) run as child processes
on free loopback ports; the DingTalk emulator runs in this process on a thread of its own, which
lets the driver look at every chat directly. Simulated users write steadily, one message at a time
each; meanwhile the gateway dies and comes back, sockets are reset and the daemon is restarted
with SIGTERM and, every other restart, SIGKILL. The emulator plays DingTalk's part in delivery:
it holds messages for an app that is offline, and a message left unacked is delivered again.

At the end every message is classified from what its user sees: answered once, a clear failure
notice, lost (neither) or duplicated (two answers, or an answer and a failure notice). The exit
status is 1 if anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from channels.dingtalk.emulator import EmulatorThread
from channels.recovery import INTERRUPTED_NOTE

APP_ID, APP_SECRET, TEMPLATE = "soak-app", "soak-secret", "tpl.ai.schema"
LLM_KEY = "sk-soak-0123456789"
CHANNEL = "soak"
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india")
NOTICES = ("could not answer", "Please send it again", "(stopped)", "empty answer", "Too many")
REDELIVER_AFTER = 10.0  # seconds without an ack before the platform delivers a message again
ANSWER_TIMEOUT = 120.0  # a message unresolved this long is reported lost
LAG = re.compile(r'^channeld_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.MULTILINE)
ADMIN = "admin on http://"
ROOT = Path(__file__).resolve().parents[1]  # `-m tools.fake_llm` resolves from the checkout


class Child:
    """A child process whose output goes to a log file and can be waited on for a line."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}
        self.lines = []
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        self._reader = asyncio.create_task(self._read(self.process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        if process.stdout is None:
            return
        with self.log.open("a", encoding="utf-8") as out:
            out.write(f"---- {self.name} pid {process.pid} started\n")
            while line := await process.stdout.readline():
                text = line.decode(errors="replace")
                self.lines.append(text)
                out.write(text)

    async def wait_line(self, pattern: re.Pattern[str] | str) -> str:
        """The first line matching `pattern` (a regex or a plain substring), within 30 s."""
        async with asyncio.timeout(30):
            while True:
                for line in self.lines:
                    if (pattern in line) if isinstance(pattern, str) else pattern.search(line):
                        return line
                if self.process is not None and self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
                await asyncio.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    async def end(self, signum: int = signal.SIGTERM, within: float = 40.0) -> int | None:
        """Signals the process and waits for it (SIGKILL after `within` seconds)."""
        process, reader = self.process, self._reader
        if process is None or reader is None:
            return None
        if process.returncode is None:
            process.send_signal(signum)
        try:
            code = await asyncio.wait_for(process.wait(), within)
        except TimeoutError:
            process.kill()
            code = await process.wait()
        await reader
        return code


@dataclass
class Sent:
    user: int
    text: str
    frame_id: str
    conversation_id: str
    item_id: str


@dataclass
class Verdict:
    answers: int
    notices: int
    settled: bool  # no card still streaming

    @property
    def resolved(self) -> bool:
        return self.settled and (self.answers > 0 or self.notices > 0)


def verdict(items: list[dict[str, Any]], sent: Sent) -> Verdict:
    """What the user sees in reply to one message: the bot items between it and the next one."""
    start = next((n for n, i in enumerate(items) if i["id"] == sent.item_id), None)
    if start is None:
        return Verdict(0, 0, True)
    replies: list[dict[str, Any]] = []
    for item in items[start + 1 :]:
        if item["kind"] == "user":
            break
        replies.append(item)
    expected = f"Echo: {sent.text}"
    answers = notices = 0
    settled = True
    for item in replies:
        text = str(item.get("text", ""))
        if item["kind"] == "card" and not (item.get("done") and item.get("flow_status")):
            settled = False
        if text == expected and (item["kind"] != "card" or item.get("flow_status") == "3"):
            answers += 1
        elif INTERRUPTED_NOTE in text or "after the current reply" in text:
            continue  # a card closed by recovery, whose message is answered again; a queue notice
        elif any(n in text for n in NOTICES):
            notices += 1
    return Verdict(answers, notices, settled)


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)  # noqa: S311 - traffic shape, not security
        self.emulator = EmulatorThread(
            [(APP_ID, APP_SECRET)],
            templates=[TEMPLATE],
            ping_interval=5.0,
            disconnect_grace=2.0,
            hold_when_offline=True,
        )
        self.llm = Child(
            "fake-llm",
            [sys.executable, "-m", "tools.fake_llm", "--port", "0", "--api-key", LLM_KEY,
             "--first-token-delay", "0.2", "--token-interval", "0.05"],
            workdir / "fake_llm.log",
        )  # fmt: skip
        self.daemon = Child(
            "channeld",
            [sys.executable, "-m", "daemon", "run", "--config", str(workdir / "channeld.toml")],
            workdir / "channeld.log",
        )
        self.admin_url = ""
        self.sent: list[Sent] = []
        self.events: Counter[str] = Counter()
        self.lag: Counter[str] = Counter()
        self.rss_start = self.rss_end = self.rss_peak = 0
        self.daemon_started_at = 0.0

    # -- processes ---------------------------------------------------------------------------------

    def config(self, llm_url: str) -> Path:
        path = self.workdir / "channeld.toml"
        path.write_text(
            f"""
[daemon]
state_dir = "{self.workdir / "state"}"
log_level = "INFO"
graceful_timeout = 5

[admin]
listen = "127.0.0.1:0"

[agents.default]
type = "openai"
base_url = "{llm_url}"
api_key = "{LLM_KEY}"
model = "fake-model"
timeout = 30
max_retries = 2

[[channels]]
id = "{CHANNEL}"
type = "dingtalk"
client_id = "{APP_ID}"
client_secret = "{APP_SECRET}"
card_template_id = "{TEMPLATE}"
api_base = "{self.emulator.url}"
watchdog_seconds = 15
""",
            encoding="utf-8",
        )
        return path

    async def start_daemon(self) -> None:
        await self.daemon.start()
        line = await self.daemon.wait_line(ADMIN)
        self.admin_url = line[line.index("http://") :].split()[0]
        await self.daemon.wait_line(f"channel {CHANNEL}: connected")
        self.daemon_started_at = time.monotonic()

    def rss(self) -> int:
        """The daemon's resident set size in bytes."""
        status = Path(f"/proc/{self.daemon.pid}/status").read_text(encoding="utf-8")
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) * 1024 if match else 0

    async def collect_lag(self) -> None:
        """Adds the running daemon's loop-lag histogram to the totals (each process starts at 0)."""
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(self.admin_url + "/metrics") as response,
            ):
                text = await response.text()
        except aiohttp.ClientError as exc:
            print(f"soak: could not read /metrics: {exc}", file=sys.stderr)
            return
        for le, value in LAG.findall(text):
            self.lag[le] += int(float(value))

    async def sample_rss(self, until: float) -> None:
        while time.monotonic() < until:
            with contextlib.suppress(OSError):  # between a restart's stop and start
                self.rss_peak = max(self.rss_peak, self.rss())
            await asyncio.sleep(5)

    async def restart_daemon(self, signum: int) -> None:
        await self.collect_lag()
        await self.daemon.end(signum)
        await self.start_daemon()
        self.events["SIGKILL restarts" if signum == signal.SIGKILL else "SIGTERM restarts"] += 1

    # -- traffic -----------------------------------------------------------------------------------

    async def user(self, index: int, until: float) -> None:
        for number in itertools.count():
            if time.monotonic() >= until:
                return
            words = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(8, 30)))
            text = f"u{index} m{number} {words}"
            result = await self.emulator.send_user_message(
                APP_ID, text=text, sender_staff_id=f"soak-user-{index}", sender_nick=f"User {index}"
            )
            sent = Sent(
                index, text, result.frame_message_id, result.conversation_id, result.item_id
            )
            self.sent.append(sent)
            await self.until_resolved(sent)
            await asyncio.sleep(self.rng.uniform(0.1, 1.0))

    async def until_resolved(self, sent: Sent) -> None:
        """Waits for the answer; an unacked message is delivered again, as DingTalk does."""
        began = last_delivery = time.monotonic()
        while time.monotonic() - began < ANSWER_TIMEOUT:
            view = await self.emulator.chat_view(sent.conversation_id)
            if verdict((view or {"items": []})["items"], sent).resolved:
                return
            now = time.monotonic()
            if now - last_delivery >= REDELIVER_AFTER and not await self.emulator.acks(
                sent.frame_id
            ):
                await self.emulator.call(lambda e: e.redeliver(sent.frame_id))
                self.events["platform redeliveries"] += 1
                last_delivery = now
            await asyncio.sleep(0.1)

    async def churn(self, until: float) -> None:
        actions = itertools.cycle(["outage", "sigterm", "drop", "sigkill"])
        while True:
            pause = self.args.churn_every * self.rng.uniform(0.7, 1.3)
            if time.monotonic() + pause >= until:
                return
            await asyncio.sleep(pause)
            action = next(actions)
            if action == "outage":
                await self.emulator.call(lambda e: e.gateway_outage(True))
                await asyncio.sleep(self.rng.uniform(1.0, 4.0))
                await self.emulator.call(lambda e: e.gateway_outage(False))
                self.events["gateway outages"] += 1
            elif action == "drop":
                await self.emulator.drop(APP_ID)
                self.events["socket resets"] += 1
            else:
                await self.restart_daemon(signal.SIGKILL if action == "sigkill" else signal.SIGTERM)

    # -- the run -----------------------------------------------------------------------------------

    async def run(self) -> int:
        await asyncio.to_thread(self.emulator.start)
        try:
            await self.llm.start()
            line = await self.llm.wait_line("fake LLM listening on")
            llm_url = line.rsplit(" ", 1)[-1].strip()
            self.config(llm_url)
            await self.start_daemon()
            await asyncio.sleep(2)  # settled after start-up
            self.rss_start = self.rss()
            until = time.monotonic() + self.args.minutes * 60
            users = [self.user(n, until) for n in range(self.args.users)]
            await asyncio.gather(self.churn(until), self.sample_rss(until), *users)
            await self.collect_lag()
            self.rss_end = self.rss()
            uptime = time.monotonic() - self.daemon_started_at
            await self.daemon.end(signal.SIGTERM)
            return await self.report(uptime)
        finally:
            if self.daemon.running:
                await self.daemon.end(signal.SIGKILL, within=5)
            await self.llm.end(signal.SIGTERM)
            await asyncio.to_thread(self.emulator.stop)

    async def report(self, final_uptime: float) -> int:
        outcomes: Counter[str] = Counter()
        for sent in self.sent:
            view = await self.emulator.chat_view(sent.conversation_id)
            result = verdict((view or {"items": []})["items"], sent)
            if result.answers == 1 and result.notices == 0:
                outcomes["answered"] += 1
            elif result.answers + result.notices > 1:
                outcomes["duplicated"] += 1
                print(f"soak: duplicated: {sent.text!r} {result}", file=sys.stderr)
            elif result.notices == 1:
                outcomes["failed, user told"] += 1
            else:
                outcomes["lost"] += 1
                print(f"soak: lost: {sent.text!r} {result}", file=sys.stderr)
        total = sum(self.lag.values()) and max(self.lag.values())  # +Inf bucket holds the count
        buckets = sorted(self.lag.items(), key=lambda kv: float(kv[0]))
        p99 = next((le for le, n in buckets if n >= 0.99 * total), "?")
        mib = 1024 * 1024
        print(f"soak: {self.args.minutes:g} min, {self.args.users} users, logs in {self.workdir}")
        print(f"  messages sent          {len(self.sent)}")
        print(f"  answered once          {outcomes['answered']}")
        print(f"  failed, user told      {outcomes['failed, user told']}")
        print(f"  lost                   {outcomes['lost']}")
        print(f"  duplicated             {outcomes['duplicated']}")
        for name in ("SIGTERM restarts", "SIGKILL restarts", "gateway outages", "socket resets",
                     "platform redeliveries"):  # fmt: skip
            print(f"  {name:<22} {self.events[name]}")
        start, end = self.rss_start / mib, self.rss_end / mib
        print(f"  daemon RSS             start {start:.1f} MiB, end {end:.1f} MiB", end="")
        print(f" (last process up {final_uptime:.0f} s), peak {self.rss_peak / mib:.1f} MiB")
        print(f"  event-loop lag p99     <= {p99} s ({total} samples over all daemon processes)")
        return 1 if outcomes["lost"] or outcomes["duplicated"] else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--churn-every", type=float, default=20.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temp dir")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="channeld-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(Soak(args, workdir).run()))
    sys.exit(130)


if __name__ == "__main__":
    main()
