"""The answers streaming to each call: one at a time per call, all cut when the call ends.

A voice agent asks again when the user speaks over it: the answer still streaming for that call
was talked over, so the new request cuts it (and one call can hold only one answer slot, however
many requests its secret sends). Ending a call cuts its stream too, so nothing is said or stored
for a call after its end.

It also remembers, for a few seconds, the calls the endpoint found by their secret: a round then
costs no store read to authenticate (the call's end and expiry are still checked on the record,
and ending a call here forgets it at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from storage.repository import VoiceCallRecord

KNOWN_FOR = 10.0  # seconds a call found by its secret is remembered
MAX_KNOWN = 10_000  # calls remembered at most (ZEGO allows 10 at once per account by default)


class CallStreams:
    """The task streaming each call's answer; the endpoint registers, whoever ends a call cuts."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._streams: dict[str, asyncio.Task[object]] = {}
        self._clock = clock
        # secret hash -> (when found, the call); insertion order is age order
        self._known: OrderedDict[str, tuple[float, VoiceCallRecord]] = OrderedDict()

    def known(self, secret_hash: str) -> VoiceCallRecord | None:
        """The call with this secret, if found within the last KNOWN_FOR seconds."""
        entry = self._known.get(secret_hash)
        if entry is None:
            return None
        if self._clock() - entry[0] > KNOWN_FOR:
            del self._known[secret_hash]
            return None
        return entry[1]

    def remember(self, secret_hash: str, call: VoiceCallRecord) -> None:
        """The endpoint found `call` by its secret just now."""
        self._known.pop(secret_hash, None)
        self._known[secret_hash] = (self._clock(), call)
        while len(self._known) > MAX_KNOWN:
            self._known.popitem(last=False)

    @contextlib.contextmanager
    def streaming(self, call_id: str) -> Iterator[None]:
        """The current task streams `call_id`'s answer for the body; an earlier one is cut."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("streaming() needs a running task")
        earlier = self._streams.get(call_id)
        if earlier is not None and earlier is not task:
            earlier.cancel()  # talked over: the user asked again
        self._streams[call_id] = task
        try:
            yield
        finally:
            if self._streams.get(call_id) is task:
                del self._streams[call_id]

    def cut(self, call_id: str) -> bool:
        """The call ended: forget it, and cut its answer streaming, if one is; whether one was."""
        for secret, (_, call) in list(self._known.items()):
            if call.id == call_id:
                del self._known[secret]
        task = self._streams.pop(call_id, None)
        if task is None:
            return False
        task.cancel()
        return True

    def __len__(self) -> int:
        return len(self._streams)
