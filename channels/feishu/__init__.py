"""Feishu / Lark: long-connection client, OpenAPI and CardKit cards, emulator.

`platform.py` is its entry in `channels/registry.py`: all that the rest of channeld knows of it.
"""
