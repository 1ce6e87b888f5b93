"""Validation sequences: video files and numbered frame folders; streaming flicker matches the metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from platform.data.formats import write_array
from platform.data.video import frame_files, read_frames, write_frames, write_video
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
