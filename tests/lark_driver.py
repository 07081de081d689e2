"""Runs the official lark-oapi 1.7.5 `ws.Client` against a Feishu emulator; test helper.

Started by tests/test_feishu_fidelity.py with the interpreter of the separate lark venv
(lark-oapi pins websockets<16). lark-oapi logs to stdout too, so each thing observed is one
line starting with `PREFIX` followed by JSON:
    {"kind": "event", ...}   the registered im.message.receive_v1 handler ran
    {"kind": "error", ...}   Client.start() raised (fatal for the SDK)
`start()` runs in this process's main thread on the loop lark-oapi created at import.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import lark_oapi as lark  # type: ignore[import-not-found]  # lives in the lark venv only

PREFIX = "@@lark-driver "


def emit(record: dict[str, Any]) -> None:
    """One prefixed JSON line on stdout, flushed at once."""
    sys.stdout.write(PREFIX + json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--app-secret", required=True)
    parser.add_argument("--fail-first", action="store_true", help="the first handler call raises")
    args = parser.parse_args()
    calls = {"n": 0}

    def on_message(data: Any) -> None:
        calls["n"] += 1
        message = data.event.message
        emit(
            {
                "kind": "event",
                "call": calls["n"],
                "event_id": data.header.event_id,
                "event_type": data.header.event_type,
                "app_id": data.header.app_id,
                "message_id": message.message_id,
                "chat_id": message.chat_id,
                "chat_type": message.chat_type,
                "message_type": message.message_type,
                "content": message.content,
                "mentions": [m.key for m in message.mentions or []],
                "sender_open_id": data.event.sender.sender_id.open_id,
            }
        )
        if args.fail_first and calls["n"] == 1:
            raise RuntimeError("handler failure on purpose")

    handler = (
        lark.EventDispatcherHandler.builder("", "")
        .register_p2_im_message_receive_v1(on_message)
        .build()
    )
    client = lark.ws.Client(
        args.app_id,
        args.app_secret,
        event_handler=handler,
        domain=args.domain,
        log_level=lark.LogLevel.DEBUG,
    )
    try:
        client.start()
    except Exception as exc:  # noqa: BLE001 - reported to the test, which judges it
        emit({"kind": "error", "type": type(exc).__name__, "code": getattr(exc, "code", None)})
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
