"""What a page receives of a screen's content: the display payload, minus what a screen has no use for.

Signage is public: the customer id never goes to the page. Rule content gets the title, body and
image of its content item (from config) unless its data sets its own. Images must be served by the edge
(an absolute path, not a URL elsewhere): store screens keep working offline and load nothing from the internet.
"""

from __future__ import annotations

from typing import Any

from flask import Response, render_template

# What a kiosk shows when no rule targets it (Displays.fallback): its own UI, nothing pushed.
from edge.domain.displays import KIOSK_IDLE_CONTENT_ID, PLAYLIST_CONTENT_ID

from edge.config import Config



def local_image(value: Any) -> str | None:
    """An absolute path on the edge itself ("/media/autumn.jpg"), or None: URLs elsewhere, data URLs,
    relative paths and junk are dropped."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or len(value) > 500:
        return None
    if "\\" in value or any(ord(c) < 32 for c in value):
        return None
    return value


def _text(value: Any, limit: int = 500) -> str:
    return "" if value is None else str(value)[:limit]


def _duration(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 8.0
    return min(max(seconds, 1.0), 3600.0)


def screen_view(cfg: Config, payload: dict[str, Any] | None) -> dict[str, Any] | None:
    if not payload:
        return None
    content_id = _text(payload.get("content_id"), 64)
    view: dict[str, Any] = {"content_id": content_id, "template": _text(payload.get("template"), 64),
                            "expires_at": payload.get("expires_at"), "rule": payload.get("rule"),
                            "reason": _text(payload.get("reason")), "ts": payload.get("ts")}
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    view["idle"] = content_id in (PLAYLIST_CONTENT_ID, KIOSK_IDLE_CONTENT_ID)  # the fallback, no rule active
    if content_id == KIOSK_IDLE_CONTENT_ID:
        view["expires_at"] = None
        return view
    if content_id == PLAYLIST_CONTENT_ID:
        view["items"] = [{"content_id": _text(i.get("content_id"), 64), "template": _text(i.get("template"), 64),
                          "title": _text(i.get("title")), "body": _text(i.get("body"), 2000),
                          "image": local_image(i.get("image")), "duration_s": _duration(i.get("duration_s"))}
                         for i in data.get("items") or [] if isinstance(i, dict)]
        view["expires_at"] = None
        return view
    item = cfg.content_item(content_id)
    view["title"] = _text(data.get("title") if data.get("title") is not None else (item.title if item else ""))
    view["body"] = _text(data.get("body") if data.get("body") is not None else (item.body if item else ""), 2000)
    view["subtitle"] = _text(data.get("subtitle"))
    view["image"] = local_image(data.get("image") if data.get("image") is not None else (item.image if item else None))
    return view


def error_page(status: int, title: str, message: str, *, token_form: bool = False) -> Response:
    return Response(render_template("error.html", status=status, title=title, message=message,
                                    token_form=token_form), status=status, mimetype="text/html")
