"""What the web layer needs of the running edge: one small Protocol, so edge.web never imports edge.app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from edge.config import Config
from edge.domain.campaigns import Campaigns
from edge.domain.catalogue import Catalogue
from edge.domain.shoppers import Shopper
from edge.metrics import Metrics
from edge.model import Event, Message
from edge.qr import Signer, Token
from edge.store.writer import Writer
from sync.clients import TrustedProxies


class Edge(Protocol):
    """The running edge as the HTTP API and the shoppers' landing pages see it (edge.app.App implements it)."""

    cfg: Config
    catalogue: Catalogue  # the one catalogue (edge.domain.catalogue): products and prices
    campaigns: Campaigns  # the central's campaigns applied here (edge.domain.campaigns): a product page's offer
    metrics: Metrics
    signer: Signer
    trusted_proxies: TrustedProxies

    def submit(self, msg: Message) -> None:
        """Hand a message to the writer (as MQTT does); it calls msg.done after the commit."""

    def run_in_writer(self, fn: Callable[[Writer], Any], timeout: float = 10.0) -> Any:
        """Run a write in the writer's transaction; its value once committed (TimeoutError, RuntimeError)."""

    def record_event(self, event: Event) -> bool:
        """Record an event the edge makes itself (log + outbox, sync woken): True when new."""

    def erase(self, customer: str) -> bool:
        """Erase a shopper everywhere; True once committed here."""

    def consume(self, tok: Token, by: str) -> bool:
        """Use a single-use QR token: True the first time only."""

    def personal(self, customer: str | None) -> Shopper | None:
        """The shopper's profile when it may shape what they see (the consent gate), else None."""

    def readiness(self) -> dict[str, dict[str, Any]]: ...

    def dead_threads(self) -> dict[str, str]: ...

    def gateways(self) -> list[dict[str, Any]]: ...

    def displays(self) -> dict[str, dict[str, Any]]: ...

    def sync_status(self) -> dict[str, Any]: ...
