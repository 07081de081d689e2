"""DingTalk: Stream-mode connection, OpenAPI client, AI-card replies and a local emulator.

`platform.py` is its entry in `channels/registry.py`: all that the rest of channeld knows of it.
"""
