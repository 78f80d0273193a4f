"""Bytes of erased data that SQLite's secure_delete leaves in the file: find them, rebuild what holds them.

secure_delete zeroes a deleted cell and a freed page. But when a b-tree page is rebuilt (a split or a merge
moves cells between pages: btree.c's rebuildPage), the old bytes stay in the page's unallocated gap, between
the cell-pointer array and the cells; no later DELETE touches them, so a copy of a shopper's id can outlive
their erasure there (an index filled in random key order, like events(customer), splits often). After an
erasure the writer therefore looks for the erased values in the bytes outside live rows (`find_traces`),
and while some remain rebuilds what holds them (`rebuild`: REINDEX an index, rewrite a small table, VACUUM
as the last resort), looking again after each rebuild (`Scrub.step`): the verdict is measured on the file.

Standard library only, nothing of the edge: any SQLite store that erases (the central store's too) can use it.
"""

from __future__ import annotations

import bisect
import mmap
import os
import sqlite3
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# b-tree page type byte → header size: interior index, interior table, leaf index, leaf table
_BTREE_HEADER = {2: 12, 5: 12, 10: 8, 13: 8}
_ENCODINGS = {"UTF-8": "utf-8", "UTF-16le": "utf-16-le", "UTF-16be": "utf-16-be"}
_WAL_HEADER, _FRAME_HEADER = 32, 24
REWRITE_MAX_PAGES = 2560  # a table up to this size (10 MB of 4 KiB pages) is rewritten; a bigger one takes a VACUUM


@dataclass(frozen=True, slots=True)
class Trace:
    """Bytes of an erased value outside any live row: where they are, never what (traces are logged)."""

    file: str  # "db" or "wal"
    page: int
    region: str  # "gap" (between cell pointers and cells), "freeblock", "free page", "wal"
    btree: str | None = None  # the table or index the page belongs to (dbstat); None: free page, WAL, or unknown

    def __str__(self) -> str:
        return f"page {self.page} ({self.region}{f' of {self.btree}' if self.btree else ''})"


@dataclass(frozen=True, slots=True)
class Check:
    """The verdict on an erasure's bytes after scanning, rebuilding and scanning again."""

    found: tuple[Trace, ...]  # what the first scan found
    left: tuple[Trace, ...]  # what the last scan found: empty when the file is clean
    actions: tuple[str, ...]  # "REINDEX <index>", "rewrite <table>", "VACUUM (<s> s)", "failed: <what>: <why>"
    seconds: float  # scanning and rebuilding (the writer's pause), WAL truncations not included

    @property
    def clean(self) -> bool:
        return not self.left


@dataclass
class Scrub:
    """Erased values, kept until the file is checked for them: scan, rebuild what holds them, scan again.

    Call `step` on the write connection after each truncation of the WAL, until it returns the verdict;
    the first rebuild targets the b-trees holding the traces, the second is a VACUUM, then it gives up."""

    values: set[str]
    rebuilds: int = 0
    vacuumed: bool = False
    found: list[Trace] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, values: Iterable[str]) -> None:
        """More values (another erasure before the check): start the escalation again."""
        self.values.update(values)
        self.rebuilds, self.vacuumed = 0, False

    def step(self, conn: sqlite3.Connection) -> Check | None:
        """Scan; when traces are left and a rebuild is still to try, do it and return None (truncate the WAL,
        then step again); else the verdict. Outside a transaction, with the WAL just truncated."""
        t0 = time.perf_counter()
        try:
            traces = find_traces(conn, self.values)
            if traces and self.rebuilds < 2 and not self.vacuumed:
                self.found = self.found or traces
                self.rebuilds += 1
                vacuum = self.rebuilds == 2
                try:
                    done = rebuild(conn, traces, vacuum=vacuum)
                except sqlite3.Error as exc:
                    done = [f"failed: {'VACUUM' if vacuum else 'rebuild'}: {exc}"]
                self.vacuumed = vacuum or any(a.startswith("VACUUM") for a in done)
                self.actions += done
                return None
        finally:
            self.seconds += time.perf_counter() - t0
        return Check(tuple(self.found), tuple(traces), tuple(self.actions), self.seconds)


def truncate_wal(conn: sqlite3.Connection, busy_ms: int = 50, *, busy_after_ms: int = 30000) -> bool:
    """Copy the WAL into the database and truncate it to zero bytes, so the page images it held (a shopper's
    rows before their erasure) are gone; True when done. A reader still on an older snapshot makes it fail
    after `busy_ms`: call again later. Outside a transaction, on the write connection, whose busy timeout is
    then set back to `busy_after_ms`."""
    conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    try:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.OperationalError:
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(busy_after_ms)}")
    return busy == 0


