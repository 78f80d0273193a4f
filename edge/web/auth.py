"""Who a request is: roles from bearer tokens (constant-time), page tokens from the URL or a cookie, the
client's address behind trusted proxies, and the JSON error every refusal is.

Pages authenticate with a bearer header, a `?token=` on the URL (how a device in kiosk mode is set up) or,
after one of those succeeded, an HttpOnly cookie per role, which is also what lets an EventSource (no
custom headers) and the status page's links authenticate. The edge app puts itself in `g.edge` for each
request (edge.web.create_app): the tokens and trusted proxies come from there.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Response, g, jsonify, request
from flask_babel import gettext as _

from sync.clients import client_address
from edge.i18n import N_

ROLES = ("admin", "kiosk", "signage")
COOKIE = "instore_edge_{role}"
COOKIE_MAX_AGE = {"admin": 12 * 3600, "kiosk": 30 * 24 * 3600, "signage": 30 * 24 * 3600}
ROLE_HINT = {"signage": N_("the signage token ([http.tokens] signage)"),
             "kiosk": N_("the kiosk token ([http.tokens] kiosk)"), "admin": N_("the admin token ([http.tokens] admin)")}


def api_error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def client_ip() -> str:
    """The requesting client's address (behind a trusted proxy: the address it forwarded)."""
    return client_address(request.environ, g.edge.trusted_proxies)


def token_role(token: str | None) -> str | None:
    """The role a token grants (admin grants everything); constant-time comparisons."""
    if not token:
        return None
    tokens = g.edge.cfg.http.tokens
    found = None
    for role in ROLES:
        expected = getattr(tokens, role)
        if expected and hmac.compare_digest(expected.encode(), token.encode()):
            found = role
    return found


def require_role(*roles: str) -> Callable:
    """Endpoints that change state or return PII: 401 without a token, 403 with a token of another role."""

    def wrap(fn: Callable) -> Callable:
        @wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            refused = refusal(bearer_token(), roles)
            if refused is not None:
                return refused
            return fn(*args, **kwargs)

        return inner

    return wrap


def refusal(token: str | None, roles: tuple[str, ...]) -> tuple[Response, int] | None:
    """None when `token` grants one of `roles` (or admin), else the 401/403 to answer with."""
    if token is None:
        return api_error(401, "unauthorized", "missing bearer token: send 'Authorization: Bearer <token>' "
                         f"with the {' or '.join(roles)} token")
    role = token_role(token)
    if role is None:
        return api_error(401, "unauthorized", "unknown token")
    if role != "admin" and role not in roles:
        return api_error(403, "forbidden", f"this endpoint needs the {' or '.join(roles)} token, not the {role} token")
    g.role = role
    return None


@dataclass(frozen=True, slots=True)
class Auth:
    """Who a page request is: a role, or the status and message to refuse it with."""

    role: str | None
    token: str | None = None
    source: str | None = None
    status: int = 200
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.role is not None


def page_auth(role: str) -> Auth:
    """Bearer header, then ?token=, then this role's (or admin's) cookie; the admin token grants all. The
    refusal's message is for the page's error page: in the page's language."""
    token, source = bearer_token(), "header"
    if token is None:
        token, source = request.args.get("token") or None, "query"
    if token is None:
        for r in dict.fromkeys((role, "admin")):
            token, source = request.cookies.get(COOKIE.format(role=r)) or None, "cookie"
            if token:
                break
    needs = _(ROLE_HINT[role])
    if not token:
        return Auth(None, status=401, message=_("This page needs %(token)s: add ?token=<token> to its address, or "
                                                "send it as 'Authorization: Bearer <token>'.", token=needs))
    found = token_role(token)
    if found is None:
        return Auth(None, status=401, message=_("Unknown token. This page needs %(token)s.", token=needs))
    if found != role and found != "admin":
        return Auth(None, status=403, message=_("This page needs %(token)s, not the %(role)s token.", token=needs,
                                                role=found))
    return Auth(found, token, source)


def remember(resp: Response, auth: Auth) -> Response:
    """Keep a header or query token as a cookie, for the page's stream and for reloads without it."""
    if auth.ok and auth.source in ("header", "query") and auth.role and auth.token:
        resp.set_cookie(COOKIE.format(role=auth.role), auth.token, max_age=COOKIE_MAX_AGE[auth.role],
                        httponly=True, samesite="Strict", path="/")
    return resp


def admin_refusal() -> tuple[Response, int] | None:
    """For the admin's own pages' fetches: the admin token as a bearer header or the admin page cookie (set
    HttpOnly, SameSite=Strict by `remember`), never on the URL."""
    token = bearer_token()
    if token is None:
        token = request.cookies.get(COOKIE.format(role="admin")) or None
    if token is None:
        return api_error(401, "unauthorized", "missing bearer token: send 'Authorization: Bearer <token>' with "
                         "the admin token")
    return refusal(token, ("admin",))
