"""Video files and numbered frame folders (validation sequences), 8- to 12-bit; streaming flicker matches the metric."""

from __future__ import annotations

import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from platform.data.formats import write_array
from platform.data.video import frame_files, iter_frames, probe, read_frames, read_video, write_frames, write_video
from platform.errors import DataError

RNG = np.random.default_rng(5)


def _frames(n=5, h=24, w=32):
    base = RNG.integers(0, 200, size=(h, w, 3), dtype=np.uint8)
    return [np.clip(base.astype(int) + 10 * i, 0, 255).astype(np.uint8) for i in range(n)]


def test_lossless_video_round_trip(tmp_path):
    frames = _frames()
    path = write_video(tmp_path / "clip.mkv", frames, fps=12, lossless=True)
    back = read_frames(path)
    assert len(back) == 5
    for a, b in zip(back, frames):
        np.testing.assert_array_equal(a, b)
    sub = read_frames(path, start=1, step=2)
    assert len(sub) == 2
    np.testing.assert_array_equal(sub[1], frames[3])
    assert len(read_frames(path, max_frames=3)) == 3


def test_h264_video_is_close(tmp_path):
    yy, xx = np.mgrid[0:32, 0:48]
    frames = [np.stack([(xx * 5 + 8 * i) % 256, yy * 6, np.full_like(xx, 128)], 2).astype(np.uint8) for i in range(4)]
    back = read_frames(write_video(tmp_path / "clip.mp4", frames, fps=24))  # smooth pictures: lossy but close
    assert len(back) == 4 and back[0].shape == (32, 48, 3)
    assert np.abs(back[2].astype(int) - frames[2]).mean() < 12


def _ffmpeg_video(path, pix_fmt: str, planes: list[np.ndarray], tags=()) -> None:
    """A lossless FFV1 clip made by the bundled ffmpeg straight from raw planar samples
    (``planes``: one (P, H, W) integer array per frame, in ``pix_fmt``'s plane order)."""
    _, h, w = planes[0].shape
    raw = b"".join(np.ascontiguousarray(f).astype("<u2").tobytes() for f in planes)
    # The tags go on the input too: on the output only, ffmpeg would convert the samples to them.
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", pix_fmt,
                    "-s", f"{w}x{h}", "-r", "24", *tags, "-i", "-", "-c:v", "ffv1", *tags, str(path)], input=raw,
                   check=True)


@pytest.mark.parametrize("bits", [10, 12])
def test_10_and_12_bit_video_keeps_every_bit(tmp_path, bits):
    top = 2**bits - 1
    codes = [RNG.integers(0, top + 1, size=(24, 40, 3)) for _ in range(3)]  # R, G, B samples
    path = tmp_path / f"plate{bits}.mkv"
    _ffmpeg_video(path, f"gbrp{bits}le", [c.transpose(2, 0, 1)[[1, 2, 0]] for c in codes])  # planes G, B, R
    info = probe(path)
    assert (info.frames, info.width, info.height, info.bit_depth, info.pix_fmt) == (3, 40, 24, 16, f"gbrp{bits}le")
    for got in (list(read_video(path, info)), read_frames(path)):
        assert len(got) == 3
        for frame, want in zip(got, codes):
            assert frame.dtype == np.uint16 and frame.shape == (24, 40, 3)
            np.testing.assert_array_equal(np.round(frame.astype(np.float64) * top / 65535), want)
            assert len(np.unique(frame)) > 256  # more levels than 8 bits hold
    np.testing.assert_array_equal(next(iter_frames(path, start=2)), read_frames(path)[2])


BT709 = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]


def test_10bit_yuv_video_keeps_depth_and_colour_tags(tmp_path):
    """A BT.709 limited-range 10-bit grey ramp: its tags are read, and every 10-bit step of the
    ramp is a distinct, higher value after decoding (8-bit decoding merges four steps into one)."""
    luma = np.tile(np.arange(400, 560), (8, 1))  # 160 consecutive 10-bit codes, neutral chroma
    planes = np.stack([luma, np.full_like(luma, 512), np.full_like(luma, 512)])
    path = tmp_path / "ramp.mkv"
    _ffmpeg_video(path, "yuv444p10le", [planes] * 2, tags=BT709)
    info = probe(path)
    assert (info.bit_depth, info.colorspace, info.color_range) == (16, "bt709", "tv")
    row = next(read_video(path, info))[4].astype(np.int64)  # (160, 3)
    assert (row[:, 0] == row[:, 1]).all() and (row[:, 1] == row[:, 2]).all()  # grey stays grey
    assert (np.diff(row[:, 0]) > 0).all()
    np.testing.assert_allclose(row[:, 0] / 65535, (luma[0] - 64) / 876, atol=1e-5)  # limited -> full range


