"""Where an exception was raised, in words fit for logs and dead letters (never the exception's message)."""

from __future__ import annotations

import traceback


def where_raised(exc: BaseException) -> str:
    """`TypeError in edge/rules.py:123 (decide)`: enough to find the bug, without the exception's message,
    which may quote the payload (personal data stays out of logs and dead letters)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    parts = last.filename.replace("\\", "/").rsplit("/", 2)
    return f"{type(exc).__name__} in {'/'.join(parts[-2:])}:{last.lineno} ({last.name})"


def traceback_text(exc: BaseException) -> str:
    """The traceback's frames and the exception's type, without its message (see where_raised)."""
    return "".join(traceback.format_tb(exc.__traceback__)) + type(exc).__name__
