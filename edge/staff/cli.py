"""`instore-edge staff add|list|disable`: staff accounts in the store's database, safe while the edge runs.

The PIN is read from standard input (a prompt without echo on a terminal), never from the command line,
where `ps` and the shell history would show it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sqlite3
import sys

from edge.staff import accounts


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("staff", help="staff accounts of the staff app (/staff): add, list, disable")
    staff_sub = p.add_subparsers(dest="staff_command", required=True, metavar="SUBCOMMAND")
    q = staff_sub.add_parser("add", help="add a staff member (or reset their PIN); the PIN is read from stdin")
    q.add_argument("-c", "--config", required=True, help="store config file (TOML)")
    q.add_argument("--id", required=True, dest="staff_id", help="staff id they log in with")
    q.add_argument("--name", required=True, help="their name, as colleagues see it")
    q.add_argument("--role", default="associate", choices=accounts.ROLES, help="default: associate")
    q.set_defaults(func=cmd_add)
    q = staff_sub.add_parser("list", help="list staff accounts")
    q.add_argument("-c", "--config", required=True, help="store config file (TOML)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_list)
    q = staff_sub.add_parser("disable", help="disable a staff account and end its sessions")
    q.add_argument("staff_id", help="staff id")
    q.add_argument("-c", "--config", required=True, help="store config file (TOML)")
    q.set_defaults(func=cmd_disable)


def _open(args: argparse.Namespace) -> sqlite3.Connection | None:
    from edge.config import ConfigError, load_config
    from edge.store.db import StoreError
    from edge.store.writer import open_writer

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:  # every problem at once, as `instore-edge check-config` prints them
        print(exc, file=sys.stderr)
        return None
    try:
        return open_writer(cfg.db.path)
    except StoreError as exc:
        print(f"instore-edge staff: {exc}", file=sys.stderr)
        return None


def _read_pin() -> str:
    if sys.stdin.isatty():
        pin = getpass.getpass("PIN (4 to 12 digits): ")
        if getpass.getpass("PIN again: ") != pin:
            raise accounts.StaffError("the two PINs differ")
        return pin
    return sys.stdin.readline()


def cmd_add(args: argparse.Namespace) -> int:
    conn = _open(args)
    if conn is None:
        return 1
    try:
        pin = _read_pin()
        with conn:
            account = accounts.add(conn, args.staff_id, args.name, args.role, pin)
    except accounts.StaffError as exc:
        print(f"instore-edge staff add: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(f"staff {account.staff_id} ({account.role}) can now log in at /staff")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    conn = _open(args)
    if conn is None:
        return 1
    try:
        rows = accounts.listing(conn)
    finally:
        conn.close()
    if args.json:
        print(json.dumps({"staff": rows}))
        return 0
    for r in rows:
        print(f"{r['staff_id']}\t{r['role']}\t{'active' if r['active'] else 'disabled'}\t{r['name']}")
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    conn = _open(args)
    if conn is None:
        return 1
    try:
        with conn:
            found = accounts.disable(conn, args.staff_id)
    finally:
        conn.close()
    if not found:
        print(f"instore-edge staff disable: no staff {args.staff_id!r} (see `instore-edge staff list`)",
              file=sys.stderr)
        return 2
    print(f"staff {args.staff_id} disabled; their sessions have ended")
    return 0