def find_traces(conn: sqlite3.Connection, values: Iterable[str]) -> list[Trace]:
    """Where the values' bytes are in the database file outside live rows (in a b-tree page's gap or
    freeblocks, on a free page) and anywhere in its WAL. Only those bytes are looked at: inside a live cell
    the same bytes are another row's (another shopper's first name, a longer id that starts the same), and
    any number of values costs one pass over the pages. Values are looked for as the file stores text (its
    encoding); pick ones long enough not to occur by chance."""
    path = database_path(conn)
    encoding = _ENCODINGS[conn.execute("PRAGMA encoding").fetchone()[0]]
    needles = _minimal({v.encode(encoding, "surrogatepass") for v in values if v})
    if not needles:
        return []
    traces = _wal_traces(path.with_name(path.name + "-wal"), needles)
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return traces
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            unallocated = _Unallocated.of(m, strip=encoding == "utf-8")
    return _name_pages(conn, traces + unallocated.traces(needles))


def rebuild(conn: sqlite3.Connection, traces: Iterable[Trace], *, vacuum: bool = False,
            rewrite_max_pages: int = REWRITE_MAX_PAGES) -> list[str]:
    """Rebuild what holds the traces, with secure_delete on (pages are zeroed as they are freed): REINDEX an
    index (written again, packed, from its table), rewrite a table up to `rewrite_max_pages` (rows out and
    back in, then its indexes REINDEXed); VACUUM (every page written anew from the live rows) for a bigger
    table, a free page, a page dbstat cannot name, or when `vacuum`. Returns what was done. Outside a
    transaction."""
    conn.execute("PRAGMA secure_delete=ON")
    names = {t.btree for t in traces if t.file == "db"}
    if not names:
        return []
    schema = {name: (kind, table)
              for name, kind, table in conn.execute("SELECT name, type, tbl_name FROM sqlite_schema")}
    if vacuum or any(n not in schema for n in names):  # None (free page, no dbstat), sqlite_schema itself
        return _vacuum(conn)
    tables = {n for n in names if schema[n][0] == "table"}
    if any(_pages(conn, t) > rewrite_max_pages for t in tables):
        return _vacuum(conn)
    indexes = {n for n in names if schema[n][0] == "index" and schema[n][1] not in tables}  # rewritten anyway
    done: list[str] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in sorted(tables):
            _rewrite(conn, table)
            done.append(f"rewrite {table}")
        for index in sorted(indexes):
            conn.execute(f"REINDEX main.{_quote(index)}")
            done.append(f"REINDEX {index}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return done


def database_path(conn: sqlite3.Connection) -> Path:
    """The file of the connection's main database."""
    for _seq, name, file in conn.execute("PRAGMA database_list"):
        if name == "main" and file:
            return Path(file)
    raise ValueError("the connection has no database file (in-memory?): there are no bytes on disk to check")


# --- finding -------------------------------------------------------------------------------------------------


def _minimal(needles: set[bytes]) -> list[bytes]:
    """The needles none of the others is part of: finding 'zq-phone-88' finds 'device:zq-phone-88' too."""
    kept: list[bytes] = []
    for needle in sorted(needles, key=len):
        if not any(k in needle for k in kept):
            kept.append(needle)
    return kept


def _wal_traces(wal: Path, needles: list[bytes]) -> list[Trace]:
    """Any copy in the WAL is a trace (a truncated WAL is empty): the page of the frame it is in."""
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return []
    if len(data) <= _WAL_HEADER:
        return []
    frame = _FRAME_HEADER + struct.unpack_from(">I", data, 8)[0]
    pages: set[int] = set()
    for needle in needles:
        i = data.find(needle)
        while i >= 0:
            start = _WAL_HEADER + max(0, i - _WAL_HEADER) // frame * frame
            pages.add(struct.unpack_from(">I", data, start)[0] if start + 4 <= len(data) else 0)
            i = data.find(needle, i + 1)
    return [Trace("wal", page, "wal") for page in sorted(pages)]


@dataclass
class _Unallocated:
    """The bytes of the file that no live row holds and that are not zero, in one buffer: each part (a gap,
    a freeblock, a free page) after a separator, with the page and region it comes from."""

    data: bytes
    starts: list[int]
    where: list[tuple[int, str]]

    SEPARATOR = b"\0" * 4  # in no encoded value: values hold no NUL character

    @classmethod
    def of(cls, m: mmap.mmap, *, strip: bool) -> _Unallocated:
        """Read every page's header (and the freelist); `strip` drops zeros around each part (UTF-8 only:
        a UTF-16 value may end in a zero byte)."""
        page_size = struct.unpack_from(">H", m, 16)[0]
        page_size = 65536 if page_size == 1 else page_size
        parts: list[bytes] = []
        starts: list[int] = []
        where: list[tuple[int, str]] = []
        at = 0

        def add(page: int, region: str, part: bytes) -> None:
            nonlocal at
            part = part.strip(b"\0") if strip else part
            if part.count(0) < len(part):
                parts.append(part)
                starts.append(at)
                where.append((page, region))
                at += len(part) + len(cls.SEPARATOR)

        free = _free_pages(m, page_size)
        for page in range(1, len(m) // page_size + 1):
            base = (page - 1) * page_size
            if page in free:
                add(page, "free page", m[base:base + page_size])
                continue
            h = base + (100 if page == 1 else 0)  # page 1 starts with the file header
            size = _BTREE_HEADER.get(m[h])
            if size is None:  # an overflow page (a live row's), a pointer-map or the lock-byte page
                continue
            first_free, cells, content = struct.unpack_from(">HHH", m, h + 1)
            gap_end = base + min(content or 65536, page_size)
            if h + size + 2 * cells < gap_end:
                add(page, "gap", m[h + size + 2 * cells:gap_end])
            block, hops = first_free, 0
            while 0 < block <= page_size - 4 and hops < page_size // 4:  # bounded: a corrupt chain cannot loop
                nxt, length = struct.unpack_from(">HH", m, base + block)
                add(page, "freeblock", m[base + block + 4:base + min(block + length, page_size)])
                block, hops = nxt, hops + 1
        return cls(cls.SEPARATOR.join(parts), starts, where)

    def traces(self, needles: list[bytes]) -> list[Trace]:
        """One trace per page and region holding a needle."""
        found: dict[tuple[int, str], Trace] = {}
        for needle in needles:
            i = self.data.find(needle)
            while i >= 0:
                page, region = self.where[bisect.bisect_right(self.starts, i) - 1]
                found.setdefault((page, region), Trace("db", page, region))
                i = self.data.find(needle, i + 1)
        return list(found.values())


def _free_pages(m: mmap.mmap, page_size: int) -> set[int]:
    """The pages on the freelist (trunk pages and the leaves they list)."""
    free: set[int] = set()
    trunk, pages = struct.unpack_from(">I", m, 32)[0], len(m) // page_size
    while 0 < trunk <= pages and trunk not in free:
        free.add(trunk)
        base = (trunk - 1) * page_size
        nxt, count = struct.unpack_from(">II", m, base)
        count = min(count, page_size // 4 - 2)
        free.update(struct.unpack_from(f">{count}I", m, base + 8))
        trunk = nxt
    return free


def _name_pages(conn: sqlite3.Connection, traces: list[Trace]) -> list[Trace]:
    """The table or index each trace's page belongs to, from the dbstat virtual table (a walk of every
    b-tree, done only when there are traces)."""
    pages = {t.page for t in traces if t.file == "db" and t.region != "free page"}
    if not pages:
        return traces
    owners: dict[int, tuple[str, str]] = {}
    try:
        for page, name, kind in conn.execute("SELECT pageno, name, pagetype FROM dbstat"):
            if page in pages:
                owners[page] = (name, kind)
    except sqlite3.OperationalError:  # SQLite built without dbstat: rebuild() falls back on VACUUM
        return traces
    out: list[Trace] = []
    for t in traces:
        if t.page in pages:
            name, kind = owners.get(t.page, (None, ""))
            if kind == "overflow":  # not a b-tree page after all: a live row's (a file past 2^24 pages)
                continue
            t = Trace(t.file, t.page, t.region, name)
        out.append(t)
    return out


# --- rebuilding ----------------------------------------------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pages(conn: sqlite3.Connection, table: str) -> int:
    return conn.execute("SELECT count(*) FROM dbstat WHERE name = ?", (table,)).fetchone()[0]


def _rewrite(conn: sqlite3.Connection, table: str) -> None:
    """Every row out and back in, inside the caller's transaction: a DELETE without WHERE frees (so zeroes)
    every page of the table and of its indexes; the rows go back in key order onto fresh pages, and the
    indexes, filled in that order, are then REINDEXed packed."""
    q = _quote(table)
    columns = [_quote(r[1]) for r in conn.execute(f"PRAGMA main.table_xinfo({q})") if r[6] in (0, 1)]  # not generated
    without_rowid = conn.execute("SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?",
                                 (table,)).fetchone()[0]
    cols = ", ".join(columns if without_rowid else ["rowid", *columns])
    rows = conn.execute(f"SELECT {cols} FROM main.{q}").fetchall()
    conn.execute(f"DELETE FROM main.{q}")
    if rows:
        conn.executemany(f"INSERT INTO main.{q}({cols}) VALUES ({', '.join('?' * len(rows[0]))})", rows)
    conn.execute(f"REINDEX main.{q}")


def _vacuum(conn: sqlite3.Connection) -> list[str]:
    t0 = time.perf_counter()
    conn.execute("VACUUM")
    return [f"VACUUM ({time.perf_counter() - t0:.1f} s)"]
