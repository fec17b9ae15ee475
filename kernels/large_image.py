"""Streamed image writers for images larger than RAM (pure Python/torch).

Used by the Pixelsmith gigapixel path. The official code (Thanos-DB/Pixelsmith@28c992b
``autoencoder_kl.py``) decodes 64-latent tiles and assembles the image in CPU RAM; here rows are
written to disk as soon as no later tile touches them, so RAM stays bounded by one band of tiles
(tile placement and blending: ``kernels/tiling.py``).

* :class:`PngStreamWriter`: 8-bit RGB PNG written row by row with ``zlib`` (filter type 0).
* :class:`BigTiffStreamWriter`: 8-bit RGB BigTIFF, strips, uncompressed or Adobe deflate, written
  sequentially; the IFD goes at the end and the header is patched when the image is complete.
* :func:`read_bigtiff_rgb`: a minimal reader for what the writer produces (for checks and tests).
"""
from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import torch


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


class PngStreamWriter:
    """8-bit RGB PNG written row by row (no filter, zlib level ``level``), bounded memory.

    Usage: ``w = PngStreamWriter(f, width, height)``, ``w.write_rows(uint8 (rows, width, 3))``
    until ``height`` rows were given, then ``w.close()``.
    """

    CHUNK = 1 << 20  # IDAT payload size

    def __init__(self, f: BinaryIO, width: int, height: int, level: int = 6):
        if not (0 < width < 2**31 and 0 < height < 2**31):
            raise ValueError(f"PNG size {width}x{height} is out of range")
        self.f, self.width, self.height = f, width, height
        self.rows_written = 0
        self._z = zlib.compressobj(level)
        self._pending = bytearray()
        f.write(b"\x89PNG\r\n\x1a\n")
        # IHDR: width, height, bit depth 8, colour type 2 (RGB), compression 0, filter 0, no interlace
        f.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))

    def _emit(self, data: bytes, final: bool = False) -> None:
        self._pending += data
        while len(self._pending) >= self.CHUNK or (final and self._pending):
            part = bytes(self._pending[: self.CHUNK])
            del self._pending[: self.CHUNK]
            self.f.write(_png_chunk(b"IDAT", part))

    def write_rows(self, rows: torch.Tensor) -> None:
        """``rows``: uint8 ``(n, width, 3)`` (CPU)."""
        if rows.dtype != torch.uint8 or rows.dim() != 3 or rows.shape[1:] != (self.width, 3):
            raise ValueError(f"PNG rows must be uint8 (n, {self.width}, 3), got {rows.dtype} {tuple(rows.shape)}")
        if self.rows_written + rows.shape[0] > self.height:
            raise ValueError("more PNG rows than the declared height")
        raw = rows.contiguous().numpy()
        for row in raw:
            self._emit(self._z.compress(b"\x00" + row.tobytes()))
        self.rows_written += rows.shape[0]

    def close(self) -> None:
        if self.rows_written != self.height:
            raise ValueError(f"PNG got {self.rows_written} rows of {self.height}")
        self._emit(self._z.flush(), final=True)
        self.f.write(_png_chunk(b"IEND", b""))


# TIFF field types and tags used below.
_SHORT, _LONG, _LONG8 = 3, 4, 16
_TAG = {"width": 256, "height": 257, "bits": 258, "compression": 259, "photometric": 262,
        "strip_offsets": 273, "samples": 277, "rows_per_strip": 278, "strip_counts": 279,
        "planar": 284}


