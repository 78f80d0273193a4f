"""`instore-edge central`: run the reference central profile store.

    instore-edge central --db central.db --port 8600 --admin-token T --store-token demo=TOKEN [--demo-data]
    instore-edge central --db postgresql://user:pass@host:5432/central --workers 4 ...

`--db` is a SQLite file (the default, embedded) or a postgresql:// URL (schema migrated at start).
`--workers 1` serves from this process (waitress); more run that many worker processes on one port
(gunicorn, see prefork.py).

Tokens may come from the environment instead of the command line (where `ps` would show them):
INSTORE_CENTRAL_ADMIN_TOKEN, and INSTORE_CENTRAL_STORE_TOKENS="store1=token1,store2=token2"; a chain's
store tokens from a file (--store-tokens-file, one STORE=TOKEN a line: 2,000 stores' tokens do not fit in
one environment variable, which Linux caps at 128 KiB). A --store-token for a store replaces that store's
token from the file, and the file's the environment's.
Standalone: `python -m sync.central.cli ...` takes the same options.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

ENV_ADMIN = "INSTORE_CENTRAL_ADMIN_TOKEN"
ENV_STORES = "INSTORE_CENTRAL_STORE_TOKENS"
DEFAULT_PORT = 8600

log = logging.getLogger("instore_central")


class TokenError(ValueError):
    """Tokens given on the command line or in the environment that cannot be used."""


def _store_token(text: str) -> tuple[str, str]:
    store, sep, token = text.partition("=")
    store, token = store.strip(), token.strip()
    if not sep or not store or not token:
        # Never echo the text: it may be a bare token.
        raise TokenError("a store token must be given as STORE=TOKEN (e.g. --store-token demo=s3cret), with a "
                         "store id and a non-empty token")
    return store, token


def read_store_tokens(path: str) -> dict[str, str]:
    """{store: token} from a tokens file: one `STORE=TOKEN` a line, blank lines and `#` comments skipped.
    Refuses a file every user of the machine can read (the tokens let anyone push as a store), a store named
    twice, and a line that is not STORE=TOKEN (by its number: the line itself may be a bare token)."""
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise TokenError(f"--store-tokens-file {path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TokenError(f"--store-tokens-file {path}: not UTF-8 text") from None
    if mode & 0o004:
        raise TokenError(f"--store-tokens-file {path}: every user of this machine can read it; make it readable "
                         f"by the central's user only (chmod 640 {path}, owner root, group the service's)")
    stores: dict[str, str] = {}
    lines_of: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            store, token = _store_token(line)
        except TokenError as exc:
            raise TokenError(f"--store-tokens-file {path}, line {number}: {exc}") from None
        if store in stores:
            raise TokenError(f"--store-tokens-file {path}: store {store[:64]!r} is on lines {lines_of[store]} and "
                             f"{number}: keep one token per store")
        stores[store], lines_of[store] = token, number
    return stores


def resolve_tokens(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """(admin token, {store: token}) from the arguments, the tokens file and the environment (in that order of
    precedence); raises TokenError."""
    admin = (args.admin_token or environ.get(ENV_ADMIN, "")).strip()
    if not admin:
        raise TokenError(f"no admin token: pass --admin-token TOKEN or set {ENV_ADMIN}")
    stores: dict[str, str] = {}
    for item in (environ.get(ENV_STORES) or "").split(","):
        if item.strip():
            try:
                store, token = _store_token(item)
            except TokenError as exc:
                raise TokenError(f"{ENV_STORES}: {exc}") from None
            stores[store] = token
    if getattr(args, "store_tokens_file", None):
        stores.update(read_store_tokens(args.store_tokens_file))
    for item in args.store_token or []:
        store, token = _store_token(item)
        stores[store] = token
    return admin, stores


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default="central.db",
                   help="a SQLite file (created when absent; default central.db) or a PostgreSQL URL "
                        "postgresql://user:password@host:port/dbname (the schema is migrated at start)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--admin-token", default=None, metavar="TOKEN",
                   help=f"bearer token of the admin API (or set {ENV_ADMIN})")
    p.add_argument("--store-token", action="append", metavar="STORE=TOKEN",
                   help=f"a store's bearer token, repeatable (or set {ENV_STORES}=\"s1=tok1,s2=tok2\")")
    p.add_argument("--store-tokens-file", default=None, metavar="PATH",
                   help="a file of the stores' bearer tokens, one STORE=TOKEN a line (# comments), readable by the "
                        "central's user only: for a chain (an environment variable holds at most 128 KiB)")
    p.add_argument("--demo-data", action="store_true",
                   help="load the demo shoppers (C-0001.., device:app-<n>) when the database is empty")
    p.add_argument("--workers", type=_positive, default=1,
                   help="worker processes on the one port (default 1: this process serves); each is stateless, "
                        "so use PostgreSQL for more than one")
    p.add_argument("--threads", type=_positive, default=None,
                   help="HTTP threads per worker (default: two per store token + 16; a long-polling store holds "
                        "one while it waits, and pushes meanwhile)")
    p.add_argument("--retention-days", type=int, default=90, metavar="DAYS",
                   help="drop received events older than this (event time; 0 keeps them; default 90)")
    p.add_argument("--pool-size", type=_positive, default=10,
                   help="PostgreSQL connections per worker (default 10)")
    p.add_argument("--push-budget", type=float, default=100.0, metavar="PUSHES_PER_S",
                   help="pushes a second the central takes from the whole fleet (default 100): with more active "
                        "stores than that, each is asked to push less often than once a second (0: never ask)")
    p.add_argument("--quiet-after-s", type=float, default=120.0, metavar="SECONDS",
                   help="the fleet view calls a store quiet when it was not heard from for this long (default 120; "
                        "an edge reports at least every 30 s)")
    p.add_argument("--unhomed-profiles", choices=("every-store", "seen-stores"), default="every-store",
                   help="where the changes of a profile without a home_store go: to every store (default), or only "
                        "to the stores that saw the shopper or hold an order of theirs (the rest fetch on demand)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `central` subcommand to an `instore-edge` subparsers object; it runs `run(args)`."""
    p = subparsers.add_parser(
        "central", help="run the central profile store (SQLite for pilots and the demo, PostgreSQL for a chain)",
        description="The reference central profile store: the edge pushes events to it and pulls profile "
                    "changes from it. SQLite file or PostgreSQL, bearer token per store, admin API under /v1/admin.",
        epilog=f"Tokens may come from the environment: {ENV_ADMIN}, {ENV_STORES}=\"s1=tok1,s2=tok2\"; the stores' "
               "from --store-tokens-file.")
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="instore-edge central",
        description="Run the reference central profile store: the edge pushes events to it and pulls profile "
                    "changes from it.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def settings_from(args: argparse.Namespace) -> Any:
    from sync.central.storage import Settings

    days = getattr(args, "retention_days", 90)
    return Settings(retention_days=days if days and days > 0 else None,
                    broadcast_unhomed=getattr(args, "unhomed_profiles", "every-store") == "every-store",
                    pool_size=getattr(args, "pool_size", 10), push_budget=getattr(args, "push_budget", 100.0))


