"""Issue 15.5: bounded inputs and whole files.

An image or video larger than ``PLATFORM_MAX_PIXELS`` is refused from its header, before any
pixel is decoded (a 100000 x 100000 PNG bomb of a few hundred bytes included); checkpoints
are written under a temporary name and renamed, so a failed write leaves the old file whole.
(Search names: ``tests/test_budgets_hold.py::test_search_names_are_restricted_to_safe_characters``.)
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from platform.data.formats import read_array, read_mask, write_array
from platform.errors import ConfigError, DataError


def _png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A valid PNG header claiming width x height RGB pixels, with a tiny compressed body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    body = zlib.compress(b"\0" * 4096)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_png_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    from platform.data import formats

    def no_decode(*args, **kwargs):
        raise AssertionError("the decoder ran")

    monkeypatch.setattr(formats, "_read_cv2", no_decode)
    monkeypatch.setattr(formats, "_read_imageio", no_decode)
    bomb = _png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1000
    with pytest.raises(DataError, match=r"bomb\.png is 10,000,000,000 pixels.*limit of 67,108,864.*not decoded"):
        read_array(bomb)
    with pytest.raises(DataError, match="PLATFORM_MAX_PIXELS"):
        read_mask(bomb)


def test_limit_is_configurable_and_8k_fits_by_default(tmp_path, monkeypatch):
    img = tmp_path / "small.png"
    write_array(img, np.zeros((40, 50, 3), np.uint8))
    assert read_array(img).shape == (40, 50, 3)
    monkeypatch.setenv("PLATFORM_MAX_PIXELS", "1999")
    with pytest.raises(DataError, match=r"small\.png is 50 x 40 = 2,000 pixels, more than the limit of 1,999"):
        read_array(img)
    monkeypatch.setenv("PLATFORM_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="PLATFORM_MAX_PIXELS"):
        read_array(img)
    monkeypatch.delenv("PLATFORM_MAX_PIXELS")
    from platform.data.limits import check_pixels

    check_pixels("plate.exr", 8192, 4320)  # 8K DCI
    check_pixels("plate.exr", 7680, 4320)  # 8K UHD


def test_exr_and_video_are_checked_from_their_headers(tmp_path, monkeypatch):
    from platform.data.video import probe

    exr = tmp_path / "plate.exr"
    write_array(exr, np.zeros((32, 48, 3), np.float32))
    video = tmp_path / "plate.mp4"
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(video), (64, 48), fps=24, macro_block_size=1)
    writer.send(None)
    for _ in range(3):
        writer.send(np.zeros((48, 64, 3), np.uint8).tobytes())
    writer.close()
    assert probe(video).width == 64 and read_array(exr).shape == (32, 48, 3)
    monkeypatch.setenv("PLATFORM_MAX_PIXELS", "1000")
    with pytest.raises(DataError, match=r"plate\.exr is 48 x 32"):
        read_array(exr)
    with pytest.raises(DataError, match=r"video .*plate\.mp4 is 64 x 48"):
        probe(video)


def test_checkpoint_write_is_all_or_nothing(tmp_path, monkeypatch):
    from platform.safeio import save_atomic

    dest = tmp_path / "state.pt"
    save_atomic({"epoch": 1}, dest)
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError):
        save_atomic({"epoch": 2}, dest)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(dest, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary left behind
