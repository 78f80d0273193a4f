"""What the pages need of the running edge: one small Protocol, so the pages never import edge.app."""

from __future__ import annotations

from typing import Any, Protocol

from edge.config import Config
from edge.domain.catalogue import Catalogue


class Store(Protocol):
    """The running edge as the pages see it (edge.app.App implements it)."""

    cfg: Config
    catalogue: Catalogue  # the one catalogue (edge.domain.catalogue): products and prices

    @property
    def stopping(self) -> bool:
        """True once the edge is stopping: streams end, so pages reconnect to the next process."""

    def readiness(self) -> dict[str, dict[str, Any]]: ...

    def sync_status(self) -> dict[str, Any]: ...

    def displays(self) -> dict[str, dict[str, Any]]:
        """What every screen and kiosk shows now."""

    def display(self, ident: str) -> dict[str, Any] | None:
        """What one screen or kiosk shows now."""

    def fallback(self, ident: str) -> dict[str, Any]:
        """What a screen shows when no rule holds it: its playlist."""

    def kiosk_view(self, code: str) -> dict[str, Any]:
        """What a kiosk may show of the shopper behind a code (the consent gate applied)."""

    def products_for(self, zone: str | None) -> list[dict[str, Any]]:
        """The store's own catalogue, a zone's products first."""

    def mint_handoff(self, kiosk: str, session: str, customer: str | None) -> str:
        """A single-use handoff token for the kiosk's "continue on your phone" QR (QrError without a secret)."""
