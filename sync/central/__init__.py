"""The reference central profile store: the retailer's source of truth for profiles, as the edge sees it.

Used for pilots, the demo and tests: `instore-edge central ...` (cli), `create_app(...)` (app), an
in-thread `CentralServer` (server), worker processes (prefork), the data behind one interface with a SQLite
and a PostgreSQL engine (storage) and the seeded demo data set (demo_data).
Imports are lazy so that building the `instore-edge` command line does not load Flask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sync.central.app import create_app
    from sync.central.server import CentralServer

__all__ = ["create_app", "CentralServer"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from sync.central.app import create_app

        return create_app
    if name == "CentralServer":
        from sync.central.server import CentralServer

        return CentralServer
    raise AttributeError(f"module 'sync.central' has no attribute {name!r}")
