"""Short texts for people: cut at a word boundary with an ellipsis, never mid-word; network errors in words."""

from __future__ import annotations

import re

_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\"()\[\]]+)")
_TLS = re.compile(r"\[SSL: ([A-Z0-9_]+)\] ([^'\"()\[\]]+)")
# The issuer is unknown to this machine (not a wrong name, not an expired certificate): a private CA.
_UNKNOWN_ISSUER = ("self-signed certificate", "self signed certificate", "unable to get local issuer certificate")
CA_HINT = ("if the chain signs its own certificates, give the edge its CA: REQUESTS_CA_BUNDLE=<the CA's .pem> "
           "in /etc/instore-edge/env")


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
    """What went wrong on the network, in the operating system's words ("Connection refused") or OpenSSL's
    (with what to do when the certificate's issuer is unknown here), else the exception's text shortened:
    requests' own messages nest three exceptions' reprs in one line, and the reason is at the end."""
    text = str(exc)
    tls = _TLS.findall(text)
    if tls:
        code, detail = tls[-1]
        detail = detail.strip().rstrip(".")
        if code == "CERTIFICATE_VERIFY_FAILED" and any(s in detail for s in _UNKNOWN_ISSUER):
            return f"TLS: its certificate is not trusted here ({detail}); {CA_HINT}"
        if code == "WRONG_VERSION_NUMBER":  # https:// to a server that answers in plain HTTP
            return f"TLS: {detail}: does that address speak https? (a plain-HTTP port answers like this)"
        return shorten(f"TLS: {detail}", limit)
    found = _ERRNO.findall(text)
    if found:
        return found[-1].strip().rstrip(".")
    lowered = text.lower()
    if "timed out" in lowered:
        return "timed out"
    return shorten(f"{type(exc).__name__}: {text}", limit)
