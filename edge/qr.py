"""Signed QR tokens, the QR image writer (PNG/SVG: the only one), the printable A4 sheet of a zone's touchpoints, `instore-edge qr`.

Token layout (then base64url without padding), 23 bytes + the target:

    kid(2) kind(1) expiry(4, unix s, 0 = never) nonce(4) store_tag(2) target(utf-8) mac(10)

- kid: the first 2 bytes of sha256(secret), so a printed code names the key that signed it. `[qr] secret`
  is the current key; older keys still honoured while their codes hang in the store come from the
  environment variable INSTORE_EDGE_QR_OLD_SECRETS (comma-separated). Rotation: put the old secret there,
  set the new one in `[qr] secret`, reprint at leisure.
- mac: HMAC-SHA256 truncated to 10 bytes over kid|kind|expiry|nonce|store id (the full id)|target.
- store_tag: 2 bytes of sha256(store id), only to tell a "wrong store" refusal from a forged code.
- the token id (single-use bookkeeping) is the hex of the mac: unique per minted token.

A typical URL (`https://shop.example.com/q/<token>`, target up to ~24 characters) stays QR version <= 5
at error correction M (tests/test_qr.py checks version <= 6).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import qrcode
from qrcode.constants import ERROR_CORRECT_M

from edge.i18n import N_, format_date, localized, translate
from edge.model import EdgeError

if TYPE_CHECKING:
    from edge.config import Config

KINDS = {"touchpoint": 1, "handoff": 2, "pickup": 3, "return": 4, "phone": 5}
KIND_NAMES = {v: k for k, v in KINDS.items()}
MINTABLE = ("touchpoint", "handoff", "pickup", "return")
SINGLE_USE = frozenset({"handoff", "pickup", "return"})
MAC_LEN = 10
HEADER = struct.Struct(">2sBII2s")  # kid, kind, expiry, nonce, store tag
MAX_TARGET = 64
OLD_SECRETS_ENV = "INSTORE_EDGE_QR_OLD_SECRETS"
HANDOFF_TTL_S = 10 * 60

# Refusal reasons (metric label instore_edge_qr_refused_total{reason}) → (HTTP status, title, what to do);
# the texts are msgids: the landing page shows them in the phone's language, errors elsewhere in English.
REFUSALS: dict[str, tuple[int, str, str]] = {
    "not_configured": (503, N_("QR codes are not set up"),
                       N_("This store has not configured its QR codes yet ([qr] secret). "
                          "Please ask a member of staff.")),
    "malformed": (400, N_("This code cannot be read"),
                  N_("The link is incomplete or damaged. Scan the code again, or ask a member of staff.")),
    "forged": (403, N_("This code is not valid"),
               N_("The code was not issued by this store or has been altered. Please ask a member of staff.")),
    "wrong_store": (404, N_("This code belongs to another store"),
                    N_("The code was issued by a different store. Use it there, or ask a member of staff.")),
    "expired": (410, N_("This code has expired"),
                N_("Ask a member of staff or the kiosk for a new code.")),
    "used": (409, N_("This code has already been used"),
             N_("Each code of this kind works once. Ask the kiosk or a member of staff for a new one.")),
    "unknown_order": (404, N_("Order not found"),
                      N_("We could not find this order ready for pickup here. Please ask a member of staff.")),
    "wrong_kind": (400, N_("This code cannot be used here"),
                   N_("This code is meant for another purpose. Please ask a member of staff.")),
}


class QrError(EdgeError):
    """A token refused or a QR that cannot be minted; `reason` is a key of REFUSALS."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or REFUSALS.get(reason, (400, reason, reason))[2])


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    target: str
    expiry: int
    kid: bytes
    token_id: str  # hex of the mac

    @property
    def single_use(self) -> bool:
        return self.kind in SINGLE_USE


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64d(text: str) -> bytes:
    """The bytes of a token in its one canonical form (what `_b64e` writes): base64url without padding.

    Anything else is refused, even when a lenient decoder would read the same bytes from it (padding,
    '+' or '/' for '-' or '_', stray characters, non-zero unused bits in the last character): a token
    has exactly one spelling, so a scanned code, a single-use record and a log line all agree on it."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not canonical base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64e(raw) != text:
        raise ValueError("not canonical base64url: unused bits are set")
    return raw


def key_id(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()[:2]


def _store_tag(store: str) -> bytes:
    return hashlib.sha256(store.encode()).digest()[:2]


class Signer:
    """Mints and checks tokens for one store with the current key (+ old keys for validation)."""

    def __init__(self, secret: str | None, store: str, base_url: str, ttl_s: int,
                 old_secrets: list[str] | None = None) -> None:
        self.secret = secret
        self.store = store
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        if old_secrets is None:
            old_secrets = [s.strip() for s in os.environ.get(OLD_SECRETS_ENV, "").split(",") if s.strip()]
        self.keys: dict[bytes, bytes] = {}
        for s in [*old_secrets, *([secret] if secret else [])]:
            self.keys[key_id(s)] = s.encode()  # the current key wins a (2-byte) id collision

    @classmethod
    def from_config(cls, cfg: Config) -> Signer:
        return cls(cfg.qr.secret, cfg.store.id, cfg.qr.base_url, cfg.qr.ttl_s)

    @property
    def enabled(self) -> bool:
        return bool(self.secret)

    def _mac(self, key: bytes, header: bytes, target: bytes) -> bytes:
        kid, kind, expiry, nonce, _tag = HEADER.unpack(header)
        msg = b"|".join([kid, bytes([kind]), struct.pack(">II", expiry, nonce), self.store.encode(), target])
        return hmac.new(key, msg, hashlib.sha256).digest()[:MAC_LEN]

    def mint(self, kind: str, target: str, ttl_s: int | None = None, *, now: float | None = None) -> str:
        if not self.secret:
            raise QrError("not_configured", "QR codes need a signing key: set [qr] secret (16+ characters) in the "
                                            "store config or INSTORE_EDGE_QR_SECRET in the environment")
        if kind not in KINDS:
            raise QrError("wrong_kind", f"kind must be one of {', '.join(MINTABLE)}")
        raw_target = target.encode()
        if not target or len(raw_target) > MAX_TARGET:
            raise QrError("malformed", f"target must be 1 to {MAX_TARGET} bytes (a product, content, screen, "
                                       "order or return id)")
        now = time.time() if now is None else now
        ttl = self.ttl_s if ttl_s is None else int(ttl_s)
        expiry = 0 if ttl <= 0 else int(now) + ttl
        header = HEADER.pack(key_id(self.secret), KINDS[kind], expiry, secrets.randbits(32),
                             _store_tag(self.store))
        return _b64e(header + raw_target + self._mac(self.secret.encode(), header, raw_target))

    def url(self, token: str) -> str:
        return f"{self.base_url}/q/{token}"

    def verify(self, token: str, *, now: float | None = None) -> Token:
        """The token's content, or QrError(reason): not_configured, malformed, forged, wrong_store, expired."""
        if not self.keys:
            raise QrError("not_configured")
        if not token or len(token) > 200:
            raise QrError("malformed")
        try:
            raw = _b64d(token)
        except (ValueError, TypeError):
            raise QrError("malformed") from None
        if len(raw) < HEADER.size + 1 + MAC_LEN:
            raise QrError("malformed")
        header, target, mac = raw[:HEADER.size], raw[HEADER.size:-MAC_LEN], raw[-MAC_LEN:]
        kid, kind, expiry, _nonce, tag = HEADER.unpack(header)
        if tag != _store_tag(self.store):
            raise QrError("wrong_store")
        key = self.keys.get(kid)
        if key is None or not hmac.compare_digest(self._mac(key, header, target), mac):
            raise QrError("forged")
        if kind not in KIND_NAMES:
            raise QrError("forged")
        now = time.time() if now is None else now
        if expiry and now > expiry:
            raise QrError("expired")
        try:
            text = target.decode()
        except UnicodeDecodeError:
            raise QrError("malformed") from None
        return Token(KIND_NAMES[kind], text, expiry, kid, mac.hex())


