"""WuKongIM: webhook callbacks, HTTP API client, message-event-stream replies and a local emulator.

`platform.py` is its entry in `channels/registry.py`: all that the rest of channeld knows of it.
"""
