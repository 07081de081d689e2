"""Easemob (环信): pre-send and post-send callbacks, REST API client, rewritten replies, emulator.

`platform.py` is its entry in `channels/registry.py`: all that the rest of channeld knows of it.
"""