def token_from_code(code: str) -> str | None:
    """The token inside a scanned text: `.../q/<token>` (query/fragment ignored), or None."""
    idx = code.rfind("/q/")
    if idx < 0:
        return None
    tok = code[idx + 3:].split("?", 1)[0].split("#", 1)[0].strip().rstrip("/")
    return tok or None


# --- images ---------------------------------------------------------------------------------------------
# qrcode splits the text into segments and knows each version's function patterns and error correction
# blocks; the rest works on whole matrices as Python ints, the n rows (or the n columns) of n bits one after
# the other, first row first (1 = dark): the data bits are laid out once per code, each of the eight masks
# is two XORs of cached ints, and the ISO 18004 penalty that picks the mask (the same rules and the same
# choice as qrcode's) is a few dozen shifts and ANDs on them. qrcode itself spent ~3 ms of Python per code.

_FINDERS = ("10111010000", "00001011101")  # N3's patterns (with 4 light modules on one side)


@dataclass(frozen=True, slots=True)
class _Grid:
    """Bit masks of an n x n matrix laid out as one int (for _penalty)."""

    n: int
    full: int  # every module
    left: int  # modules with a left neighbour in their line
    finder: int  # modules with 10 modules to their left in their line
    block: int  # modules with a left and an upper neighbour


