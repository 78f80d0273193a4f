"""The byte check after an erasure (sync/scrub.py), on real SQLite files: copies of erased values that
b-tree rebalancing left in page gaps, or that a writer without secure_delete left on free pages, are found and
rebuilt away, every live row staying as it was; values that live rows still hold (another shopper's) are no
traces and cost no rebuild."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from edge.privacy import erase_rows
from edge.store.db import truncate_wal
from sync.scrub import REWRITE_MAX_PAGES, find_traces, rebuild
from edge.store.writer import open_writer


def file_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def everything(conn: sqlite3.Connection, table: str) -> list[tuple]:
    return conn.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid").fetchall()


def churned_profiles(db: Path, n: int = 600) -> sqlite3.Connection:
    """A profile cache whose rows changed size over three versions (carts filling up and emptying): splits
    and merges of its pages moved rows, leaving copies of them in page gaps."""
    conn = open_writer(db)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO profiles(customer_id, version, profile, first_name, updated_at) VALUES (?,1,?,?,0)",
                     ((f"cust-{c:05d}", f'{{"customer_id":"cust-{c:05d}","first_name":"Nm{c:05d}q"}}', f"Nm{c:05d}q")
                      for c in range(n)))
    conn.execute("COMMIT")
    rnd = random.Random(11)
    for version in (2, 3, 4):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("UPDATE profiles SET version = ?, profile = ? WHERE customer_id = ?",
                         ((version, f'{{"customer_id":"cust-{c:05d}","first_name":"Nm{c:05d}q","cart":'
                           f'[{",".join(["1234567"] * rnd.randrange(12))}]}}', f"cust-{c:05d}")
                          for c in range(n) if rnd.random() < 0.5))
        conn.execute("COMMIT")
    assert truncate_wal(conn)
    return conn


@pytest.mark.parametrize(("rewrite_max_pages", "how"), [(REWRITE_MAX_PAGES, "rewrite profiles"), (1, "VACUUM")])
def test_copies_left_in_a_tables_page_gaps_are_rebuilt_away_and_every_row_stays(
        tmp_path: Path, rewrite_max_pages: int, how: str) -> None:
    db = tmp_path / "edge.db"
    with closing(churned_profiles(db)) as conn:
        victims = [f"cust-{c:05d}" for c in range(0, 600, 2)]
        conn.execute("BEGIN IMMEDIATE")
        erased = erase_rows(conn, victims)
        conn.execute("COMMIT")
        assert truncate_wal(conn)
        raw = file_bytes(db)
        left = [v for v in victims if v.encode() in raw]
        assert left, "the test must start with copies of erased rows in the file (secure_delete misses them)"
        kept = everything(conn, "profiles")

        traces = find_traces(conn, erased.values)
        assert traces and {t.btree for t in traces} <= {"profiles", "sqlite_autoindex_profiles_1"}, traces
        assert {t.region for t in traces} <= {"gap", "freeblock"}
        done = rebuild(conn, traces, rewrite_max_pages=rewrite_max_pages)
        assert truncate_wal(conn)

        assert any(a.startswith(how) for a in done), done
        assert find_traces(conn, erased.values) == []
        raw = file_bytes(db)
        assert [v for v in victims if v.encode() in raw] == []
        assert everything(conn, "profiles") == kept
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_values_that_live_rows_still_hold_are_no_traces(tmp_path: Path) -> None:
    """Another shopper with the same first name, an id that starts with the erased one: live bytes, no rebuild."""
    with closing(open_writer(tmp_path / "edge.db")) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO profiles(customer_id, version, profile, first_name, updated_at) "
                         "VALUES (?,1,?,'Annabella',0)", [("cust-0042", "{}"), ("cust-00421", "{}")])
        conn.executemany("INSERT INTO events(event_id, kind, source, customer, ts, received_at) "
                         "VALUES (?,'pos','till-1',?,0,0)", [("e1", "cust-0042"), ("e2", "cust-00421")])
        erased = erase_rows(conn, ["cust-0042"])
        conn.execute("COMMIT")
        assert truncate_wal(conn)
        raw = file_bytes(tmp_path / "edge.db")
        assert b"cust-0042" in raw and b"Annabella" in raw  # in cust-00421's rows
        assert set(erased.values) >= {"cust-0042", "Annabella"}
        assert find_traces(conn, erased.values) == []


def test_data_a_writer_without_secure_delete_left_on_free_pages_is_found_and_vacuumed(tmp_path: Path) -> None:
    """An older file, written before secure_delete was on: deleted rows stay on the freelist (overflow pages)."""
    db = tmp_path / "edge.db"
    with closing(sqlite3.connect(db, isolation_level=None)) as old:
        old.execute("PRAGMA journal_mode=WAL")
        old.execute("PRAGMA secure_delete=OFF")
        old.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
        old.executemany("INSERT INTO notes(body) VALUES (?)",
                        [(("who-7731 " if i % 50 == 0 else "someone ") * 1200,) for i in range(500)])
        old.execute("DELETE FROM notes WHERE body LIKE 'who-7731%'")
        old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert b"who-7731" in db.read_bytes()
    with closing(open_writer(db)) as conn:
        traces = find_traces(conn, ["who-7731"])
        assert "free page" in {t.region for t in traces}, traces
        assert rebuild(conn, traces)[0].startswith("VACUUM")
        assert truncate_wal(conn)
        assert find_traces(conn, ["who-7731"]) == [] and b"who-7731" not in db.read_bytes()
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 490
