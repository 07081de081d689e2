"""What every platform emulator shares: control plane, state bookkeeping, running on a thread.

Platform emulators live in `channels/<platform>/emulator/` and build on these modules; nothing
in the product code imports them.
"""
