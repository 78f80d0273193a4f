"""The `instore-edge` command: run the service, validate a config, start the demo, simulate shoppers."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from edge.config import Config, ConfigError, load_config

log = logging.getLogger(__name__)


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _config(args: argparse.Namespace) -> Config | None:
    """The validated config, or None after printing every problem (the command then exits 1)."""
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None:
        return 1
    print(f"{args.config}: OK (store {cfg.store.id!r}: {len(cfg.zones)} zones, {len(cfg.gateways)} gateways, "
          f"{len(cfg.screens)} screens, {len(cfg.rules)} rules)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print("instore-edge: not starting: fix the config above (check it with `instore-edge check-config`).",
              file=sys.stderr)
        return 1
    from edge.app import App, tune_gc
    from edge.store.db import StoreError

    try:
        app = App(cfg)
    except StoreError as exc:
        print(f"instore-edge: not starting: {exc}", file=sys.stderr)
        return 1
    tune_gc()
    return app.run_forever()


def cmd_demo(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    from edge.demo import run_demo

    return run_demo(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    cfg = _config(args)
    if cfg is None:
        return 1
    from edge.simulate import run_simulator

    return run_simulator(cfg, shoppers=args.shoppers, rate=args.rate, duration_s=args.duration, seed=args.seed,
                         speed=args.speed, journeys=args.journeys)


def _live_sync_status(base: str, token: str | None) -> tuple[dict | None, str]:
    """The running edge's sync status (GET /api/v1/sync), or None and why it could not be had."""
    import requests

    if not token:
        return None, "no admin token in the config to ask the running edge"
    try:
        r = requests.get(f"{base}/api/v1/sync", headers={"Authorization": f"Bearer {token}"}, timeout=3)
    except requests.RequestException:
        return None, f"no edge answered at {base}"
    if r.status_code != 200:
        return None, f"the edge at {base} answered HTTP {r.status_code}"
    try:
        body = r.json()
    except ValueError:
        return None, f"the edge at {base} did not answer JSON"
    return (body, f"the running edge at {base}") if isinstance(body, dict) else (None, "unexpected answer")


def cmd_sync_status(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path
    from zoneinfo import ZoneInfo

    cfg = _config(args)
    if cfg is None:
        return 1
    from edge.maintenance import http_base
    from sync.report import status_lines

    status, why = _live_sync_status(http_base(cfg.http.host, cfg.http.port), cfg.http.tokens.admin)
    live = status is not None
    if status is None:
        from edge.uplink import UplinkReads, sync_settings
        from sync.client import status as stored_status

        if not Path(cfg.db.path).exists():
            print(f"no database at {cfg.db.path} and {why}: has the edge run with this config?", file=sys.stderr)
            return 1
        status = stored_status(sync_settings(cfg), UplinkReads(cfg.db.path))
        why = f"the database {cfg.db.path} ({why})"
    if args.json:
        print(json.dumps({**status, "read_from": "edge" if live else "database"}, indent=2, default=str))
        return 0
    for line in status_lines(status, now=time.time(), tz=ZoneInfo(cfg.store.timezone), source=why, live=live):
        print(line)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None:
        return 1
    from edge.maintenance import backup

    try:
        info = backup(cfg.db.path, args.dest)
    except Exception as exc:  # any failure is reported, never a traceback for store IT
        print(f"instore-edge: backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backup {info['path']}: {info['bytes']} bytes, {info['events']} events, integrity {info['integrity']}")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None:
        return 1
    from edge.maintenance import erase_via_http, http_base

    ok, message = erase_via_http(http_base(cfg.http.host, cfg.http.port), cfg.http.tokens.admin, args.customer)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def cmd_gen_secret(args: argparse.Namespace) -> int:
    """Fresh random secrets, so nobody types one: one value, or an environment file with every secret."""
    from edge.config import ENV_PREFIX
    from edge.config.secrets import SECRET_KEYS, generate

    if not args.env:
        print(generate())
        return 0
    for key in SECRET_KEYS:
        print(f"{ENV_PREFIX}{'_'.join(key).upper()}={generate()}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("instore-edge")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instore-edge",
        description="Edge service for an omnichannel store: hears the store over MQTT, keeps shoppers' "
                    "context in SQLite, syncs with the central profile store, drives kiosks and signage.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the edge service")
    p.add_argument("-c", "--config", required=True, help="store config file (TOML)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a store config: exit 0, or every error with its key path")
    p.add_argument("config", help="store config file (TOML)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("gen-secret", help="print a fresh random secret for a token, the QR key or a password")
    p.add_argument("--env", action="store_true", help="print a line INSTORE_EDGE_...=<fresh secret> for every "
                   "secret of the store config (for /etc/instore-edge/env)")
    p.set_defaults(func=cmd_gen_secret)

    p = sub.add_parser("demo", help="run broker, edge and shopper simulator on this machine; prints URLs")
    p.add_argument("--http-port", type=int, default=8080, help="edge HTTP port (default 8080)")
    p.add_argument("--mqtt-port", type=int, default=0, help="MQTT port (default: a free one)")
    p.add_argument("--data-dir", default=None, help="where the demo keeps its files (default: a temp folder)")
    p.add_argument("--embedded-broker", action="store_true", help="use the embedded Python broker even if "
                   "Mosquitto is installed")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: Ctrl-C)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("backup", help="online backup of the edge database to a file (safe while running)")
    p.add_argument("-c", "--config", required=True, help="store config file (TOML)")
    p.add_argument("dest", help="backup file to write")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("erase", help="erase a customer from the running edge (DELETE /api/v1/customers/<id>)")
    p.add_argument("customer", help="customer id")
    p.add_argument("-c", "--config", required=True, help="store config file (TOML)")
    p.set_defaults(func=cmd_erase)

    p = sub.add_parser("sync", help="sync with the central profile store: status")
    sync_sub = p.add_subparsers(dest="sync_command", required=True, metavar="SUBCOMMAND")
    q = sync_sub.add_parser("status", help="outbox backlog, last push/pull, cursor, circuit breaker, last error")
    q.add_argument("-c", "--config", required=True, help="store config file (TOML)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_sync_status)

    from edge import qr as qr_cmd

    qr_cmd.add_parser(sub)

    from edge.staff import cli as staff_cli

    staff_cli.add_parser(sub)

    from sync.central import cli as central_cli

    central_cli.add_parser(sub)

    p = sub.add_parser("simulate", help="publish realistic shopper journeys to the store's broker")
    p.add_argument("-c", "--config", required=True, help="store config file (TOML)")
    p.add_argument("--shoppers", type=int, default=20, help="shoppers in the store at once")
    p.add_argument("--rate", type=float, default=5.0, help="sightings per second per shopper (about)")
    p.add_argument("--duration", type=float, default=0, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=None, help="random seed, for repeatable journeys")
    p.add_argument("--speed", type=float, default=1.0, help="time compression: 10 = ten times faster than life")
    p.add_argument("--journeys", type=int, default=None, help="stop after this many shoppers' journeys")
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
