"""Parameter / MAC table and ``python -m platform.models``."""

from __future__ import annotations

import pytest
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


def test_bench_models_times_forward_backward_of_the_zoo(capsys):
    from platform.bench.models import main as bench_main, zoo

    assert ("nafnet", "small") in zoo() and ("seg_unet", "coatnet_0") in zoo()
    assert all(not name.startswith("_test") for name, _ in zoo())
    assert bench_main(["--models", "unet,seg_unet", "--sizes", "small,coatnet_0", "--crop", "32", "--batch", "1",
                 "--steps", "1", "--warmup", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:2]): line.split() for line in out.splitlines()[2:]}
    assert set(rows) == {("unet", "small"), ("seg_unet", "coatnet_0")}, out
    for cells in rows.values():
        assert cells[3] == "fp32" and float(cells[4]) > 0 and float(cells[5]) > 0
    assert float(rows[("unet", "small")][2]) == pytest.approx(7.76, abs=0.01)


def test_bench_models_names_unknown_models(capsys):
    from platform.bench.models import main as bench_main

    assert bench_main(["--models", "nafnet,resnet9000"]) == 2
    assert "resnet9000" in capsys.readouterr().err
