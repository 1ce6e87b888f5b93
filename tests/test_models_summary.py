"""Parameter / MAC table and ``python -m platform.models``."""

from __future__ import annotations

import torch

from platform.models.__main__ import main
from platform.models.summary import count_macs, format_table, model_rows


def test_count_macs_matches_hand_computation():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 10))
    expected = 16 * 16 * 8 * 3 * 9 + 8 * 16 * 16 * 10  # conv: H*W*Cout*Cin*k*k ; linear: in*out
    assert count_macs(net, (1, 3, 16, 16), device="cpu") == expected
    with torch.device("meta"):
        meta_net = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(meta_net, (1, 3, 16, 16)) == 16 * 16 * 8 * 3 * 9


def test_rows_params_and_resolution_scaling():
    small = model_rows(["unet"], resolution=64)
    large = model_rows(["unet"], resolution=128)
    assert [(r.name, r.size) for r in small] == [("unet", "small"), ("unet", "base")]
    assert small[1].params == 31_037_763  # the classic 64...1024 U-Net with BatchNorm
    for a, b in zip(small, large):
        assert b.macs == 4 * a.macs  # fully convolutional: MACs proportional to H*W
    text = format_table(small, resolution=64)
    assert "GMACs @64x64" in text and "31.04" in text
    md = format_table(small, resolution=64, markdown=True)
    assert md.splitlines()[0].startswith("| model | size |")


def test_cli_table_and_errors(capsys):
    assert main(["nafnet-sidd-width64", "--resolution", "256"]) == 0
    out = capsys.readouterr().out
    assert "nafnet-sidd-width64" in out and "115.98" in out and "FLOPs / 2" in out
    assert main(["no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
