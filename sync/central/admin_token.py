"""How the central store's pages (the fleet view, sync/central/pages.py; the campaign console,
sync/central/console.py) take the admin token: an `Authorization: Bearer` header, else `?token=`, else the
HttpOnly cookie a first visit with the token leaves, so a bookmarked page works without the token in its
address (as the edge's pages do, edge.pages.blueprint)."""

from __future__ import annotations

import hmac

from flask import Response, request

COOKIE = "instore_central_admin"
COOKIE_MAX_AGE = 12 * 3600


def given() -> tuple[str | None, str]:
    """The token this request carries and where it came from: "header", "query" or "cookie"."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip(), "header"
    if request.args.get("token"):
        return request.args["token"], "query"
    return request.cookies.get(COOKIE) or None, "cookie"


def matches(token: str | None, expected: bytes) -> bool:
    """In constant time: a wrong token learns nothing from how long the answer took."""
    return bool(token) and hmac.compare_digest(token.encode(), expected)  # type: ignore[union-attr]


def remember(resp: Response, token: str | None, source: str) -> Response:
    """A token sent in the header or the address is kept in the cookie, for the next pages. Over HTTPS (here,
    or at the proxy in front: X-Forwarded-Proto) the cookie is Secure, so the browser never sends the admin
    token over plain HTTP, not even to the port that only redirects. The header is believed from anyone: it
    can only add the flag, and a browser on plain HTTP then keeps no cookie, asking for the token again."""
    if token and source in ("header", "query"):
        secure = request.is_secure or request.headers.get("X-Forwarded-Proto", "").strip().lower() == "https"
        resp.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE, httponly=True, samesite="Strict", path="/",
                        secure=secure)
    return resp
