"""The pages people see: signage player, kiosk, store-IT status page; registered on the edge's Flask app.

Templates and static files are vendored (no CDN): store devices keep working without the internet.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from edge.service import Service


def handoff_token(service: Service, kiosk: str, session: str, customer: str | None) -> str:
    """The token a kiosk's "continue on your phone" QR carries, as `{qr.base_url}/q/<token>`.

    A signed, single-use, short-lived handoff token (edge.journeys.mint_handoff); the kiosk session and
    the shopper stay server-side. Without `[qr] secret` the code is an opaque random token, which the
    landing page refuses with "QR codes are not set up".
    """
    from edge.journeys import mint_handoff
    from edge.qr import QrError

    try:
        return mint_handoff(service, kiosk, session, customer)
    except QrError:
        return secrets.token_urlsafe(18)


def register(app: Flask, service: Service) -> None:
    """Add the pages and their streams to the edge app (Service._register_ui calls this)."""
    from kiosk_ui.pages import create_blueprint

    blueprint, hub = create_blueprint(service)
    app.register_blueprint(blueprint)
    app.extensions["kiosk_ui"] = hub  # the open page streams (tests, status page)
    service.metrics.gauge("instore_edge_page_streams", lambda: float(hub.count()))
