"""The central store's marketing console (campaigns): server-rendered pages behind the admin token."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from sync.central.storage import Storage


def register(app: Flask, admin_token: str, central: Storage, known_stores: Callable[[], list[str]]) -> None:
    """Add the console's pages to the central store's app."""
