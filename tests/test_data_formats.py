"""Image formats: every kind written as a real file and read back exactly; alpha; transfer functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from platform.data import formats
from platform.data.formats import read_array, read_mask, write_array, write_mask
from platform.data.io import apply_alpha, read_image, to_float, to_rgb, write_image
from platform.data.paired import from_model_range, to_model_range
from platform.data.transfer import get_transfer
from platform.errors import ConfigError, DataError

RNG = np.random.default_rng(7)


def _u8(*shape):
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def _u16(*shape):
    return RNG.integers(0, 65536, size=shape, dtype=np.uint16)


def _f32(*shape, hi=1.0):
    return (RNG.random(shape) * hi).astype(np.float32)


CASES = [
    ("png8_gray.png", _u8(9, 11, 1)),
    ("png8_gray_alpha.png", _u8(9, 11, 2)),
    ("png8_rgb.png", _u8(9, 11, 3)),
    ("png8_rgba.png", _u8(9, 11, 4)),
    ("png16_gray.png", _u16(9, 11, 1)),
    ("png16_rgb.png", _u16(9, 11, 3)),   # Pillow alone would truncate this to 8 bits
    ("png16_rgba.png", _u16(9, 11, 4)),
    ("tif8_rgb.tif", _u8(9, 11, 3)),
    ("tif16_rgb.tiff", _u16(9, 11, 3)),
    ("tif16_rgba.tif", _u16(9, 11, 4)),
    ("tif32_gray.tif", _f32(9, 11, 1, hi=8.0)),
    ("tif32_rgb.tif", _f32(9, 11, 3, hi=8.0)),   # scene-linear values above 1 stay as they are
    ("tif32_rgba.tif", _f32(9, 11, 4)),
    ("tif16f_rgb.tif", _f32(9, 11, 3).astype(np.float16)),
    ("bmp8_rgb.bmp", _u8(9, 11, 3)),
]


@pytest.mark.parametrize("name,arr", CASES, ids=[c[0] for c in CASES])
def test_lossless_formats_round_trip_exactly(tmp_path, name, arr):
    path = write_array(tmp_path / name, arr)
    back = read_array(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_channel_order_is_rgb(tmp_path):
    red = np.zeros((4, 5, 3), np.uint8)
    red[..., 0] = 200
    write_array(tmp_path / "red.png", red)
    import imageio.v3 as iio

    np.testing.assert_array_equal(iio.imread(tmp_path / "red.png"), red)  # what other tools see
    np.testing.assert_array_equal(read_array(tmp_path / "red.png"), red)


def test_jpeg_is_close_and_8bit(tmp_path):
    smooth = np.round(np.linspace(0, 255, 32 * 40 * 3).reshape(32, 40, 3)).astype(np.uint8)
    back = read_array(write_array(tmp_path / "a.jpg", smooth, quality=98))
    assert back.dtype == np.uint8 and back.shape == smooth.shape
    assert np.abs(back.astype(int) - smooth).mean() < 3
    with pytest.raises(DataError, match="JPEG holds 8-bit"):
        write_array(tmp_path / "b.jpg", _u16(4, 4, 3))


def test_read_image_scales_integers_and_keeps_floats(tmp_path):
    u8, u16, f = _u8(6, 7, 3), _u16(6, 7, 3), _f32(6, 7, 3, hi=5.0)
    write_array(tmp_path / "a.png", u8)
    write_array(tmp_path / "b.png", u16)
    write_array(tmp_path / "c.tif", f)
    img, info = read_image(tmp_path / "a.png", with_info=True)
    assert info.dtype == "uint8" and info.channels == 3 and not info.has_alpha
    np.testing.assert_array_equal(img, u8.astype(np.float32) / 255)
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), u16.astype(np.float32) / 65535)
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), f)
    # 8/16-bit -> [0, 1] -> written back at the same depth restores every value.
    write_image(tmp_path / "a2.png", img, "uint8")
    write_image(tmp_path / "b2.png", read_image(tmp_path / "b.png"), "uint16")
    np.testing.assert_array_equal(read_array(tmp_path / "a2.png"), u8)
    np.testing.assert_array_equal(read_array(tmp_path / "b2.png"), u16)


def test_model_range_round_trip_is_exact_for_stored_integers():
    for arr, scale in ((_u8(8, 9, 3), 255), (_u16(8, 9, 3), 65535)):
        t = to_model_range(arr)
        assert float(t.min()) >= -1 and float(t.max()) <= 1
        back = np.round(from_model_range(t) * scale).astype(arr.dtype)
        np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("spec", ["identity", "srgb", {"name": "linear", "white": 8.0},
                                  {"name": "log", "max_value": 64.0}])
def test_transfer_functions_invert_exactly(spec):
    t = get_transfer(spec)
    lo, hi = t.domain
    x = np.concatenate([RNG.random(2000) * hi, [lo, hi, 0.5 * hi, 1e-4]]).astype(np.float32)
    y = t.encode(x)
    assert y.min() >= 0 and y.max() <= 1 + 1e-6
    assert np.all(np.diff(y[np.argsort(x)]) >= -1e-7)  # monotonic
    # Through the network range and back: stored -> [0, 1] -> [-1, 1] -> [0, 1] -> stored.
    img = y.reshape(1, -1, 1).astype(np.float32)
    back = t.decode(from_model_range(to_model_range(img)).reshape(-1))
    np.testing.assert_allclose(back, x, rtol=2e-5, atol=2e-6 * hi)
    # Torch tensors take the same path.
    tt = torch.from_numpy(x)
    np.testing.assert_allclose(t.decode(t.encode(tt)).numpy(), x, rtol=2e-5, atol=2e-6 * hi)


def test_transfer_reference_values():
    srgb = get_transfer("srgb")
    np.testing.assert_allclose(srgb.encode(np.array([0.0, 0.0031308, 0.18, 1.0])),
                               [0.0, 0.04045, 0.46135612950044164, 1.0], atol=1e-5)
    log = get_transfer({"name": "log", "max_value": 16.0, "offset": 1 / 256})
    np.testing.assert_allclose(log.encode(np.array([0.0, 16.0])), [0.0, 1.0], atol=1e-7)
    assert get_transfer({"name": "linear", "white": 4.0}).out_of_domain(np.array([1.0, 5.0])) == 0.5
    with pytest.raises(ConfigError, match="unknown transfer"):
        get_transfer("gamma22")
    with pytest.raises(ConfigError, match="no option"):
        get_transfer({"name": "srgb", "white": 2})


def test_alpha_is_never_dropped_silently(tmp_path):
    rgba = _u8(6, 7, 4)
    rgba[0, 0, 3] = 10
    with pytest.raises(DataError, match="non-opaque alpha"):
        to_rgb(rgba, tmp_path / "x.png")
    assert apply_alpha(rgba, "drop").shape == (6, 7, 3)
    kept = apply_alpha(rgba, "keep")
    np.testing.assert_array_equal(kept, rgba)
    comp = apply_alpha(rgba, "composite")
    np.testing.assert_array_equal(comp, np.round(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8))
    opaque = rgba.copy()
    opaque[..., 3] = 255
    np.testing.assert_array_equal(to_rgb(opaque), rgba[..., :3])
    gray = _u8(6, 7, 1)
    assert apply_alpha(gray, "keep").shape == (6, 7, 4) and (apply_alpha(gray, "keep")[..., 3] == 255).all()
    np.testing.assert_array_equal(to_rgb(gray), np.repeat(gray, 3, 2))
    fl = to_float(rgba)
    np.testing.assert_allclose(apply_alpha(fl, "composite"), fl[..., :3] * fl[..., 3:], rtol=1e-6)


def test_masks_keep_indices(tmp_path):
    m = RNG.integers(0, 16, size=(10, 12)).astype(np.uint8)
    m[0, :3] = 255
    write_mask(tmp_path / "pal.png", m, palette=[(i * 10, 0, 0) for i in range(16)])
    from PIL import Image

    assert Image.open(tmp_path / "pal.png").mode == "P"
    np.testing.assert_array_equal(read_mask(tmp_path / "pal.png"), m)  # indices, not colours
    write_mask(tmp_path / "gray.png", m)
    np.testing.assert_array_equal(read_mask(tmp_path / "gray.png"), m)
    big = RNG.integers(0, 1000, size=(5, 6)).astype(np.uint16)
    write_mask(tmp_path / "big.png", big)
    np.testing.assert_array_equal(read_mask(tmp_path / "big.png"), big)
    write_array(tmp_path / "rgb.png", np.repeat(m[:, :, None], 3, 2))
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), m)
    write_array(tmp_path / "colour.png", _u8(10, 12, 3))
    with pytest.raises(DataError, match="colour image"):
        read_mask(tmp_path / "colour.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".exr"])
def test_truncated_files_are_errors_naming_the_file(tmp_path, suffix):
    if suffix == ".exr" and formats.exr_backend() is None:
        pytest.skip("no OpenEXR backend (pip install openexr)")
    arr = _f32(32, 32, 3) if suffix == ".exr" else _u8(32, 32, 3)
    good = write_array(tmp_path / f"good{suffix}", arr)
    data = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"bad{suffix}"):
        read_array(bad)
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    with pytest.raises(DataError, match=f"empty{suffix}"):
        read_array(tmp_path / f"empty{suffix}")


def test_float_to_integer_format_is_refused(tmp_path):
    with pytest.raises(DataError, match="holds integers only"):
        write_array(tmp_path / "x.png", _f32(4, 4, 3))


@pytest.mark.skipif(formats.exr_backend() is None, reason="no OpenEXR backend here (pip install openexr)")
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_openexr_round_trip(tmp_path, channels, dtype):
    arr = (RNG.random((7, 9, channels)) * 12.0).astype(dtype)  # HDR values survive unchanged
    back = read_array(write_array(tmp_path / "x.exr", arr))
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back.astype(np.float32), arr.astype(np.float32))


def test_missing_exr_backend_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "exr_backend", lambda: None)
    import builtins

    real_import = builtins.__import__

    def no_openexr(name, *args, **kwargs):
        if name == "OpenEXR":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openexr)
    with pytest.raises(DataError, match="pip install openexr"):
        write_array(tmp_path / "x.exr", _f32(4, 4, 3))
    (tmp_path / "y.exr").write_bytes(b"v/1\x01 not really")
    with pytest.raises(DataError, match="pip install openexr"):
        read_array(tmp_path / "y.exr")
