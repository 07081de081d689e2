"""What every platform emulator shares, so that a platform's emulator is only its protocol.

`state` (change feed, faults, call record, tokens, cards, chat transcripts), `http` (platform
errors, injected faults and latency, the call record), `gateway` (tickets, socket bookkeeping,
socket faults), `server` (`EmulatorServer`: one port, faults and observations), `control` (the
`/_emulator/` control plane), `thread` (`EmulatorThread`: an emulator on a loop of its own) and
`cli` (`channeld emulate PLATFORM`). Platform emulators live in `channels/<platform>/emulator/`;
the core of `channels/` never imports them.
"""
