"""``python -m platform.bench predict`` and the ``python -m platform.bench`` dispatcher."""

from __future__ import annotations

import json

import pytest

from platform.bench import available
from platform.bench.__main__ import main as bench_main
from platform.bench.predict import photo_frame, run
from platform.errors import ConfigError
from platform.frame_size import parse_resolution

TINY = json.dumps({"width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]})


def test_predict_benchmark_table_and_json(tmp_path):
    lines = []
    out = tmp_path / "rows.json"
    rows = run(["--sizes", "small", "--resolutions", "96x64,640x360", "--options", TINY, "--crop", "64",
                "--tile", "512", "--json", str(out)], report=lines.append)
    assert [r.resolution for r in rows] == ["96x64 96x64", "640x360 640x360"]
    assert [r.tile for r in rows] == ["whole", "512"]  # a frame smaller than the tile runs whole
    assert all(r.seconds_per_frame > 0 and r.fps > 0 for r in rows)
    assert lines[0].startswith("device    cpu")
    assert lines[1].split()[:3] == ["architecture", "size", "params"] and len(lines) == 4
    assert lines[3].split()[4:6] == ["640x360", "640x360"] and lines[3].split()[6] == "512"
    saved = json.loads(out.read_text())
    assert saved[1]["resolution"] == "640x360 640x360" and saved[1]["fps"] == pytest.approx(rows[1].fps)


def test_resolutions_and_frames():
    assert parse_resolution("4K") == ("4k", 3840, 2160)
    assert parse_resolution("640x360") == ("640x360", 640, 360)
    with pytest.raises(ConfigError, match="neither a name"):
        parse_resolution("huge")
    frame = photo_frame(700, 600)  # larger than the 512 px photo: tiled
    assert frame.shape == (600, 700, 3) and frame.dtype.name == "float32"


def test_dispatcher(capsys):
    assert "predict" in available()
    assert bench_main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert bench_main([]) == 2
    assert bench_main(["predict", "--sizes", "small", "--resolutions", "32x32", "--options", TINY, "--precisions",
                       "fp8"]) == 2
    assert "precision 'fp8'" in capsys.readouterr().err
