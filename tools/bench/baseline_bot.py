"""The baseline: an LLM bot on the bare dingtalk-stream SDK, shaped like DingTalk's own examples.

A `ChatbotHandler` whose `process()` asks the LLM, answers through the message's sessionWebhook
with the SDK's `reply_markdown`, and returns `STATUS_OK`, after which the SDK acks the frame. The
LLM call uses the async OpenAI client, so the loop is free while the model writes (kinder to the
baseline than the blocking clients many examples use). The SDK's own parts stay as they are:
`reply_markdown` is a blocking `requests.post`, and the ack leaves when `process()` returns.

Several apps share one process and one loop (one SDK client each), as a bot serving several
robots would. One addition for the benchmark: a loop-lag probe identical to channeld's (a 250 ms
sleep, how late it wakes), appended to --lag-file as JSON lines.

Usage: python -m tools.bench.baseline_bot --api-base URL --client-id ID [--client-id ID ...]
       --client-secret S --llm-url URL --lag-file FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dingtalk_stream
import dingtalk_stream.card_replier
import dingtalk_stream.chatbot
import dingtalk_stream.stream

# dingtalk-stream 0.24.3 names websockets.exceptions in an except clause without importing it.
import websockets.exceptions  # noqa: F401
from dingtalk_stream import AckMessage
from openai import AsyncOpenAI

LAG_INTERVAL = 0.25  # the same timer channeld's EventLoopLagMonitor uses


def aim_sdk(api_base: str) -> None:
    """dingtalk-stream 0.24.3 reads its endpoint from module constants set at import time."""
    client_cls: Any = dingtalk_stream.stream.DingTalkStreamClient
    client_cls.OPEN_CONNECTION_API = api_base + "/v1.0/gateway/connections/open"
    for module in (dingtalk_stream.stream, dingtalk_stream.chatbot, dingtalk_stream.card_replier):
        module.DINGTALK_OPENAPI_ENDPOINT = api_base


class LlmReplyHandler(dingtalk_stream.ChatbotHandler):  # type: ignore[misc]
    """Answers each text message with the LLM's reply, as one markdown message."""

    def __init__(self, llm: AsyncOpenAI, model: str, logger: logging.Logger) -> None:
        super(dingtalk_stream.ChatbotHandler, self).__init__()
        self.llm = llm
        self.model = model
        self.logger = logger

    async def process(self, callback: dingtalk_stream.CallbackMessage) -> tuple[int, str]:
        incoming = dingtalk_stream.ChatbotMessage.from_dict(callback.data)
        question = incoming.text.content.strip()
        stream = await self.llm.chat.completions.create(
            model=self.model,
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": question},
            ],
            stream=True,
        )
        parts: list[str] = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        self.reply_markdown("Reply", "".join(parts), incoming)
        return AckMessage.STATUS_OK, "OK"


async def _lag_probe(path: Path) -> None:
    loop = asyncio.get_running_loop()
    with path.open("a", encoding="utf-8") as out:
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            now = loop.time()
            lag = max(0.0, now - before - LAG_INTERVAL)
            out.write(json.dumps({"at": now, "lag": lag}) + "\n")
            out.flush()


async def _run(args: argparse.Namespace) -> None:
    logger = logging.getLogger("baseline")
    llm = AsyncOpenAI(base_url=args.llm_url, api_key="bench")
    clients = []
    for client_id in args.client_id:
        credential = dingtalk_stream.Credential(client_id, args.client_secret)
        client = dingtalk_stream.DingTalkStreamClient(credential, logger=logger)
        client.register_callback_handler(
            dingtalk_stream.ChatbotMessage.TOPIC, LlmReplyHandler(llm, args.model, logger)
        )
        clients.append(client)
    probe = asyncio.create_task(_lag_probe(Path(args.lag_file)))
    try:
        await asyncio.gather(*(client.start() for client in clients))
    finally:
        probe.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the bot until the process is terminated."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench.baseline_bot", description=__doc__)
    parser.add_argument("--api-base", required=True)
    parser.add_argument(
        "--client-id", action="append", required=True, help="one bot per app (repeatable)"
    )
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--llm-url", required=True)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--lag-file", required=True)
    args = parser.parse_args(argv)
    # 0.24.3 logs a warning for every SYSTEM ping; channeld runs at WARNING in the benchmark too.
    logging.basicConfig(level=logging.ERROR)
    aim_sdk(args.api_base)
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
