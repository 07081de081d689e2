"""The processes under test: start them on loopback, read their CPU time and memory from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
_TICKS = os.sysconf("SC_CLK_TCK")
_URL = re.compile(r"listening on (http://\S+)")


def free_port() -> int:
    """A port that was free a moment ago (for config files that need one up front)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/PID/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def rss_bytes(pid: int) -> int:
    """Resident set size, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for pid {pid}")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot, all cores, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICKS  # all but idle and iowait


def monotonic_is_shared() -> dict[str, object]:
    """Checks that time.monotonic() in a child process lies between two readings in this one.

    On Linux it reads CLOCK_MONOTONIC, one clock for the whole machine (time since boot), so
    timestamps taken by the emulator, the LLM and this harness can be subtracted from each other.
    """
    info = time.get_clock_info("monotonic")
    before = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", "import time; print(repr(time.monotonic()))"],
        capture_output=True,
        text=True,
        check=True,
    )
    after = time.monotonic()
    child = float(out.stdout)
    return {
        "implementation": info.implementation,
        "parent_before": before,
        "child": child,
        "parent_after": after,
        "shared": before <= child <= after,
    }


@dataclass
class Proc:
    """One child process, its log file and (when it prints one) its URL."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it is still there after `grace` seconds."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.popen.wait, grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            await asyncio.to_thread(self.popen.wait)


def _popen(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(  # noqa: S603 - our own programs with arguments we built
            argv, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )


async def spawn(name: str, argv: list[str], workdir: Path, *, wait_url: bool) -> Proc:
    """Starts a child with output to workdir/NAME.log; waits for its "listening on URL" line."""
    log = workdir / f"{name}.log"
    proc = Proc(name, await asyncio.to_thread(_popen, argv, log), log)
    if wait_url:
        deadline = time.monotonic() + 60
        while not proc.url:
            match = _URL.search(log.read_text(errors="replace"))
            if match:
                proc.url = match.group(1).rstrip("/")
            elif not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log}")
            else:
                await asyncio.sleep(0.05)
    return proc


def python_module(module: str, *args: str) -> list[str]:
    """argv running a module of this checkout with the current interpreter."""
    return [sys.executable, "-m", module, *args]


def channeld(*args: str) -> list[str]:
    """argv running the `channeld` console script of this virtual environment."""
    return [str(VENV_BIN / "channeld"), *args]


class Processes:
    """Owns every child of a scenario and stops them all on exit, newest first."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    async def start(self, name: str, argv: list[str], *, wait_url: bool = True) -> Proc:
        proc = await spawn(name, argv, self.workdir, wait_url=wait_url)
        self.procs.append(proc)
        return proc

    async def __aenter__(self) -> Processes:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                await proc.stop()


class OutsideLoad:
    """CPU the machine spends on anything but the benchmark (this harness and its children)
    over a window: other people's work on a shared machine, which skews a run's figures."""

    def __init__(self, procs: Processes) -> None:
        self._procs = procs
        self._machine = 0.0
        self._ours: dict[int, float] = {}
        self._started = 0.0

    def _read(self) -> dict[int, float]:
        ours = {os.getpid(): time.process_time()}
        for proc in self._procs.procs:
            with contextlib.suppress(OSError):
                ours[proc.pid] = proc.cpu()
        return ours

    def start(self) -> None:
        """Opens the window."""
        self._started = time.monotonic()
        self._machine = machine_busy_seconds()
        self._ours = self._read()

    def percent(self) -> float:
        """Outside CPU since `start()`, in % of one core."""
        machine = machine_busy_seconds() - self._machine
        now = self._read()
        ours = sum(now[pid] - before for pid, before in self._ours.items() if pid in now)
        ours += sum(cpu for pid, cpu in now.items() if pid not in self._ours)
        elapsed = time.monotonic() - self._started
        return max(0.0, 100 * (machine - ours) / elapsed) if elapsed > 0 else 0.0
