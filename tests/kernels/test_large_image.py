"""Tile geometry, blend weights and the streamed PNG/BigTIFF writers of kernels/large_image.py."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch

from ultrares.kernels import large_image as li
from ultrares.kernels import tiling


@pytest.mark.parametrize("length,tile,overlap", [(100, 16, 4), (64, 64, 8), (10, 16, 4), (257, 64, 16), (65, 64, 0)])
def test_tiles_cover_inside_with_overlap(length, tile, overlap):
    starts = tiling.starts(length, tile, tile - overlap)
    size = min(tile, length)
    covered = torch.zeros(length, dtype=torch.int32)
    for s in starts:
        assert 0 <= s and s + size <= length
        covered[s:s + size] += 1
    assert (covered >= 1).all()
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_blend_weights_normalise_to_a_partition_of_unity():
    """Blending identical tiles of a constant image gives the constant (weights positive)."""
    H, W, tile, overlap = 90, 130, 32, 8
    acc = torch.zeros(H, W)
    wsum = torch.zeros(H, W)
    for y in tiling.starts(H, tile, tile - overlap):
        for x in tiling.starts(W, tile, tile - overlap):
            w = tiling.tile_weights(y, x, tile, tile, (H, W), overlap)
            assert (w > 0).all()
            acc[y:y + tile, x:x + tile] += 0.7 * w
            wsum[y:y + tile, x:x + tile] += w
    assert torch.allclose(acc / wsum, torch.full((H, W), 0.7))
    # Image borders keep full weight; interior tile edges ramp down.
    w = tiling.axis_weights(0, 32, 130, 8)
    assert w[0] == 1 and w[-1] < 0.1 and w[15] == 1


def pil_image():
    """Pillow where installed (the ComfyUI venv has it); these checks are extra there."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def decode_filter0_png(data: bytes) -> np.ndarray:
    """Independent minimal PNG reader for 8-bit RGB, filter 0 (what the writer produces)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_png_writer_roundtrip():
    img = (torch.rand(37, 53, 3) * 255).to(torch.uint8)
    buf = io.BytesIO()
    w = li.PngStreamWriter(buf, 53, 37)
    w.write_rows(img[:5])
    w.write_rows(img[5:])
    w.close()
    assert np.array_equal(decode_filter0_png(buf.getvalue()), img.numpy())
    Image = pil_image()
    if Image is not None:
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(buf.getvalue()))), img.numpy())
    with pytest.raises(ValueError):
        li.PngStreamWriter(io.BytesIO(), 4, 4).close()  # rows missing


@pytest.mark.parametrize("compression", ["none", "deflate"])
def test_bigtiff_writer_roundtrip(tmp_path, compression):
    img = (torch.rand(41, 29, 3) * 255).to(torch.uint8)
    path = tmp_path / "x.tif"
    with open(path, "wb") as f:
        w = li.BigTiffStreamWriter(f, 29, 41, rows_per_strip=6, compression=compression)
        w.write_rows(img[:13])
        w.write_rows(img[13:])
        w.close()
    assert path.read_bytes()[:4] == b"II+\x00"
    hw, rows = li.read_bigtiff_rgb(path)
    assert hw == (41, 29) and torch.equal(rows, img)
    assert torch.equal(li.read_bigtiff_rgb(path, (7, 20))[1], img[7:20])
    Image = pil_image()
    if Image is not None:  # Pillow reads BigTIFF too
        assert np.array_equal(np.asarray(Image.open(path)), img.numpy())


def test_row_preview_is_area_average():
    img = torch.rand(50, 70, 3)
    p = li.RowPreview(50, 70, max_side=20)  # factor 4
    for a in range(0, 50, 7):
        p.add(img[a:a + 7])
    out = p.result()
    ref = torch.nn.functional.avg_pool2d(img.permute(2, 0, 1)[None], 4, 4, ceil_mode=True)[0].permute(1, 2, 0)
    assert out.shape == (13, 18, 3) and torch.allclose(out, ref, atol=1e-6)