_GRIDS: dict[int, _Grid] = {}


def _grid(n: int) -> _Grid:
    found = _GRIDS.get(n)
    if found is None:
        def where(keep: Callable[[int, int], bool]) -> int:
            return int("".join("1" if keep(r, c) else "0" for r in range(n) for c in range(n)), 2)

        found = _GRIDS[n] = _Grid(n, (1 << n * n) - 1, where(lambda r, c: c >= 1), where(lambda r, c: c >= 10),
                                  where(lambda r, c: c >= 1 and r >= 1))
    return found


def _penalty(rows: int, cols: int, g: _Grid) -> int:
    """ISO/IEC 18004 mask penalty of a matrix given as its rows and its columns (one int each): runs of 5+
    (N1: 3 + the length past 5), 2x2 blocks (N2: 3 each), finder-like patterns (N3: 40 each), balance (N4)."""
    score = 0
    full = g.full
    for x in (rows, cols):
        same = ~(x ^ (x >> 1)) & g.left  # a module like its left neighbour
        w4 = same & (same >> 1) & (same >> 2) & (same >> 3)  # ...and the 3 before it too: in a run of 5+
        score += w4.bit_count() + 2 * (w4 & ~(w4 >> 1)).bit_count()  # a run of k: k - 4 windows + 2 = k - 2
        light = x ^ full
        for pattern in _FINDERS:
            hit = g.finder
            for j, ch in enumerate(pattern):
                hit &= (x if ch == "1" else light) >> (10 - j)
            score += 40 * hit.bit_count()
    n = g.n
    light = rows ^ full
    dark = rows & (rows >> 1) & (rows >> n) & (rows >> (n + 1))
    light &= (light >> 1) & (light >> n) & (light >> (n + 1))
    score += 3 * ((dark & g.block).bit_count() + (light & g.block).bit_count())
    return score + 10 * (abs(rows.bit_count() * 100 // (n * n) - 50) // 5)


def penalty(modules: list[list[bool]]) -> int:
    """The mask penalty of a module matrix (True = dark)."""
    rows = int("".join("1" if m else "0" for row in modules for m in row), 2)
    cols = int("".join("1" if m else "0" for col in zip(*modules) for m in col), 2)
    return _penalty(rows, cols, _grid(len(modules)))


def _data_coords(modules: list[list[Any]]) -> list[tuple[int, int]]:
    """The data modules (still None after the function patterns) in qrcode's zigzag placement order."""
    n = len(modules)
    out = []
    row, inc = n - 1, -1
    for col in range(n - 1, 0, -2):
        if col <= 6:
            col -= 1
        while True:
            for c in (col, col - 1):
                if modules[row][c] is None:
                    out.append((row, c))
            row += inc
            if row < 0 or row >= n:
                row -= inc
                inc = -inc
                break
    return out


def _ints(modules: list[list[Any]]) -> tuple[int, int]:
    """Dark modules (True; None and False are 0) of a matrix as (rows, columns) ints."""
    return (int("".join("1" if m is True else "0" for row in modules for m in row), 2),
            int("".join("1" if m is True else "0" for col in zip(*modules) for m in col), 2))


@dataclass(frozen=True, slots=True)
class _Layout:
    """What does not depend on the data, for one version and error correction level (cached)."""

    grid: _Grid
    total: int  # data modules
    by_rows: Any  # picks the matrix's characters, rows first, from the data bit string + "0"
    by_cols: Any  # ... columns first
    tested: tuple[tuple[int, int], ...]  # per mask: function patterns as qrcode scores them (format bits light)
    final: tuple[int, ...]  # per mask: function patterns with the real format (and version) bits, rows first
    masks: tuple[tuple[int, int], ...]  # per mask: the data modules it inverts (rows, columns)


_LAYOUTS: dict[tuple[int, int], _Layout] = {}


def _layout(version: int, level: int) -> _Layout:
    found = _LAYOUTS.get((version, level))
    if found is not None:
        return found
    from operator import itemgetter

    from qrcode import util

    n = version * 4 + 17

    def patterns(test: bool, mask: int) -> list[list[Any]]:
        qr = qrcode.QRCode(version=version, error_correction=level)
        qr.modules_count = n
        qr.modules = [[None] * n for _ in range(n)]
        qr.setup_position_probe_pattern(0, 0)
        qr.setup_position_probe_pattern(n - 7, 0)
        qr.setup_position_probe_pattern(0, n - 7)
        qr.setup_position_adjust_pattern()
        qr.setup_timing_pattern()
        qr.setup_type_info(test, mask)
        if version >= 7:
            qr.setup_type_number(test)
        return qr.modules

    coords = _data_coords(patterns(True, 0))
    total = len(coords)
    index = {rc: i for i, rc in enumerate(coords)}
    masks = []
    for mask in range(8):
        f = util.mask_func(mask)
        masks.append(_ints([[(r, c) in index and bool(f(r, c)) for c in range(n)] for r in range(n)]))
    found = _Layout(_grid(n), total, itemgetter(*(index.get((r, c), total) for r in range(n) for c in range(n))),
                    itemgetter(*(index.get((r, c), total) for c in range(n) for r in range(n))),
                    tuple(_ints(patterns(True, m)) for m in range(8)),
                    tuple(_ints(patterns(False, m))[0] for m in range(8)), tuple(masks))
    _LAYOUTS[(version, level)] = found
    return found


_EXP = [0] * 512
_LOG = [0] * 256
_x = 1
for _i in range(255):
    _EXP[_i] = _x
    _LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D  # GF(256) of QR codes: x^8 + x^4 + x^3 + x^2 + 1
for _i in range(255, 512):
    _EXP[_i] = _EXP[_i - 255]
_RS_TABLES: dict[int, list[int]] = {}


def _rs_table(ec: int) -> list[int]:
    """For each byte f: f times the generator polynomial's lower `ec` coefficients, packed in one int."""
    table = _RS_TABLES.get(ec)
    if table is None:
        gen = [1]
        for i in range(ec):  # (x - a^0)(x - a^1)...(x - a^(ec-1))
            nxt = gen + [0]
            for j, g in enumerate(gen):
                if g:
                    nxt[j + 1] ^= _EXP[_LOG[g] + i]
            gen = nxt
        logs = [_LOG[g] if g else None for g in gen[1:]]
        table = [0] + [int.from_bytes(bytes(0 if lg is None else _EXP[lg + _LOG[f]] for lg in logs), "big")
                       for f in range(1, 256)]
        _RS_TABLES[ec] = table
    return table


def _rs_remainder(data: bytes, ec: int) -> bytes:
    """The Reed-Solomon error correction codewords of one block."""
    table = _rs_table(ec)
    shift = 8 * (ec - 1)
    mask = (1 << (8 * ec)) - 1
    rem = 0
    for b in data:
        rem = ((rem << 8) & mask) ^ table[(rem >> shift) ^ b]
    return rem.to_bytes(ec, "big")


def _segment_bits(data: Any) -> tuple[int, int]:
    """(value, bit count) of one of qrcode's data segments, written as QRData.write writes it."""
    from qrcode import util

    raw = data.data
    if data.mode == util.MODE_8BIT_BYTE:
        return int.from_bytes(raw, "big"), 8 * len(raw)
    acc = nbits = 0
    if data.mode == util.MODE_NUMBER:
        for i in range(0, len(raw), 3):
            chars = raw[i:i + 3]
            length = util.NUMBER_LENGTH[len(chars)]
            acc = (acc << length) | int(chars)
            nbits += length
    else:  # MODE_ALPHA_NUM
        find = util.ALPHA_NUM.find
        for i in range(0, len(raw), 2):
            chars = raw[i:i + 2]
            if len(chars) > 1:
                acc = (acc << 11) | (find(chars[0]) * 45 + find(chars[1]))
                nbits += 11
            else:
                acc = (acc << 6) | find(chars)
                nbits += 6
    return acc, nbits


def _codewords(text: str, level: int) -> tuple[int, bytes] | None:
    """(version, interleaved data and error correction codewords) as qrcode's best_fit and create_data make
    them, with the bits in one int and a table-driven Reed-Solomon; None for what qrcode must do itself."""
    from bisect import bisect_left

    from qrcode import base, util

    segments = qrcode.QRCode(error_correction=level)
    segments.add_data(text)
    data_list = segments.data_list
    if any(d.mode not in (util.MODE_NUMBER, util.MODE_ALPHA_NUM, util.MODE_8BIT_BYTE) for d in data_list):
        return None
    parts = [_segment_bits(d) for d in data_list]
    start = 1
    while True:  # best_fit: the mode header sizes depend on the version
        sizes = util.mode_sizes_for_version(start)
        needed = sum(4 + sizes[d.mode] + nbits for d, (_, nbits) in zip(data_list, parts))
        version = bisect_left(util.BIT_LIMIT_TABLE[level], needed, start)
        if version == 41:
            raise ValueError(f"{len(text)} characters are too many for one QR code at error correction M")
        if sizes is util.mode_sizes_for_version(version):
            break
        start = version
    acc = nbits = 0
    for d, (value, n) in zip(data_list, parts):
        length = sizes[d.mode]
        acc = (((acc << 4 | d.mode) << length | len(d)) << n) | value
        nbits += 4 + length + n
    blocks = base.rs_blocks(version, level)
    limit = sum(b.data_count * 8 for b in blocks)
    end = min(limit - nbits, 4)  # the terminator, then zeros to a whole byte
    acc, nbits = acc << end, nbits + end
    if nbits % 8:
        acc, nbits = acc << (8 - nbits % 8), nbits + 8 - nbits % 8
    fill = (limit - nbits) // 8
    raw = acc.to_bytes(nbits // 8, "big") + (bytes((util.PAD0, util.PAD1)) * (fill // 2 + 1))[:fill]
    data_blocks, ec_blocks, offset = [], [], 0
    for b in blocks:
        chunk = raw[offset:offset + b.data_count]
        offset += b.data_count
        data_blocks.append(chunk)
        ec_blocks.append(_rs_remainder(chunk, b.total_count - b.data_count))
    out = bytearray()
    for group in (data_blocks, ec_blocks):
        for i in range(max(len(g) for g in group)):
            out.extend(g[i] for g in group if i < len(g))
    return version, bytes(out)


def qr_rows(text: str) -> list[int]:
    """The modules of a QR code for `text` at error correction M, as row ints (1 = dark), no quiet zone."""
    found = _codewords(text, ERROR_CORRECT_M)
    if found is None:  # a mode qrcode's own encoder knows better (none today): its bytes, our layout
        from qrcode import util

        qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M)
        qr.add_data(text)
        qr.best_fit()
        found = qr.version, bytes(util.create_data(qr.version, ERROR_CORRECT_M, qr.data_list))
    version, data = found
    lay = _layout(version, ERROR_CORRECT_M)
    total = lay.total
    raw = data[: (total + 7) // 8]
    bits = int.from_bytes(raw, "big") << (total - 8 * len(raw)) if 8 * len(raw) <= total \
        else int.from_bytes(raw, "big") >> (8 * len(raw) - total)
    chars = format(bits, f"0{total}b") + "0"
    rows, cols = int("".join(lay.by_rows(chars)), 2), int("".join(lay.by_cols(chars)), 2)
    best = best_mask = -1
    for mask in range(8):
        (t_rows, t_cols), (k_rows, k_cols) = lay.tested[mask], lay.masks[mask]
        p = _penalty(t_rows | (rows ^ k_rows), t_cols | (cols ^ k_cols), lay.grid)
        if best < 0 or p < best:
            best, best_mask = p, mask
    matrix = lay.final[best_mask] | (rows ^ lay.masks[best_mask][0])
    n = lay.grid.n
    line = (1 << n) - 1
    return [(matrix >> (n * (n - 1 - r))) & line for r in range(n)]


def qr_matrix(text: str, border: int = 4) -> list[list[bool]]:
    """The modules of a QR code for `text` at error correction M (True = dark), quiet zone included."""
    rows = qr_rows(text)
    n = len(rows)
    width = n + 2 * border
    fmt = f"0{n}b"
    out = [[False] * width for _ in range(border)]
    out += [[False] * border + [ch == "1" for ch in format(r, fmt)] + [False] * border for r in rows]
    out += [[False] * width for _ in range(border)]
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(rows: list[int], width: int, box: int) -> bytes:
    """A black-on-white 1-bit greyscale PNG of row ints (1 = dark) `width` modules wide, with zlib alone:
    qrcode's own PNG back ends need Pillow or pypng, which a Raspberry Pi-class edge does without."""
    size = width * box
    pad = -size % 8
    expand = {48: "0" * box, 49: "1" * box}
    full = (1 << width) - 1  # ~r: a dark module is black, 0 in greyscale
    fmt = f"0{width}b"
    lines = []
    for r in rows:
        bits = format(~r & full, fmt).translate(expand) + "0" * pad
        line = b"\x00" + int(bits, 2).to_bytes((size + pad) // 8, "big")
        lines.extend([line] * box)
    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(lines), 6))
            + _chunk(b"IEND", b""))


def matrix_png(matrix: list[list[bool]], box: int = 10) -> bytes:
    """A PNG of a module matrix (True = dark)."""
    return _png([int("".join("1" if m else "0" for m in row), 2) for row in matrix], len(matrix), box)


def qr_png(text: str, box: int = 10, border: int = 4) -> bytes:
    rows = [r << border for r in qr_rows(text)]
    width = len(rows) + 2 * border
    blank = [0] * border
    return _png(blank + rows + blank, width, box)


def qr_version(text: str) -> int:
    """QR version (1..40) of `text` at error correction M, as qr_png draws it."""
    return (len(qr_matrix(text, border=0)) - 17) // 4


def qr_svg(text: str, module: int = 10, border: int = 4, *, title: str | None = None) -> str:
    """A black-on-white SVG of the same matrix qr_png draws: one path, crisp edges, scalable; its <title>
    names it for screen readers ("QR code" unless `title` says more)."""
    matrix = qr_matrix(text, border)
    n = len(matrix)
    parts = []
    for y, row in enumerate(matrix):
        x = 0
        while x < n:
            if row[x]:
                start = x
                while x < n and row[x]:
                    x += 1
                parts.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
            else:
                x += 1
    label = f"<title>{html.escape(title or 'QR code')}</title>"
    size = n * module
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {n} {n}" width="{size}" height="{size}" '
            f'shape-rendering="crispEdges" role="img">{label}<rect width="{n}" height="{n}" fill="#fff"/>'
            f'<path fill="#000" d="{"".join(parts)}"/></svg>')


