"""``python -m platform.predict``: images, frame folders and videos in their own formats; bad input."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from platform.data.formats import read_array, write_array
from platform.inference import InferenceOptions
from platform.predict import main
from platform.tasks import predictor as task_predictor
from test_inference_helpers import astronaut, save_checkpoint, tiny_config, tiny_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    config = tiny_config(crop=64)
    save_checkpoint(folder, tiny_model(config), config)
    return folder


def reference(img: np.ndarray, config: dict | None = None, **options) -> np.ndarray:
    """What predict must write, computed directly with the Predictor."""
    config = config or tiny_config(crop=64)
    return task_predictor(tiny_model(config), config, "cpu", InferenceOptions(**options)).run(img)["image"]


def run(*args) -> int:
    return main([str(a) for a in args] + ["--quiet"])


def _photo(h: int, w: int, shift: int = 0) -> np.ndarray:
    import skimage.data

    return skimage.data.chelsea()[20 + shift:20 + shift + h, 40 + 2 * shift:40 + 2 * shift + w]


# --------------------------------------------------------------------------- images
def test_8bit_png_round_trip(ckpt, tmp_path):
    src = tmp_path / "in.png"
    iio.imwrite(src, _photo(61, 83))
    out = tmp_path / "out" / "result.png"
    assert run("--model", ckpt, "--input", src, "--output", out) == 0
    got = iio.imread(out)
    assert got.dtype == np.uint8 and got.shape == (61, 83, 3)
    want = np.round(reference(_photo(61, 83).astype(np.float32) / 255) * 255).astype(np.uint8)
    assert np.abs(got.astype(int) - want).max() <= 1  # rounding only


def test_16bit_png_stays_16bit_and_tiles_match_the_whole_frame(ckpt, tmp_path):
    img16 = (_photo(200, 260).astype(np.uint16) * 257 + np.arange(260, dtype=np.uint16)[None, :, None])
    src = tmp_path / "in16.png"
    write_array(src, img16)  # 16-bit RGB PNG (imageio's Pillow plugin cannot write one)
    assert run("--model", ckpt, "--input", src, "--output", tmp_path / "whole.png") == 0
    assert run("--model", ckpt, "--input", src, "--output", tmp_path / "tiled.png", "--tile", "192") == 0
    whole, tiled = read_array(tmp_path / "whole.png"), read_array(tmp_path / "tiled.png")
    assert whole.dtype == np.uint16 and whole.shape == img16.shape
    want = reference(img16.astype(np.float32) / 65535)
    assert np.abs(whole / 65535 - want).max() < 1e-4
    assert np.abs(whole.astype(float) - tiled.astype(float)).max() / 65535 < 1e-3  # 4 tiles, 96 px overlap


@pytest.fixture(scope="module")
def hdr_ckpt(tmp_path_factory):
    """A model whose task encodes scene-linear float data (up to 16) with a log transfer."""
    config = tiny_config(crop=64)
    config["task"]["transfer"] = {"name": "log", "max_value": 16.0}
    folder = tmp_path_factory.mktemp("hdr")
    save_checkpoint(folder, tiny_model(config), config)
    return folder, config


def test_float_tiff_stays_float_and_linear_through_the_task_transfer(ckpt, hdr_ckpt, tmp_path):
    folder, config = hdr_ckpt
    hdr = astronaut((48, 64)) * 3.0  # linear light with highlights up to 3
    src = tmp_path / "plate.tif"
    iio.imwrite(src, hdr)
    out = tmp_path / "graded.tif"
    assert run("--model", folder, "--input", src, "--output", out) == 0
    got = iio.imread(out)
    assert got.dtype == np.float32 and got.shape == hdr.shape
    assert got.max() > 1.5  # decoded back to linear light, not clipped to the display range
    assert np.allclose(got, reference(hdr, config=config), atol=1e-5)
    # Without a transfer (identity, the default) the task trained on [0, 1]: values are clipped to it.
    assert run("--model", ckpt, "--input", src, "--output", tmp_path / "identity.tif") == 0
    assert iio.imread(tmp_path / "identity.tif").max() <= 1.0


def test_exr_stays_linear_float(hdr_ckpt, tmp_path):
    from platform.data import io

    hdr = astronaut((32, 48)) * 2.0
    src = tmp_path / "plate.exr"
    try:
        io.write_image(src, hdr, dtype="float32")
        back, info = io.read_image(src, with_info=True)
        assert info.dtype == "float32" and np.allclose(back, hdr, atol=1e-3)
    except Exception as exc:  # EXR support belongs to the data package and needs an EXR library
        pytest.skip(f"EXR I/O not available in platform.data.io: {exc}")
    out = tmp_path / "out.exr"
    assert run("--model", hdr_ckpt[0], "--input", src, "--output", out) == 0
    got, info = io.read_image(out, with_info=True)
    assert info.dtype == "float32" and got.shape == hdr.shape and got.max() > 1.0
    assert np.allclose(got, reference(back, config=hdr_ckpt[1]), atol=1e-4)


# --------------------------------------------------------------------------- sequences
def _frames_folder(folder: Path, n: int = 3, h: int = 40, w: int = 56) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    frames = [_photo(h, w, shift=2 * i) for i in range(n)]
    for i, f in enumerate(frames):
        iio.imwrite(folder / f"shot_{i + 1}.png", f)  # shot_1 .. shot_n: natural order
    return frames


def test_frame_folder_round_trip_with_flicker_against_a_reference(ckpt, tmp_path, capsys):
    from platform.metrics import temporal_flicker

    frames = _frames_folder(tmp_path / "frames", n=3)
    ref_frames = [np.clip(f.astype(int) + 3, 0, 255).astype(np.uint8) for f in frames]
    (tmp_path / "truth").mkdir()
    for i, f in enumerate(ref_frames):
        iio.imwrite(tmp_path / "truth" / f"shot_{i + 1}.png", f)
    out = tmp_path / "out"
    assert run("--model", ckpt, "--input", tmp_path / "frames", "--output", out, "--reference", tmp_path / "truth") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["shot_1.png", "shot_2.png", "shot_3.png"]
    written = [iio.imread(out / n) for n in names]
    for f, w in zip(frames, written):
        assert w.shape == f.shape and w.dtype == np.uint8
    report = capsys.readouterr().out
    line = next(ln for ln in report.splitlines() if "vs the reference" in ln)
    printed = float(line.split()[1])

    def stack(fs):
        return torch.from_numpy(np.stack(fs).astype(np.float32) / 255).permute(0, 3, 1, 2)

    # The written frames are quantised to 8 bits, the printed value is from the float output.
    assert printed == pytest.approx(float(temporal_flicker(stack(written), stack(ref_frames))), abs=2e-3)
    assert "vs the input" in report


def _write_video(path: Path, frames: list[np.ndarray], fps="24000/1001") -> None:
    h, w = frames[0].shape[:2]
    gen = imageio_ffmpeg.write_frames(str(path), (w, h), fps=Fraction(fps), macro_block_size=1, quality=None,
                                      codec="libx264", pix_fmt_out="yuv444p", output_params=["-crf", "0"])
    gen.send(None)
    for f in frames:
        gen.send(np.ascontiguousarray(f).tobytes())
    gen.close()


def _read_video(path: Path) -> tuple[dict, list[np.ndarray]]:
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    return meta, [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)))


def test_video_round_trip_keeps_rate_count_and_size(ckpt, tmp_path):
    frames = [_photo(50, 70, shift=i) for i in range(5)]
    src = tmp_path / "plate.mp4"
    _write_video(src, frames)
    out = tmp_path / "graded.mp4"
    assert run("--model", ckpt, "--input", src, "--output", out) == 0
    meta, got = _read_video(out)
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 5 and len(got) == 5
    assert meta["size"] == (70, 50) and meta["fps"] == pytest.approx(23.98, abs=0.01)
    _, decoded = _read_video(src)
    wants = [np.round(reference(d.astype(np.float32) / 255) * 255) for d in decoded]
    for i, g in enumerate(got):  # every frame processed, in order (H.264 at CRF 12 costs a little)
        scores = [_psnr(g, w) for w in wants]
        assert scores[i] > 30 and int(np.argmax(scores)) == i

    frames_out = tmp_path / "frames_out"
    assert run("--model", ckpt, "--input", src, "--output", frames_out) == 0
    assert sorted(p.name for p in frames_out.iterdir()) == [f"frame_{i:06d}.png" for i in range(5)]


def test_10bit_prores_stays_deep(ckpt, tmp_path):
    frames = [(_photo(40, 48, shift=i).astype(np.uint16) * 257) for i in range(3)]
    src = tmp_path / "plate.mov"
    gen = imageio_ffmpeg.write_frames(str(src), (48, 40), fps=25, macro_block_size=1, quality=None, codec="prores_ks",
                                      pix_fmt_in="rgb48le", pix_fmt_out="yuv444p10le", output_params=["-profile:v", "4"])
    gen.send(None)
    for f in frames:
        gen.send(f.astype("<u2").tobytes())
    gen.close()
    out = tmp_path / "graded.mov"
    assert run("--model", ckpt, "--input", src, "--output", out) == 0
    from platform.data.video import probe

    info = probe(out)
    assert (info.frames, info.width, info.height, info.fps) == (3, 48, 40, 25)
    assert info.bit_depth == 16 and ("10" in info.pix_fmt or "12" in info.pix_fmt)  # ProRes 4444: 10+ bits


def test_two_runs_write_identical_bytes(ckpt, tmp_path):
    src = tmp_path / "in.png"
    iio.imwrite(src, _photo(70, 90))
    video = tmp_path / "in.mp4"
    _write_video(video, [_photo(40, 48, shift=i) for i in range(3)], fps="25")
    for name in ("a", "b"):
        assert run("--model", ckpt, "--input", src, "--output", tmp_path / f"{name}.png", "--tile", "64") == 0
        assert run("--model", ckpt, "--input", video, "--output", tmp_path / f"{name}.mp4") == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_tta_option_runs_the_eight_transforms(ckpt, tmp_path):
    src = tmp_path / "in.png"
    img = _photo(36, 52)
    iio.imwrite(src, img)
    assert run("--model", ckpt, "--input", src, "--output", tmp_path / "tta.png", "--tta") == 0
    want = np.round(reference(img.astype(np.float32) / 255, tta=True) * 255)
    assert np.abs(iio.imread(tmp_path / "tta.png").astype(int) - want).max() <= 1


# --------------------------------------------------------------------------- segmentation
@pytest.fixture
def seg_ckpt(tmp_path):
    """A NAFNet with 4 output channels trained (in format) for a registered segmentation task."""
    from platform.tasks import TASKS

    TASKS.register("t_segmentation", kind="segmentation")(type("Seg", (), {"kind": "segmentation"}))
    config = tiny_config(crop=64)
    config["task"]["name"] = "t_segmentation"
    config["_model_kwargs"] = {"in_channels": 3, "out_channels": 4}
    model = tiny_model(config)
    save_checkpoint(tmp_path / "seg", model, config)
    yield tmp_path / "seg", model, config
    TASKS._items.pop("t_segmentation", None)
    TASKS._meta.pop("t_segmentation", None)


def test_segmentation_writes_index_masks_and_previews(seg_ckpt, tmp_path):
    folder, model, config = seg_ckpt
    src = tmp_path / "in.png"
    img = _photo(40, 56)
    iio.imwrite(src, img)
    out = tmp_path / "mask.png"
    assert run("--model", folder, "--input", src, "--output", out) == 0
    mask = iio.imread(out)
    assert mask.dtype == np.uint8 and mask.shape == (40, 56)
    want = task_predictor(model, config).run(img.astype(np.float32) / 255)["mask"]
    assert np.array_equal(mask, want) and mask.max() < 4
    preview = iio.imread(tmp_path / "mask.preview.png")
    assert preview.shape == (40, 56, 3)


def test_hierarchical_writer_writes_every_level(tmp_path):
    from platform.predict import Frame, Source, Writer

    src = Source(tmp_path / "in.png", "image", 1, files=[tmp_path / "in.png"])
    writer = Writer("hierarchical", src, tmp_path / "out.png")
    mask = np.arange(12, dtype=np.int64).reshape(3, 4) % 3
    outputs = {}
    for level, k in (("coarse", 3), ("mid", 5), ("fine", 9)):
        outputs[f"mask/{level}"] = mask
        outputs[f"probs/{level}"] = np.full((3, 4, k), 1.0 / k, np.float32)
    writer.write(Frame("in.png", np.zeros((3, 4, 3), np.float32), "uint8"), outputs)
    for level in ("coarse", "mid", "fine"):
        assert np.array_equal(iio.imread(tmp_path / f"out.{level}.png"), mask)
        assert iio.imread(tmp_path / f"out.{level}.preview.png").shape == (3, 4, 3)


def test_matting_writer_writes_alpha_in_the_input_depth_and_a_cutout(tmp_path):
    from platform.predict import Frame, Source, Writer

    src = Source(tmp_path / "in.png", "image", 1, files=[tmp_path / "in.png"])
    alpha = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    image = np.full((3, 4, 3), 0.5, np.float32)
    Writer("matting", src, tmp_path / "matte.png").write(Frame("in.png", image, "uint16"), {"alpha": alpha})
    matte = read_array(tmp_path / "matte.png")
    assert matte.dtype == np.uint16 and matte.shape == (3, 4, 1)
    assert np.array_equal(matte[:, :, 0], np.round(alpha * 65535).astype(np.uint16))
    cutout = read_array(tmp_path / "matte.rgba.png")
    assert cutout.shape == (3, 4, 4) and np.array_equal(cutout[:, :, 3], matte[:, :, 0])


# --------------------------------------------------------------------------- bad input
def test_existing_output_is_refused_and_left_untouched(ckpt, tmp_path, capsys):
    src = tmp_path / "in.png"
    iio.imwrite(src, _photo(32, 32))
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    assert run("--model", ckpt, "--input", src, "--output", out) == 2
    assert out.read_bytes() == b"precious"
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert run("--model", ckpt, "--input", src, "--output", out, "--overwrite") == 0
    assert iio.imread(out).shape == (32, 32, 3)


def test_model_task_mismatch_is_refused_before_writing(seg_ckpt, tmp_path, capsys):
    src = tmp_path / "in.png"
    iio.imwrite(src, _photo(32, 32))
    out = tmp_path / "out.png"
    assert run("--model", seg_ckpt[0], "--input", src, "--output", out, "--task", "img2img") == 2
    err = capsys.readouterr().err
    assert "'segmentation' task" in err and "--task img2img" in err
    assert not out.exists()


@pytest.mark.parametrize("content, name, expected", [
    (b"just text", "notes.txt", "is not an image"),
    (b"\x89PNG\r\n\x1a\n broken", "broken.png", "cannot read image"),
    (b"\x00\x00\x00\x18ftypmp42 broken", "clip.mp4", "cannot read video"),
])
def test_files_that_are_not_images_or_videos(ckpt, tmp_path, capsys, content, name, expected):
    bad = tmp_path / name
    bad.write_bytes(content)
    assert run("--model", ckpt, "--input", bad, "--output", tmp_path / "out.png") == 2
    err = capsys.readouterr().err
    assert expected in err and str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


def test_unknown_model_uri(tmp_path, monkeypatch, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        src = tmp_path / "in.png"
        iio.imwrite(src, _photo(16, 16))
        assert run("--model", "models:/nope@champion", "--input", src, "--output", tmp_path / "o.png") == 2
    finally:
        mlflow.set_tracking_uri(previous)
    err = capsys.readouterr().err
    assert "models:/nope@champion" in err and "MLFLOW_TRACKING_URI" in err and "Traceback" not in err


def test_cli_process_exits_nonzero_without_traceback(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    proc = subprocess.run([sys.executable, "-m", "platform.predict", "--model", "models:/x@champion", "--input",
                           str(bad), "--output", str(tmp_path / "o.png")], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "notes.txt is not an image" in proc.stderr


def _yuv_planes(path: Path, w: int, h: int) -> np.ndarray:
    """The stored Y'CbCr samples of a video (no RGB conversion), frames x 3 x H x W."""
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "yuv444p", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 3, h, w).astype(np.int16)