@pytest.mark.parametrize("tag,kr,kb", [("bt709", 0.2126, 0.0722), ("bt470bg", 0.299, 0.114)])
def test_10bit_yuv_video_is_decoded_with_its_own_matrix(tmp_path, tag, kr, kb):
    yuv = np.stack([RNG.integers(300, 700, (16, 24)), RNG.integers(450, 575, (16, 24)), RNG.integers(450, 575, (16, 24))])
    path = tmp_path / f"{tag}.mkv"
    _ffmpeg_video(path, "yuv444p10le", [yuv], tags=["-colorspace", tag, "-color_range", "tv"])
    got = next(read_video(path)) / 65535
    y, cb, cr = (yuv[0] - 64) / 876, (yuv[1] - 512) / 896, (yuv[2] - 512) / 896
    r, b = y + 2 * (1 - kr) * cr, y + 2 * (1 - kb) * cb
    want = np.stack([r, (y - kr * r - kb * b) / (1 - kr - kb), b], -1)  # the tagged matrix, by hand
    np.testing.assert_allclose(got, np.clip(want, 0, 1), atol=1e-5)


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_deep_writer_round_trip_keeps_levels_and_tags(tmp_path, suffix):
    """10-bit H.264 / ProRes 4444 written from 16-bit RGB: flat grey patches come back at their
    level (the codecs keep them), white at white, a saturated colour within the codecs' loss, and
    the tags as the source's."""
    from fractions import Fraction

    from platform.data.video import VideoInfo, VideoWriter

    levels = np.array([0, 16384, 32768, 49152, 65535], dtype=np.uint16)
    frame = np.repeat(np.repeat(levels, 16)[None, :, None], 32, axis=0).repeat(3, axis=2)  # grey steps
    frame[:16, :16] = (65535, 20000, 4000)  # and a saturated orange
    info = VideoInfo(width=80, height=32, fps=Fraction(24), frames=2, bit_depth=16, colorspace="bt709",
                     color_primaries="bt709", color_trc="bt709", color_range="tv")
    path = tmp_path / f"out{suffix}"
    with VideoWriter(path, info) as writer:
        for _ in range(2):
            writer.write(frame)
    back = probe(path)
    assert (back.bit_depth, back.colorspace, back.color_range, back.frames) == (16, "bt709", "tv", 2)
    got = next(read_video(path, back)).astype(np.int64)
    inner = (slice(4, -4), slice(4, -4))  # away from the patch edges the codecs blur
    for x0 in range(16, 80, 16):
        patch = got[20:28, x0 + 4:x0 + 12]
        # within a quarter of a 10-bit step (ffmpeg's own RGB->YUV put them up to 3.5 steps too high)
        assert np.abs(patch - int(frame[20, x0, 0])).max() <= 16, (x0, patch.min(), patch.max())
    assert np.abs(got[:16, :16][inner] - frame[:16, :16][inner]).max() <= 4 * 64  # ProRes is lossy too


def test_video_alpha_is_kept_for_sequences_and_refused_elsewhere(tmp_path):
    from platform.errors import DataError

    rgba = [RNG.integers(0, 256, size=(16, 24, 4), dtype=np.uint8) for _ in range(2)]
    path = tmp_path / "matte.mov"
    gen = imageio_ffmpeg.write_frames(str(path), (24, 16), fps=24, macro_block_size=1, quality=None, codec="png",
                                      pix_fmt_in="rgba", pix_fmt_out="rgba", ffmpeg_log_level="error")
    gen.send(None)
    for f in rgba:
        gen.send(f.tobytes())
    gen.close()
    for got, want in zip(read_frames(path), rgba):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(DataError, match="alpha channel"):
        next(read_video(path))


def test_frame_folder_order_and_formats(tmp_path):
    frames = [RNG.integers(0, 65536, size=(8, 9, 3), dtype=np.uint16) for _ in range(3)]
    for n, f in zip((9, 10, 11), frames):  # unpadded numbers sort numerically, not as text
        write_array(tmp_path / f"shot.{n}.png", f)
    assert [p.name for p in frame_files(tmp_path)] == ["shot.9.png", "shot.10.png", "shot.11.png"]
    back = read_frames(tmp_path)
    for a, b in zip(back, frames):
        np.testing.assert_array_equal(a, b)
    write_frames(tmp_path / "f32", [np.full((4, 4, 3), 2.5, np.float32)] * 2, pattern="x.{:04d}.tif")
    assert read_frames(tmp_path / "f32")[1].dtype == np.float32