class BigTiffStreamWriter:
    """8-bit RGB BigTIFF ('II', version 43) with strips of ``rows_per_strip`` rows.

    Strips are written as rows arrive; the IFD and the two strip tables go after the last strip
    and the header's IFD offset is patched on :meth:`close` (the file must be seekable).
    ``compression``: ``"none"`` (tag 1) or ``"deflate"`` (tag 8, zlib stream per strip).
    """

    def __init__(self, f: BinaryIO, width: int, height: int, rows_per_strip: int = 16,
                 compression: str = "none", level: int = 6):
        if compression not in ("none", "deflate"):
            raise ValueError(f"TIFF compression must be 'none' or 'deflate', got {compression!r}")
        self.f, self.width, self.height = f, width, height
        self.rows_per_strip = max(1, min(rows_per_strip, height))
        self.compression, self.level = compression, level
        self.offsets: list[int] = []
        self.counts: list[int] = []
        self.rows_written = 0
        self._buf = bytearray()
        self._row_bytes = width * 3
        f.write(b"II" + struct.pack("<HHHQ", 43, 8, 0, 0))  # IFD offset patched on close

    def _write_strip(self, data: bytes) -> None:
        if self.compression == "deflate":
            data = zlib.compress(data, self.level)
        self.offsets.append(self.f.tell())
        self.counts.append(len(data))
        self.f.write(data)

    def write_rows(self, rows: torch.Tensor) -> None:
        """``rows``: uint8 ``(n, width, 3)`` (CPU)."""
        if rows.dtype != torch.uint8 or rows.dim() != 3 or rows.shape[1:] != (self.width, 3):
            raise ValueError(f"TIFF rows must be uint8 (n, {self.width}, 3), got {rows.dtype} {tuple(rows.shape)}")
        if self.rows_written + rows.shape[0] > self.height:
            raise ValueError("more TIFF rows than the declared height")
        self._buf += rows.contiguous().numpy().tobytes()
        self.rows_written += rows.shape[0]
        strip_bytes = self.rows_per_strip * self._row_bytes
        while len(self._buf) >= strip_bytes:
            self._write_strip(bytes(self._buf[:strip_bytes]))
            del self._buf[:strip_bytes]

    def close(self) -> None:
        if self.rows_written != self.height:
            raise ValueError(f"TIFF got {self.rows_written} rows of {self.height}")
        if self._buf:
            self._write_strip(bytes(self._buf))
            self._buf = bytearray()
        f = self.f
        n = len(self.offsets)
        if f.tell() % 2:
            f.write(b"\x00")
        offsets_at = f.tell()
        f.write(struct.pack(f"<{n}Q", *self.offsets))
        counts_at = f.tell()
        f.write(struct.pack(f"<{n}Q", *self.counts))

        def inline(fmt: str, *values) -> bytes:
            return struct.pack("<" + fmt, *values).ljust(8, b"\x00")

        strip_offsets = inline("Q", offsets_at if n > 1 else self.offsets[0])
        strip_counts = inline("Q", counts_at if n > 1 else self.counts[0])
        entries = [
            (_TAG["width"], _LONG, 1, inline("I", self.width)),
            (_TAG["height"], _LONG, 1, inline("I", self.height)),
            (_TAG["bits"], _SHORT, 3, inline("HHH", 8, 8, 8)),
            (_TAG["compression"], _SHORT, 1, inline("H", 8 if self.compression == "deflate" else 1)),
            (_TAG["photometric"], _SHORT, 1, inline("H", 2)),
            (_TAG["strip_offsets"], _LONG8, n, strip_offsets),
            (_TAG["samples"], _SHORT, 1, inline("H", 3)),
            (_TAG["rows_per_strip"], _LONG, 1, inline("I", self.rows_per_strip)),
            (_TAG["strip_counts"], _LONG8, n, strip_counts),
            (_TAG["planar"], _SHORT, 1, inline("H", 1)),
        ]
        ifd_at = f.tell()
        f.write(struct.pack("<Q", len(entries)))
        for tag, kind, count, value in entries:
            f.write(struct.pack("<HHQ", tag, kind, count) + value)
        f.write(struct.pack("<Q", 0))  # no next IFD
        f.seek(8)
        f.write(struct.pack("<Q", ifd_at))
        f.seek(0, 2)