def test_video_keeps_the_sources_colour_description(tmp_path):
    """A BT.709 limited-range plate is written back with BT.709's matrix and tags: its stored
    samples match the source's (ffmpeg's default would encode with BT.601 and drop the tags)."""
    from dataclasses import replace

    from platform.data.video import VideoWriter, probe, read_video

    src = tmp_path / "plate.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "smptebars=size=128x96:rate=24", "-frames:v", "3", "-vf",
                    "scale=out_color_matrix=bt709:out_range=tv", "-pix_fmt", "yuv444p", "-c:v", "libx264",
                    "-crf", "0", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
                    "-color_range", "tv", str(src)], check=True)
    info = probe(src)
    assert (info.colorspace, info.color_range) == ("bt709", "tv")
    frames = list(read_video(src, info))
    source = _yuv_planes(src, 128, 96)
    errors = {}
    for name, meta in (("kept", info), ("dropped", replace(info, colorspace="", color_primaries="",
                                                              color_trc="", color_range=""))):
        out = tmp_path / f"{name}.mp4"
        with VideoWriter(out, meta) as writer:
            for frame in frames:
                writer.write(frame)
        errors[name] = float(np.abs(_yuv_planes(out, 128, 96)[:, 1:] - source[:, 1:]).mean())  # chroma
        if name == "kept":
            back = probe(out)
            assert (back.colorspace, back.color_range) == ("bt709", "tv")
    assert errors["kept"] < 1.0 < errors["dropped"], errors


def test_video_with_alpha_is_refused_not_flattened(tmp_path):
    from platform.data.video import read_video
    from platform.errors import DataError

    src = tmp_path / "matte.mov"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=24", "-frames:v", "2", "-vf", "format=rgba", "-c:v", "png", str(src)],
                   check=True)
    with pytest.raises(DataError, match="matte.mov has an alpha channel .*image sequence"):
        next(read_video(src))
