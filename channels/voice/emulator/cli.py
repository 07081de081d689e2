"""`channeld emulate voice --provider zego|aliyun`: serve a voice cloud on one port until
cancelled. `--listen` defaults to the provider's port (8793 for zego, 8794 for aliyun)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from channels.emulator import cli
from channels.voice.emulator import aliyun, zego
from channels.voice.emulator.providers import DEFAULT_LISTEN, PROVIDERS
from channels.voice.emulator.server import VoiceEmulator


class _DefaultListen(str):
    """`--listen` as nobody gave it: `--provider` may still move it to its own port."""

    __slots__ = ()


class _Provider(argparse.Action):
    """`--provider`, which also moves a `--listen` nobody gave to the provider's port."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        del option_string  # argparse's signature; which spelling named the option is moot
        setattr(namespace, self.dest, values)
        if isinstance(getattr(namespace, "listen", None), _DefaultListen):
            namespace.listen = _DefaultListen(DEFAULT_LISTEN[str(values)])


COMMANDS: dict[str, cli.Command[VoiceEmulator]] = {
    name: cli.Command(
        factory,
        default_listen=DEFAULT_LISTEN[name],
        default_apps=factory.default_agents,
        app=str,
        app_metavar="ID",
        app_help="",
        app_flag="--agent",
        split_app=False,
    )
    for name, factory in PROVIDERS.items()
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The provider, `--listen`, the agents and each cloud's console settings."""
    parser.add_argument(
        "--provider",
        choices=tuple(PROVIDERS),
        default="zego",
        action=_Provider,
        help="the cloud to play: zego (ZEGO AI Agent) or aliyun (Alibaba Cloud IMS AI agent)",
    )
    parser.add_argument(
        "--listen",
        default=_DefaultListen(DEFAULT_LISTEN["zego"]),
        help="HOST:PORT (default 127.0.0.1:8793 for zego, 127.0.0.1:8794 for aliyun; port 0: any)",
    )
    parser.add_argument(
        "--agent",
        action="append",
        metavar="ID",
        help="an agent that exists from the start (repeatable); zego: registered agents (default "
        f"none), aliyun: the console's AI agents (default {aliyun.DEFAULT_AGENT})",
    )
    parser.add_argument(
        "--callback-url", default="", help="the console's callback URL (default: none)"
    )
    parser.add_argument(
        "--llm-timeout", type=float, default=30.0, help="seconds the agent waits for a whole answer"
    )
    zego_options = parser.add_argument_group("zego")
    zego_options.add_argument("--app-id", default=zego.DEFAULT_APP_ID, help="the AppId calls name")
    zego_options.add_argument(
        "--server-secret", default=zego.DEFAULT_SECRET, help="signs API calls and callbacks"
    )
    zego_options.add_argument(
        "--callback-secret", default="", help="sign callbacks with this instead"
    )
    zego_options.add_argument(
        "--max-instances", type=int, default=10, help="live agent instances per app"
    )
    zego_options.add_argument(
        "--retry-scale", type=float, default=1.0, help="multiplies the 2/4/8/16/32 s retries"
    )
    ali = parser.add_argument_group("aliyun")
    ali.add_argument("--access-key-id", default=aliyun.DEFAULT_ACCESS_KEY_ID)
    ali.add_argument("--access-key-secret", default=aliyun.DEFAULT_ACCESS_KEY_SECRET)
    ali.add_argument("--llm-base-url", default="", help="the self-developed LLM's base URL")
    ali.add_argument("--llm-api-key", default="", help="the API key entered for that LLM")
    ali.add_argument("--llm-model", default="channeld-voice", help="the model id entered for it")
    ali.add_argument("--callback-token", default="", help="sent verbatim in Authorization")
    ali.add_argument("--chat-record", action="store_true", help="send chat_record callbacks")
    ali.add_argument(
        "--no-history-sync",
        action="store_true",
        help="HistorySyncWithTTS off: no <ims_agent_interrupted> after an interruption",
    )


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The emulator's constructor options that `args` give."""
    common: dict[str, Any] = {"callback_url": args.callback_url, "llm_timeout": args.llm_timeout}
    if args.provider == "zego":
        return {
            **common,
            "app_id": args.app_id,
            "server_secret": args.server_secret,
            "callback_secret": args.callback_secret or None,
            "max_instances": args.max_instances,
            "retry_scale": args.retry_scale,
        }
    console = aliyun.Console(
        llm_base_url=args.llm_base_url,
        llm_api_key=args.llm_api_key,
        llm_model=args.llm_model,
        callback_token=args.callback_token,
        chat_record=args.chat_record,
        history_sync=not args.no_history_sync,
    )
    keys = {args.access_key_id: args.access_key_secret}
    return {**common, "access_keys": keys, "console": console}


async def main(args: argparse.Namespace) -> int:
    """Entry point of `channeld emulate voice`; returns the exit code."""
    return await COMMANDS[args.provider].run(args, **options(args))