def test_sequence_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_frames(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no images"):
        read_frames(tmp_path / "empty")
    write_array(tmp_path / "named" / "still.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="carry no frame number"):
        read_frames(tmp_path / "named")
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="bad.mp4"):
        read_frames(tmp_path / "bad.mp4")


class _Shift(torch.nn.Module):
    """A fixed 'network' (brightens by 0.1) so the expected metrics can be computed by hand."""

    size_multiple = 1

    def forward(self, x):
        return (x + 0.1).clamp(-1, 1)


def test_img2img_validates_sequences_with_flicker(tmp_path):
    from platform import metrics
    from platform.tasks import create

    for sub in ("input", "target"):
        for n in ("a", "b"):
            write_array(tmp_path / sub / f"{n}.png", RNG.integers(0, 256, size=(20, 20, 3), dtype=np.uint8))
    inp = [RNG.integers(0, 256, size=(16, 16, 3), dtype=np.uint8) for _ in range(4)]
    tgt = [RNG.integers(0, 256, size=(16, 16, 3), dtype=np.uint8) for _ in range(4)]
    write_frames(tmp_path / "seq_in", inp)
    write_video(tmp_path / "seq_tgt.mkv", tgt, lossless=True)
    task = create("img2img", {"data": str(tmp_path), "crop": 8, "crops_per_epoch": 2, "val_holdout": 1,
                              "val_sequence": {"input": "seq_in", "target": "seq_tgt.mkv"}}, seed=0)
    assert "val_flicker" in task.metric_names
    res = task.validate(_Shift(), torch.device("cpu"))
    assert res.count == 1 + 4
    to_t = lambda fs: torch.stack([torch.from_numpy(f.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1) for f in fs])
    x, y = to_t(inp), to_t(tgt)
    out = (x + 0.1).clamp(-1, 1)
    expected = float(metrics.temporal_flicker(out, y))
    assert res.sums["val_flicker"] / res.count == pytest.approx(expected, abs=1e-5)
    psnr_seq = float(metrics.psnr(out, y, data_range=2.0, reduction="none").sum())
    assert res.sums["val_psnr"] >= psnr_seq - 1e-3  # the still frame adds its own PSNR on top
    # Another worker reports 0 flicker and only its share of the still frames.
    other = task.validate(_Shift(), torch.device("cpu"), rank=1, world_size=2)
    assert other.sums["val_flicker"] == 0.0 and other.count == 0


def test_validation_sequences_are_checked_when_the_task_is_built(tmp_path):
    from platform.tasks import create

    for sub in ("input", "target"):
        write_array(tmp_path / sub / "a.png", RNG.integers(0, 256, size=(20, 20, 3), dtype=np.uint8))
    base = {"data": str(tmp_path), "crop": 8, "crops_per_epoch": 2, "val_holdout": 0}
    with pytest.raises(DataError, match=r"task.val_sequence\[0\].input: plate.mov does not exist"):
        create("img2img", {**base, "val_sequence": {"input": "plate.mov", "target": "graded.mov"}}, seed=0)
    write_frames(tmp_path / "seq_in", [RNG.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)] * 2)
    write_frames(tmp_path / "seq_tgt", [RNG.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)] * 2)
    task = create("img2img", {**base, "val_sequence": {"input": "seq_in", "target": "seq_tgt"}}, seed=0)
    with pytest.raises(DataError, match="frame 0: input is 16x16x3 but target"):
        task.check_sequences()  # what the search driver runs before Ray starts


def test_validation_reads_10bit_sequences_at_full_precision(tmp_path):
    from platform.tasks import create

    for sub in ("input", "target"):
        write_array(tmp_path / sub / "a.png", RNG.integers(0, 256, size=(20, 20, 3), dtype=np.uint8))
    codes = [RNG.integers(0, 1024, size=(16, 16, 3)) for _ in range(2)]
    _ffmpeg_video(tmp_path / "plate.mkv", "gbrp10le", [c.transpose(2, 0, 1)[[1, 2, 0]] for c in codes])
    write_frames(tmp_path / "graded", [np.round(c * 65535 / 1023).astype(np.uint16) for c in codes])
    task = create("img2img", {"data": str(tmp_path), "crop": 8, "crops_per_epoch": 2, "val_holdout": 0,
                              "val_sequence": {"input": "plate.mkv", "target": "graded"}}, seed=0)
    pairs = list(task.sequence_frames(task.sequences[0]))
    assert len(pairs) == 2
    for (x, y), c in zip(pairs, codes):
        np.testing.assert_allclose(x, c / 1023, atol=2e-5)  # 8-bit frames would be off by up to 2e-3
        np.testing.assert_allclose(y, c / 1023, atol=2e-5)