def read_bigtiff_rgb(path, rows: tuple[int, int] | None = None) -> tuple[tuple[int, int], torch.Tensor]:
    """Read what :class:`BigTiffStreamWriter` writes: ``((height, width), uint8 (n, width, 3))``.

    ``rows = (start, stop)`` reads only the strips covering those rows. Checks the header and
    the tags it relies on; raises ``ValueError`` on anything else.
    """
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:2] != b"II" or struct.unpack("<HHH", head[2:8]) != (43, 8, 0):
            raise ValueError(f"{path}: not a little-endian BigTIFF")
        (ifd_at,) = struct.unpack("<Q", head[8:16])
        f.seek(ifd_at)
        (count,) = struct.unpack("<Q", f.read(8))
        tags = {}
        for _ in range(count):
            tag, kind, n = struct.unpack("<HHQ", f.read(12))
            tags[tag] = (kind, n, f.read(8))

        def values(tag: int) -> list[int]:
            kind, n, raw = tags[tag]
            fmt = {_SHORT: "H", _LONG: "I", _LONG8: "Q"}[kind]
            size = struct.calcsize(fmt) * n
            if size <= 8:
                return list(struct.unpack(f"<{n}{fmt}", raw[:size]))
            here = f.tell()
            f.seek(struct.unpack("<Q", raw)[0])
            out = list(struct.unpack(f"<{n}{fmt}", f.read(size)))
            f.seek(here)
            return out

        width, height = values(_TAG["width"])[0], values(_TAG["height"])[0]
        if values(_TAG["bits"]) != [8, 8, 8] or values(_TAG["samples"]) != [3]:
            raise ValueError(f"{path}: not 8-bit RGB")
        compression = values(_TAG["compression"])[0]
        rps = values(_TAG["rows_per_strip"])[0]
        offsets, counts = values(_TAG["strip_offsets"]), values(_TAG["strip_counts"])
        start, stop = rows if rows is not None else (0, height)
        first, last = start // rps, (stop - 1) // rps
        parts = []
        for i in range(first, last + 1):
            f.seek(offsets[i])
            data = f.read(counts[i])
            if compression == 8:
                data = zlib.decompress(data)
            elif compression != 1:
                raise ValueError(f"{path}: compression {compression} not supported")
            parts.append(data)
        strip = torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8).view(-1, width, 3)
        return (height, width), strip[start - first * rps: stop - first * rps].clone()


class RowPreview:
    """Area-downsampled preview of an image delivered as row bands (bounded memory).

    ``factor = ceil(max(H, W) / max_side)``; rows are averaged in ``factor × factor`` blocks (the
    last partial block averages what exists).
    """

    def __init__(self, height: int, width: int, max_side: int = 1024):
        self.factor = max(1, -(-max(height, width) // max_side))
        self.width = width
        self._pending = torch.zeros(0, width, 3)
        self._out: list[torch.Tensor] = []

    def _pool(self, rows: torch.Tensor) -> torch.Tensor:
        f = self.factor
        x = rows.permute(2, 0, 1).unsqueeze(0)  # (1, 3, n, W)
        pooled = torch.nn.functional.avg_pool2d(x, kernel_size=f, stride=f, ceil_mode=True)
        return pooled[0].permute(1, 2, 0)  # (ceil(n/f), ceil(W/f), 3)

    def add(self, rows: torch.Tensor) -> None:
        """``rows``: float ``(n, W, 3)``."""
        self._pending = torch.cat([self._pending, rows.float()], dim=0)
        full = self._pending.shape[0] // self.factor * self.factor
        if full:
            self._out.append(self._pool(self._pending[:full]))
            self._pending = self._pending[full:].clone()

    def result(self) -> torch.Tensor:
        """Float ``(h, w, 3)`` preview."""
        if self._pending.shape[0]:
            self._out.append(self._pool(self._pending))
            self._pending = self._pending[:0]
        return torch.cat(self._out, dim=0)