def _stores_text(stores: Mapping[str, str]) -> str:
    names = sorted(stores)
    if len(names) > 8:
        return f"{len(names)} ({', '.join(names[:3])}, …)"
    return ", ".join(names) or "none"


def _describe(db: str) -> str:
    """The --db value for messages: a URL without its password."""
    if db.startswith(("postgresql://", "postgres://")):
        from sync.central.storage.postgres import redact

        return redact(db)
    return db


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (2: bad tokens, 1: cannot start)."""
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        admin, stores = resolve_tokens(args, os.environ)
    except TokenError as exc:
        print(f"instore-edge central: {exc}", file=sys.stderr)
        return 2
    if not stores:
        log.warning("no store tokens: only the admin token can push events (add --store-token STORE=TOKEN)")
    if getattr(args, "workers", 1) > 1:
        return _run_workers(args, admin, stores)
    from sync.central.server import CentralServer
    from sync.central.storage import DatabaseError

    try:
        server = CentralServer(args.db, admin, stores, host=args.host, port=args.port, demo_data=args.demo_data,
                               threads=args.threads, settings=settings_from(args),
                               quiet_after_s=args.quiet_after_s).start()
    except ValueError as exc:
        print(f"instore-edge central: not starting: {exc}", file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(f"instore-edge central: not starting: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"instore-edge central: not starting: cannot listen on {args.host}:{args.port}: {exc}; pick "
              "another --port", file=sys.stderr)
        return 1
    profiles = server.store.stats()["profiles"]
    print(f"central profile store on {server.url}/ (db {_describe(str(args.db))}: {profiles} profiles; stores: "
          f"{_stores_text(stores)})", flush=True)
    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: done.set())
    try:
        while not done.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    log.info("stopping the central store")
    server.stop()
    return 0


def _run_workers(args: argparse.Namespace, admin: str, stores: dict[str, str]) -> int:
    """--workers N: migrate (and load the demo data) once here, then fork N workers under gunicorn."""
    import shutil
    import tempfile

    # Before prometheus_client is imported: the workers' metrics add up through files in this folder.
    metrics_dir = tempfile.mkdtemp(prefix="instore-central-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return _serve_workers(args, admin, stores)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_workers(args: argparse.Namespace, admin: str, stores: dict[str, str]) -> int:
    from sync.central.app import create_app, _check_tokens
    from sync.central.demo_data import load_demo_data
    from sync.central.prefork import serve
    from sync.central.server import auto_threads
    from sync.central.storage import DatabaseError, open_storage

    settings = settings_from(args)
    try:
        _check_tokens(admin, stores)
        storage = open_storage(args.db, settings)
    except ValueError as exc:
        print(f"instore-edge central: not starting: {exc}", file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(f"instore-edge central: not starting: {exc}", file=sys.stderr)
        return 1
    try:
        if args.demo_data and (loaded := load_demo_data(storage)):
            log.info("loaded the demo data set: %d profiles", loaded)
        profiles = storage.stats()["profiles"]
    finally:
        storage.close()
    if storage.engine == "sqlite":
        log.warning("%d workers on one SQLite file: writes queue on its lock; PostgreSQL scales", args.workers)

    def ready(port: int) -> None:
        host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        print(f"central profile store on http://{host}:{port}/ (db {_describe(str(args.db))}: {profiles} profiles; "
              f"{args.workers} workers; stores: {_stores_text(stores)})", flush=True)

    return serve(lambda: create_app(args.db, admin, stores, settings=settings, quiet_after_s=args.quiet_after_s,
                                    workers=args.workers),
                 host=args.host, port=args.port,
                 workers=args.workers, threads=args.threads or auto_threads(len(stores)), on_ready=ready,
                 verbose=getattr(args, "verbose", False))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
