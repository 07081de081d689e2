"""Which storage failures are about the values written, and which may pass on a retry."""

from __future__ import annotations

from sqlalchemy.exc import DataError

# SQLSTATE class 22 is "data exception": a string too long for its column (22001), a character
# the encoding cannot hold such as NUL (22021), a number out of range (22003)...
DATA_EXCEPTION_CLASS = "22"
_DESCRIBED_CHARS = 200


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what SQLAlchemy wrapped (`orig`) and what caused each, in that order."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in found):
        found.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return found


def unstorable(exc: BaseException) -> bool:
    """True when the database refused the values themselves, so writing them again cannot help.

    Decided by the exception's class, never its message. Poison: the driver could not encode a
    value (a UnicodeError, raised as is by sqlite3 and under asyncpg's DataError), SQLAlchemy's
    DataError, or SQLSTATE class 22 (asyncpg reports those as a generic DBAPIError). Anything
    else (a lock held past the busy timeout, a lost connection, a pool timeout, a disk error, an
    error we do not know) may pass on a retry and counts as transient: dropping a good message
    during an outage would lose it, where retrying a poison one only costs a redelivery.
    """
    for cause in _chain(exc):
        if isinstance(cause, UnicodeError | DataError):
            return True
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(DATA_EXCEPTION_CLASS):
            return True
    return False


def describe(exc: BaseException) -> str:
    """The driver's error class, SQLSTATE and message, for logs: never the statement's values.

    SQLAlchemy's messages quote the failed statement and its parameters (message text, names),
    so only the innermost driver error is described; a data error's message can quote the
    offending value too (asyncpg: "invalid input for query argument $5: '...'"), so for those
    the class and SQLSTATE have to do.
    """
    chain = _chain(exc)
    innermost = chain[-1]
    sqlstate = next((s for c in chain if isinstance(s := getattr(c, "sqlstate", None), str)), "")
    what = type(innermost).__name__ + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
    if unstorable(exc):
        return what
    return f"{what}: {str(innermost)[:_DESCRIBED_CHARS]}"
