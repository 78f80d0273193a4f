"""Short texts for people: cut at a word boundary with an ellipsis, never mid-word; network errors in words."""

from __future__ import annotations

import re

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