def svg_matrix(svg: str) -> list[list[bool]]:
    """The module matrix an SVG from qr_svg draws (tests compare it with the PNG's)."""
    n = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1))  # type: ignore[union-attr]
    m = [[False] * n for _ in range(n)]
    for x, y, w in re.findall(r"M(\d+) (\d+)h(\d+)v1", svg):
        for i in range(int(x), int(x) + int(w)):
            m[int(y)][i] = True
    return m


def minted(signer: Signer, kind: str, target: str, ttl_s: int | None = None, fmt: str = "png") -> dict[str, Any]:
    """`{"token", "url", "kind", "target", "expires_at", "png_base64"|"svg"}` (POST /api/v1/qr, CLI)."""
    token = signer.mint(kind, target, ttl_s)
    url = signer.url(token)
    exp = signer.verify(token).expiry
    out: dict[str, Any] = {"token": token, "url": url, "kind": kind, "target": target,
                           "expires_at": exp or None}
    if fmt == "svg":
        out["svg"] = qr_svg(url)
    elif fmt == "png":
        out["png_base64"] = base64.b64encode(qr_png(url)).decode()
    return out


# --- printable sheet -------------------------------------------------------------------------------------

def zone_touchpoints(cfg: Config, zone: str) -> list[tuple[str, str]]:
    """(target, label) of a zone's touchpoints: its screens, the content they play, its products; the labels
    in the store's language (the sheet hangs in the store)."""
    lang = cfg.store.language
    out: dict[str, str] = {}
    contents = {c.id: c for c in cfg.content}
    for s in cfg.screens:
        if s.zone == zone:
            out[s.id] = translate(lang, "Screen %(screen)s", screen=s.id)
            for cid in s.playlist:
                c = contents.get(cid)
                title = localized(c.texts(), lang, lang)["title"] if c else ""
                out.setdefault(cid, title or cid)
    for p in cfg.products:
        if p.zone == zone:
            out.setdefault(p.sku, localized(p.texts(), lang, lang, ("name",))["name"])
    return list(out.items())


