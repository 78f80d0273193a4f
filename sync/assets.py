"""Campaign and product assets on the device: a bounded on-disk cache named by SHA-256, and the background
downloader that fills it from the central store (`GET /v1/assets/{sha256}`).

A file enters the cache only once its bytes hash to its name (it is written beside, hashed while written,
then renamed into place), and it is hashed again before it is first served by this process: bytes that do not
match their name are deleted, never served, and downloaded again. The cache is bounded (`max_bytes`); beyond
it the files used least recently (served or checked: their mtime) go first, except those an applied or pending
campaign or a product uses (`pinned`), which are never evicted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from sync.local import ContentLocal, committed
from sync.transport import AuthError, Backoff, Errors, SyncError, Transport, error_message

log = logging.getLogger(__name__)

ASSET_PATH = "/v1/assets/{sha256}"
SHA256_RE = re.compile(r"[0-9a-f]{64}")
ASSET_MAX_BYTES = 50 * 1024 * 1024  # one asset (the central store takes up to 20 MB; room for a bigger cap)
CONTENT_TYPES = re.compile(r"(image/[a-z0-9.+-]+|video/mp4|video/webm)")
DEFAULT_TYPE = "application/octet-stream"
CHUNK = 64 * 1024
IDLE_S = 30.0  # the downloader looks for wanted assets this often when nobody wakes it


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and SHA256_RE.fullmatch(value) is not None


class AssetCache:
    """Files `<sha256>` (+ `<sha256>.type`, the Content-Type) in `root`, at most `max_bytes` in all."""

    def __init__(self, root: str | Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._verified: dict[str, tuple[int, int]] = {}  # name → (size, mtime_ns) hashed by this process
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        if not is_sha256(name):
            raise ValueError(f"asset name {name[:80]!r} is not a lowercase hex SHA-256")
        return self.root / name

    def has(self, name: str) -> bool:
        return is_sha256(name) and self._path(name).is_file()

    def missing(self, names: Iterable[str]) -> list[str]:
        return [n for n in dict.fromkeys(names) if is_sha256(n) and not self._path(n).is_file()]

    def content_type(self, name: str) -> str:
        try:
            value = (self.root / f"{name}.type").read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return DEFAULT_TYPE
        return value if CONTENT_TYPES.fullmatch(value) else DEFAULT_TYPE

    def open_verified(self, name: str) -> tuple[Path, str] | None:
        """The file and its Content-Type when the cache has it and its bytes hash to its name; a file that does
        not match is deleted (so it is downloaded again) and None returned. Marks the asset as used now."""
        if not is_sha256(name):
            return None
        path = self._path(name)
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._verified.get(name)
        if known != stamp and _file_sha256(path) != name:  # not hashed since it last changed
            log.error("asset %s in the cache does not hash to its name: deleted, never served", name)
            self.delete(name)
            return None
        try:
            os.utime(path)  # last use, for the LRU
            st = path.stat()
        except OSError:
            return None
        with self._lock:
            self._verified[name] = (st.st_size, st.st_mtime_ns)
        return path, self.content_type(name)

    def put(self, name: str, chunks: Iterable[bytes], content_type: str | None, limit: int = ASSET_MAX_BYTES) -> int:
        """Write an asset from `chunks`; raises ValueError (nothing kept) when the bytes do not hash to `name` or
        exceed `limit`. Returns its size."""
        path = self._path(name)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.{threading.get_ident()}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise ValueError(f"asset {name} is larger than {limit} bytes")
                    digest.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if digest.hexdigest() != name:
                raise ValueError(f"the bytes sent for asset {name} hash to {digest.hexdigest()}: refused")
            kind = (content_type or "").split(";")[0].strip().lower()
            (self.root / f"{name}.type").write_text(kind if CONTENT_TYPES.fullmatch(kind) else DEFAULT_TYPE,
                                                    encoding="ascii")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            st = path.stat()
            self._verified[name] = (st.st_size, st.st_mtime_ns)
        return size

    def delete(self, name: str) -> None:
        with self._lock:
            self._verified.pop(name, None)
        for p in (self.root / name, self.root / f"{name}.type"):
            p.unlink(missing_ok=True)

    def files(self) -> list[tuple[str, int, float]]:
        """(name, size, last use) of every cached asset."""
        out = []
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return []
        for e in entries:
            if is_sha256(e.name):
                try:
                    st = e.stat()
                except OSError:
                    continue
                out.append((e.name, st.st_size, st.st_mtime))
        return out

    def size(self) -> int:
        return sum(size for _, size, _ in self.files())

    def evict(self, pinned: frozenset[str] | set[str]) -> list[str]:
        """Bring the cache under max_bytes: least recently used first, never a pinned asset; returns the names."""
        files = self.files()
        total = sum(size for _, size, _ in files)
        evicted: list[str] = []
        for name, size, _ in sorted(files, key=lambda f: f[2]):
            if total <= self.max_bytes:
                break
            if name in pinned:
                continue
            self.delete(name)
            total -= size
            evicted.append(name)
        if total > self.max_bytes:
            log.warning("the asset cache holds %d bytes, above its bound of %d, all used by campaigns or products "
                        "held here: raise [central] assets_max_mb", total, self.max_bytes)
        return evicted


def _file_sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK * 4):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


class AssetFetcher:
    """The downloader thread: asks the edge which assets its campaigns and products want, downloads the missing
    ones (hash checked), tells the edge they arrived (pending campaigns apply), and bounds the cache."""

    def __init__(self, transport: Transport, local: ContentLocal, cache: AssetCache, errors: Errors, *,
                 stop: threading.Event, timeout_s: float, task_timeout_s: float,
                 on_fetched: Callable[[int], None] | None = None) -> None:
        self.transport = transport
        self.local = local
        self.cache = cache
        self.errors = errors
        self.stop = stop
        self.timeout_s = timeout_s
        self.task_timeout_s = task_timeout_s
        self.on_fetched = on_fetched
        self._wake = threading.Event()
        self.fetched = 0
        self.refused = 0

    def wake(self) -> None:
        self._wake.set()

    def download(self, name: str) -> int:
        """One asset into the cache; returns its size. Raises SyncError (bytes that do not match: not retryable
        until the next round)."""
        path = ASSET_PATH.format(sha256=name)
        r = self.transport.request("GET", path, timeout=(min(5.0, self.timeout_s), self.timeout_s), stream=True)
        try:
            if r.status_code != 200:
                raise SyncError(f"central store answered HTTP {r.status_code} to GET {path}: {error_message(r)}",
                                status=r.status_code, retryable=r.status_code != 404)
            try:
                return self.cache.put(name, r.iter_content(CHUNK), r.headers.get("Content-Type"))
            except ValueError as exc:
                self.refused += 1
                raise SyncError(str(exc), retryable=False) from None
            except OSError as exc:
                raise SyncError(f"cannot write asset {name} into {self.cache.root} ({exc})") from None
        finally:
            r.close()

    def fetch_missing(self) -> int:
        """Download every wanted asset not cached yet; returns how many arrived. Raises SyncError when the
        central store could not be asked at all (after telling the edge about those that did arrive)."""
        wanted = self.cache.missing(self.local.assets_wanted())
        got: list[str] = []
        failure: SyncError | None = None
        for name in wanted:
            if self.stop.is_set():
                break
            try:
                self.download(name)
                got.append(name)
            except AuthError:
                raise
            except SyncError as exc:
                log.warning("asset %s not downloaded: %s", name, exc)
                failure = failure or exc
        if got:
            self.fetched += len(got)
            committed(self.local.assets_arrived(got), "apply campaigns waiting for assets", self.task_timeout_s,
                      self.stop)
            if self.on_fetched is not None:
                self.on_fetched(len(got))
        self.cache.evict(self.local.assets_pinned())
        if failure is not None:
            raise failure
        self.errors.clear("assets")
        return len(got)

    def run(self, backoff: Backoff) -> None:
        """The downloader thread: on wake (a content page asked for assets) or every IDLE_S; backs off on failures."""
        delay = IDLE_S
        while not self.stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            if self.stop.is_set():
                return
            try:
                self.fetch_missing()
                backoff.reset()
                delay = IDLE_S
            except SyncError as exc:
                delay = backoff.next_delay()
                self.errors.record("assets", f"asset download failed, retrying in {delay:.2f}s: {exc}")
            except Exception as exc:
                delay = backoff.next_delay()
                log.exception("asset download failed unexpectedly")
                self.errors.record("assets", f"asset download failed unexpectedly ({type(exc).__name__}: {exc})",
                                   logging.ERROR)
