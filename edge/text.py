"""Short texts for people: cut at a word boundary, network errors in words, where an exception was raised."""

from __future__ import annotations

import re
import traceback

_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\"()\[\]]+)")


def shorten(text: str, limit: int) -> str:
    """`text` in at most `limit` characters: whole, or cut at the last space before the limit, plus "…"."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:max(1, limit - 1)]
    space = cut.rfind(" ")
    if space >= limit // 2:  # a word boundary not too far back; else (one long token) cut the token
        cut = cut[:space]
    return cut.rstrip(" ,;:(-") + "…"


def network_reason(exc: BaseException, limit: int = 160) -> str:
    """What went wrong on the network, in the operating system's words ("Connection refused"), else the
    exception's text shortened: requests' own messages nest three exceptions' reprs in one line."""
    text = str(exc)
    found = _ERRNO.findall(text)
    if found:
        return found[-1].strip().rstrip(".")
    lowered = text.lower()
    if "timed out" in lowered:
        return "timed out"
    return shorten(f"{type(exc).__name__}: {text}", limit)


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
