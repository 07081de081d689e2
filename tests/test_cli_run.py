"""The README's promise: `channeld run` on the example config, then `channeld chat` talks to it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


async def read_until(stream: asyncio.StreamReader, pattern: str, seen: list[str]) -> re.Match[str]:
    regex = re.compile(pattern)
    for line in seen:
        if match := regex.search(line):
            return match
    async with asyncio.timeout(30):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError("daemon exited early:\n" + "".join(seen))
            seen.append(line)
            if match := regex.search(line):
                return match


async def test_run_example_config_chat_and_stop(tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    env = {
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        **os.environ,
        "CHANNELD_DAEMON__STATE_DIR": str(tmp_path),
        "CHANNELD_ADMIN__LISTEN": "127.0.0.1:0",
        "CHANNELD_EMULATOR__LISTEN": "127.0.0.1:0",
    }
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon",
        "run",
        "--config",
        str(ROOT / "channeld.example.toml"),
        cwd=tmp_path,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert daemon.stderr is not None
    seen: list[str] = []
    try:
        emulator_url = (
            await read_until(daemon.stderr, r"emulated DingTalk at (http://\S+);", seen)
        )[1]
        admin_port = (await read_until(daemon.stderr, r"admin on http://127\.0\.0\.1:(\d+)", seen))[
            1
        ]
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(15):
                while True:
                    async with http.get(f"http://127.0.0.1:{admin_port}/readyz") as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.05)
        await read_until(daemon.stderr, r"channel dingtalk-demo: connected", seen)
        chat = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon",
            "chat",
            "--emulator",
            emulator_url,
            "--app",
            "ding-demo",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(chat.communicate(b"hello there\n/quit\n"), 30)
        assert chat.returncode == 0, err.decode()
        assert "You said: hello there" in out.decode()
        assert (tmp_path / "channeld.db").exists()
    finally:
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(daemon.wait(), 15)
    assert code == 0, "".join(seen)
    told: list[bytes] = []
    while True:
        try:
            told.append(notify.recv(4096))
        except BlockingIOError:
            break
    notify.close()
    fields = [f for datagram in told for f in datagram.decode().split("\n")]
    assert "READY=1" in fields
    assert "STOPPING=1" in fields
    assert any(f.startswith("STATUS=1 of 1 channels connected") for f in fields)


async def test_migrate_creates_the_schema_and_is_repeatable(tmp_path: Path) -> None:
    config = tmp_path / "channeld.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n', encoding="utf-8")
    for _ in range(2):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon",
            "migrate",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        assert "latest schema" in out.decode()
    assert (tmp_path / "channeld.db").stat().st_size > 0
