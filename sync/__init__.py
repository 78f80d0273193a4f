"""Edge ⇄ central sync: the shared wire types (`protocol`), the edge's client, the reference central
profile store (`central`) used for pilots, the demo and tests, and the HTTP plumbing both servers use
(`httpserver`, `jsonbody`, `clients`): the lower layer, which the edge imports and never the reverse."""

from __future__ import annotations


def package_version() -> str:
    """The installed instore-edge version (what an edge reports to the central, and the central shows)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("instore-edge")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