SHEET_CSS = """@page{size:A4;margin:12mm}*{box-sizing:border-box}body{font-family:sans-serif;margin:0;color:#000}
h1{font-size:16pt;margin:0 0 6mm}.grid{display:grid;grid-template-columns:repeat(3,1fr);gap:6mm}
.card{border:1px dashed #999;padding:4mm;text-align:center;break-inside:avoid;page-break-inside:avoid}
.card svg{width:48mm;height:48mm}.label{font-size:11pt;font-weight:bold;margin:2mm 0 1mm}
.meta{font-size:8pt;color:#444;word-break:break-all}"""


def sheet_html(cfg: Config, signer: Signer, zone: str, ttl_s: int | None = None) -> str:
    """Print-ready A4 HTML: one card per touchpoint of the zone (inline SVG, label, target, expiry)."""
    zones = {z.id: z for z in cfg.zones}
    if zone not in zones:
        raise QrError("malformed", f"no zone {zone!r} in [[zones]]; known: {', '.join(zones) or 'none'}")
    lang, tz = cfg.store.language, cfg.store.timezone
    cards = []
    for target, label in zone_touchpoints(cfg, zone):
        token = signer.mint("touchpoint", target, ttl_s)
        url = signer.url(token)
        exp = signer.verify(token).expiry
        until = (translate(lang, "valid until %(date)s", date=format_date(exp, lang, tz)) if exp
                 else translate(lang, "no expiry"))
        cards.append(f'<div class="card">{qr_svg(url, title=label)}<div class="label">{html.escape(label)}</div>'
                     f'<div class="meta">{html.escape(target)} · {html.escape(until)}</div></div>')
    name = zones[zone].name or zone
    store = cfg.store.name or cfg.store.id
    none = translate(lang, "No touchpoints in this zone.")
    body = "".join(cards) or f"<p>{html.escape(none)}</p>"
    title = translate(lang, "QR codes")
    return (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{html.escape(title)} · '
            f'{html.escape(store)} · {html.escape(name)}</title><style>{SHEET_CSS}</style></head><body><h1>'
            f'{html.escape(store)} — {html.escape(name)}</h1><div class="grid">{body}</div></body></html>')


