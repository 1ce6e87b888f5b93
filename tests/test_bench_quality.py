"""``python -m platform.bench quality``: its test split, the unseen-colour share and the per-frame table."""

from __future__ import annotations

import numpy as np
import pytest

from platform.bench.quality import TEST_FRAMES, default_test_frames, frame_table, split_sample, unseen_colours
from platform.data.io import write_image
from platform.errors import ConfigError


def test_unseen_colours_by_hand(tmp_path):
    search = tmp_path / "search"
    red, green = np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32)
    red[..., 0], green[..., 1] = 0.9, 0.9
    write_image(search / "input" / "a.png", red)
    write_image(search / "input" / "b.png", green)
    frame = np.zeros((8, 8, 3), np.float32)
    frame[:2, :, 0] = 0.9  # 16 pixels red: seen
    frame[2:4, :, 1] = 0.9  # 16 pixels green: seen
    frame[4:, :, 2] = 0.9  # 32 pixels blue: no search frame has it
    write_image(tmp_path / "frame.png", frame)
    # Colours within one bin (1/16 of the range a channel) count as seen; one bin off does not.
    write_image(tmp_path / "near.png", np.clip(red + 0.02, 0, 1))
    write_image(tmp_path / "off.png", np.clip(red + np.array([0, 0.0625, 0], np.float32), 0, 1))
    shares = unseen_colours(search, [tmp_path / "frame.png", tmp_path / "near.png", tmp_path / "off.png"])
    assert shares[0] == pytest.approx(0.5)
    assert shares[1] == 0.0
    assert shares[2] == 1.0


def test_test_frames_default_to_the_same_positions_in_every_sample(tmp_path):
    assert default_test_frames("vfx_grade") == list(TEST_FRAMES)
    assert default_test_frames("vfx_grade_b") == ["00_colorwheel", "07_gravel"]
    search, whole = split_sample(tmp_path, ["03_clock", "08_grass"], "vfx_grade_b")
    assert (whole / "input" / "03_clock.png").is_file()  # the whole set, test frames included
    kept = sorted(p.stem for p in (search / "input").iterdir())
    assert len(kept) == 8 and "03_clock" not in kept and "08_grass" not in kept
    assert sorted(p.stem for p in (search / "target").iterdir()) == kept
    with pytest.raises(ConfigError, match="00_astronaut.*not frames of vfx_grade_b"):
        split_sample(tmp_path / "other", ["00_astronaut"], "vfx_grade_b")


def test_frame_table_has_a_row_per_test_frame():
    text = frame_table({"a": 0.25, "b": 0.0}, {"identity": {"a": 20.0, "b": 21.5}},
                       [{"budget": "quick", "frames": {"a": 19.0, "b": 23.25}}])
    lines = text.splitlines()
    assert lines[0] == "| test frame | unseen colours | floor `identity` | search `quick` |"
    assert lines[2] == "| `a` | 25.0% | 20.00 | 19.00 |"
    assert lines[3] == "| `b` | 0.0% | 21.50 | 23.25 |"
