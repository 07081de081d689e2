"""What a user can type to the bot (`/new`, `/stop`, `/help`) and what the bot says back."""

from __future__ import annotations

import enum


class Command(enum.StrEnum):
    """A command word at the start of a message; NONE for an ordinary message."""

    NONE = ""
    NEW = "/new"
    HELP = "/help"
    STOP = "/stop"


HELP_TEXT = (
    "**Commands**\n\n"
    "- `/new` start a new conversation (the assistant forgets earlier turns)\n"
    "- `/stop` stop the answer being written\n"
    "- `/help` show this list"
)
NEW_TEXT = "Started a new conversation."
STOPPED_TEXT = "Stopped."
NOTHING_TO_STOP_TEXT = "Nothing to stop."
QUEUED_TEXT = "Got it. I will answer this after the current reply ({ahead} ahead of it)."
OVERFLOW_TEXT = "Too many messages are waiting. Please wait for the current answers, then resend."
OVERFLOW_ERROR = "dropped: the conversation's queue was full"


def command_of(text: str) -> tuple[Command, str]:
    """(Command.NEW, 'rest of text') for a command, (Command.NONE, text) otherwise."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return Command.NONE, text
    word, _, rest = stripped.partition(" ")
    try:
        command = Command(word.lower())  # never NONE: the word starts with "/"
    except ValueError:
        return Command.NONE, text
    return command, rest.strip()