# --- CLI: instore-edge qr ... ----------------------------------------------------------------------------

CLI_KINDS = ("touchpoint", "pickup", "return")  # handoff codes come from the kiosk (POST /kiosk/<id>/handoff)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("qr", help="mint QR codes (PNG/SVG) and printable sheets of a zone's touchpoints",
                              description="Mint signed QR codes ([qr] secret) that open {qr.base_url}/q/<token>.")
    sub = p.add_subparsers(dest="qr_command", required=True, metavar="SUBCOMMAND")
    m = sub.add_parser("mint", help="mint one code: --kind touchpoint --target X --out code.png|code.svg",
                       description="Mint one signed QR code and print the URL it opens.")
    m.add_argument("-c", "--config", required=True, metavar="STORE.TOML", help="store config file (TOML)")
    m.add_argument("--kind", choices=CLI_KINDS, default="touchpoint",
                   help="touchpoint: a product, screen or content to open on the phone (default); "
                        "pickup: an order to collect; return: a return to hand in")
    m.add_argument("--target", required=True, metavar="ID",
                   help="what the code opens: for a touchpoint a [[products]] sku, a [[screens]] id or a "
                        "[[content]] id from the config; for pickup an order id; for return a return id")
    m.add_argument("--force", action="store_true",
                   help="mint a touchpoint even if its target is not in the config (it then opens a generic page)")
    m.add_argument("--ttl", type=int, default=None, metavar="SECONDS",
                   help="validity in seconds (default [qr] ttl_s; 0 = never expires)")
    m.add_argument("--out", required=True, metavar="FILE",
                   help="file to write, ending in .png or .svg (its folder must exist)")
    s = sub.add_parser("sheet", help="printable A4 HTML of a zone's touchpoint codes",
                       description="A printable A4 page of a zone's touchpoints (its screens, their content, its "
                                   "products), each code with its label and expiry.")
    s.add_argument("-c", "--config", required=True, metavar="STORE.TOML", help="store config file (TOML)")
    s.add_argument("--zone", required=True, metavar="ZONE", help="a [[zones]] id from the config")
    s.add_argument("--ttl", type=int, default=None, metavar="SECONDS",
                   help="validity of every code in seconds (default [qr] ttl_s; 0 = never expires)")
    s.add_argument("--out", required=True, metavar="FILE", help="HTML file to write (its folder must exist)")
    p.set_defaults(func=run)


