"""The callback baseline: a bare aiohttp handler that journals a callback in SQLite and answers 200.

What any webhook receiver has to do before it may answer, and nothing more: read the body,
parse the JSON, commit one row per message (one transaction per callback, WAL, synchronous
FULL as channeld keeps it, a unique message id as a dedupe key), answer 200. The commit runs on
the loop with the standard library's sqlite3, the shortest path there is: no thread hop, no ORM.

Usage: python -m tools.bench.ack_server --db FILE [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
)
"""


def open_journal(path: Path) -> sqlite3.Connection:
    """The journal database, in WAL mode with full synchronous commits."""
    conn = sqlite3.connect(path, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode is None or mode[0] != "wal":
        raise RuntimeError(f"SQLite kept journal mode {mode!r}")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(SCHEMA)
    return conn


def rows_of(payload: Any) -> list[tuple[str, str]]:
    """(message id, item as JSON) of every message of a `msg.notify` array (or one object)."""
    items = payload if isinstance(payload, list) else [payload]
    rows = []
    for item in items:
        if isinstance(item, dict):
            key = str(item.get("message_idstr") or item.get("message_id") or "")
            rows.append((key, json.dumps(item, separators=(",", ":"))))
    return rows


def journal(conn: sqlite3.Connection, rows: Sequence[tuple[str, str]]) -> None:
    """One transaction for the whole callback; a message seen before is skipped."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT OR IGNORE INTO journal (message_id, body) VALUES (?, ?)", rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def make_app(conn: sqlite3.Connection) -> web.Application:
    """POST /hooks/{channel_id}: journal, then 200; not JSON: 400."""

    async def hook(request: web.Request) -> web.Response:
        try:
            payload = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400)
        journal(conn, rows_of(payload))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hooks/{channel_id}", hook)
    return app


async def _serve(args: argparse.Namespace) -> None:
    conn = open_journal(Path(args.db))
    runner = web.AppRunner(make_app(conn), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"ack server listening on http://{host}:{port}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await runner.cleanup()
        conn.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench.ack_server", description=__doc__)
    parser.add_argument("--db", required=True, help="SQLite file (created)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
