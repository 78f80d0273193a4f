"""QR codes as PNG bytes without an imaging library: qrcode builds the matrix, zlib packs a 1-bit PNG.

qrcode's own PNG back ends need Pillow or pypng; a 1-bit greyscale PNG is a few lines of zlib, so the
edge (which may run on a Raspberry Pi) needs neither.
"""

from __future__ import annotations

import struct
import zlib

import qrcode
from qrcode.constants import ERROR_CORRECT_M


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def qr_matrix(text: str, border: int = 4) -> list[list[bool]]:
    """The modules of a QR code for `text` (True = dark), quiet zone included."""
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=border)
    qr.add_data(text)
    qr.make(fit=True)
    return qr.get_matrix()


def qr_png(text: str, box: int = 10, border: int = 4) -> bytes:
    """A black-on-white PNG of a QR code for `text`, `box` pixels per module."""
    matrix = qr_matrix(text, border)
    size = len(matrix) * box
    rows = []
    for modules in matrix:
        bits = "".join(("0" if dark else "1") * box for dark in modules)  # greyscale 1 bit: 0 is black
        bits += "0" * (-len(bits) % 8)
        row = b"\x00" + int(bits, 2).to_bytes(len(bits) // 8, "big")  # filter type 0 (None)
        rows.extend([row] * box)
    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
            + _chunk(b"IEND", b""))