def touchpoint_targets(cfg: Config) -> dict[str, str]:
    """What a touchpoint may open, by id: products, screens and content items of the config."""
    known = {p.sku: "product" for p in cfg.products}
    known.update((s.id, "screen") for s in cfg.screens if s.id not in known)
    known.update((c.id, "content") for c in cfg.content if c.id not in known)
    return known


def _unknown_target_message(cfg: Config, target: str) -> str:
    known = touchpoint_targets(cfg)
    listed = ", ".join(sorted(known)[:12]) + (", …" if len(known) > 12 else "")
    return (f"no product, screen or content {target!r} in the config, so the code would open a generic page: "
            f"add it to the config ([[products]] sku = {json.dumps(target)}, name = ..., zone = ...), or use a known id "
            f"({listed or 'the config has none'}), or pass --force to mint it anyway")


def _writable_out(out: Path) -> str | None:
    """Why --out cannot be written (its folder is missing or is not a folder), or None."""
    folder = out.parent
    if not folder.exists():
        return f"the folder {str(folder)!r} does not exist: create it (mkdir -p {folder}) or choose another --out"
    if not folder.is_dir():
        return f"{str(folder)!r} is not a folder: choose another --out"
    if out.is_dir():
        return f"{str(out)!r} is a folder: give a file name, e.g. {out / 'code.png'}"
    return None


def run(args: argparse.Namespace) -> int:
    from edge.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    signer = Signer.from_config(cfg)
    out = Path(args.out)
    if args.qr_command == "mint" and out.suffix.lower() not in (".png", ".svg"):
        print(f"error: --out must end in .png or .svg, got {str(out)!r}", file=sys.stderr)
        return 2
    problem = _writable_out(out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.qr_command == "mint" and args.kind == "touchpoint" and not args.force \
            and args.target not in touchpoint_targets(cfg):
        print(f"error: {_unknown_target_message(cfg, args.target)}", file=sys.stderr)
        return 2
    try:
        if args.qr_command == "mint":
            token = signer.mint(args.kind, args.target, args.ttl)
            url = signer.url(token)
            if out.suffix.lower() == ".png":
                out.write_bytes(qr_png(url))
            else:
                out.write_text(qr_svg(url, title=args.target))
            print(url)
        else:
            out.write_text(sheet_html(cfg, signer, args.zone, args.ttl))
            print(out)
    except QrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {str(out)!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
