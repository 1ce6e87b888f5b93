"""Deployable students (issue 17, items 2-4): structured pruning that really removes channels,
static int8 against fp32 on real photos, the cost measurement and the Pareto front."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from platform.compress.cost import count_macs, count_params
from platform.compress.prune import prune_structured, prune_unstructured, pruned_config, zero_fraction
from platform.errors import ConfigError
from platform.export import export_onnx, prepare, psnr, run_onnx, run_torch
from platform.report.pareto import Point, from_json, front, points_json, table
from platform.train.loop import build_model
from test_inference_helpers import astronaut, save_checkpoint, tiny_config, tiny_model


def _config(arch: str, size: str | None, options: dict | None = None) -> dict:
    cfg = tiny_config()
    cfg["model"] = {"architecture": arch, "size": size, "options": options or {}}
    return cfg


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights as if trained: zero-initialised residual scales and output layers become non-zero,
    so that pruning changes the output and an export mismatch would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() and float(p.abs().max()) == 0.0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


CASES = [("nafnet", "small", None), ("unet", "small", {"base_filters": 8}), ("lut3d", "local", None),
         ("lut3d", "local_fast", None), ("convnext_unet", "nano", None)]


@pytest.mark.parametrize("arch,size,options", CASES)
def test_structured_pruning_removes_channels(arch, size, options):
    config = _config(arch, size, options)
    if arch == "nafnet":
        model = tiny_model(config)
    else:
        torch.manual_seed(0)
        model = _randomised(build_model(config))
    pruned = prune_structured(model, 0.5, {3})
    x = torch.from_numpy(astronaut((64, 96)).transpose(2, 0, 1))[None] * 2 - 1
    with torch.no_grad():
        y, y0 = pruned(x), model(x)
    assert y.shape == y0.shape
    assert count_params(pruned) < 0.8 * count_params(model)
    assert count_macs(pruned, 96, 64) < 0.8 * count_macs(model, 96, 64)
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    original = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(widths) < sum(original)  # dense layers really narrower, not masked

    # The checkpoint's config (JSON) rebuilds exactly this network.
    cfg = json.loads(json.dumps(pruned_config(config, pruned, build_model(config), 0.5)))
    rebuilt = build_model(cfg)
    rebuilt.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), y)


@pytest.mark.parametrize("arch,size,options", CASES[:2])
def test_pruned_model_exports_to_onnx_and_matches(arch, size, options, tmp_path):
    config = _config(arch, size, options)
    model = tiny_model(config) if arch == "nafnet" else _randomised(build_model(config))
    pruned = prune_structured(model, 0.5, {3})
    module, min_side = prepare(pruned, config, tlc=False)
    export_onnx(module, tmp_path / "pruned.onnx", 3, min_side, {})
    img = astronaut((75, 101))  # odd sizes: padding inside the graph
    got, want = run_onnx(tmp_path / "pruned.onnx", img)[0], run_torch(module, img)[0]
    assert got.shape == want.shape == (1, 3, 75, 101)
    assert float(np.abs(got - want).max()) < 1e-4


def test_pruned_checkpoint_loads_like_any_checkpoint(tmp_path):
    from platform.pyfunc import load_any

    config = _config("unet", "small", {"base_filters": 8})
    model = _randomised(build_model(config))
    pruned = prune_structured(model, 0.5, {3})
    cfg = pruned_config(config, pruned, build_model(config), 0.5)
    save_checkpoint(tmp_path / "ckpt", pruned, cfg)
    loaded = load_any(str(tmp_path / "ckpt"))
    assert count_params(loaded.model) == count_params(pruned)
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), pruned(x))


def test_pruning_without_local_cnn_or_bad_sparsity_is_refused():
    with pytest.raises(ConfigError, match="no channels to prune"):
        prune_structured(build_model(_config("lut3d", "lut")), 0.5, {3})
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        prune_structured(build_model(_config("unet", "small", {"base_filters": 8})), 1.0, {3})


def test_sparsity_is_a_search_space_key():
    from platform.config import load_spec

    spec = load_spec("nafnet_fewshot", overrides={"compress": {"prune": {"sparsity": {"choice": [0.25, 0.5]}}}})
    assert spec.config["compress"]["prune"]["sparsity"] == {"choice": [0.25, 0.5]}
    with pytest.raises(ConfigError, match="sparsity"):
        load_spec("nafnet_fewshot", overrides={"compress": {"prune": {"sparsity": 1.5}}})


def test_unstructured_pruning_zeroes_weights_but_keeps_every_tensor():
    model = _randomised(build_model(_config("unet", "small", {"base_filters": 8})))
    sparse = prune_unstructured(model, 0.5)
    assert count_params(sparse) == count_params(model)  # nothing removed: the same dense work
    assert count_macs(sparse, 64, 64) == count_macs(model, 64, 64)
    assert 0.4 < zero_fraction(sparse) < 0.5  # half of conv weights; biases and norms untouched
    assert count_params(sparse, nonzero=True) < 0.6 * count_params(model)


def test_prune_and_finetune_with_the_common_trainer(tmp_path):
    from platform.compress.finetune import prune_and_finetune

    config = _config("unet", "small", {"base_filters": 8})
    config["task"].update(crop=32, crops_per_epoch=4, batch_size=2, val_max_side=64)
    model = _randomised(build_model(config))
    out = prune_and_finetune(model, config, 0.5, 1, tmp_path, {"train": {"image_every": 100}})
    assert out.config["_pruned"] and out.config["compress"]["prune"]["sparsity"] == 0.5
    assert count_params(out.model) == count_params(prune_structured(model, 0.5, {3}))
    assert np.isfinite(out.metrics["val_psnr"]) and out.metrics["epoch"] == 1
    assert out.metrics["warm_init_fraction"] == 1.0  # every tensor came from the trained weights

    # At a vanishing learning rate the trainer's result is the pruned trained network itself:
    # it loaded the trained weights, then pruned exactly as prune_structured does.
    still = prune_and_finetune(model, config, 0.5, 1, tmp_path / "still",
                               {"train": {"image_every": 100}, "optimizer": {"lr": 1e-12, "weight_decay": 0.0}})
    ref = dict(prune_structured(model, 0.5, {3}).named_parameters())
    for name, p in still.model.named_parameters():
        torch.testing.assert_close(p, ref[name], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- static int8
def _photos(names=("chelsea", "coffee", "rocket", "astronaut"), side: int = 128) -> list[np.ndarray]:
    import skimage.data

    from platform.compress.quantize import centre_crop

    return [centre_crop(getattr(skimage.data, n)().astype(np.float32) / 255.0, side) for n in names]


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8")
    config = tiny_config()
    module, min_side = prepare(tiny_model(config), config, tlc=False)
    export_onnx(module, tmp / "fp32.onnx", 3, min_side, {})
    return tmp / "fp32.onnx"


def test_static_int8_against_fp32_on_real_photos(fp32_onnx, tmp_path):
    import skimage.data

    from platform.compress.quantize import quantize_static_int8

    fp32 = fp32_onnx
    q = quantize_static_int8(fp32, tmp_path / "static.onnx", _photos())
    import onnx

    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    # Photos the calibration never saw, whole frames at odd sizes.
    for img in (skimage.data.immunohistochemistry()[:200, :301], skimage.data.coffee()[100:277, 50:333]):
        img = img.astype(np.float32) / 255.0
        a, b = run_onnx(fp32, img)[0], run_onnx(q, img)[0]
        assert a.shape == b.shape
        assert 35.0 < psnr(a, b) < 80.0  # quantised (not bit-identical); measured 39-41 dB on this tiny network
        # and it is the network: far closer to fp32 than the input is to the output
        assert psnr(a, b) > psnr(a, img.transpose(2, 0, 1)[None]) + 5


def test_calibration_folder_and_export_flag(tmp_path):
    import imageio.v3 as iio

    from platform.compress.quantize import calibration_frames
    from platform.export import export

    folder = tmp_path / "plates"
    folder.mkdir()
    for i, img in enumerate(_photos(side=96)):
        iio.imwrite(folder / f"f{i}.png", (img * 255).astype(np.uint8))
    frames = calibration_frames(folder, side=64)
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3) and frames[0].dtype == np.float32
    with pytest.raises(ConfigError, match="not a folder"):
        calibration_frames(tmp_path / "missing")
    config = tiny_config()
    save_checkpoint(tmp_path / "ckpt", tiny_model(config), config)
    lines = []
    result = export(str(tmp_path / "ckpt"), "onnx", tmp_path / "m.int8.onnx", quantize="int8-static",
                    calibration=folder, tlc=False, report=lines.append)
    assert result.int8_psnr_vs_fp32 > 30.0 and "int8-static" in lines[0]
    with pytest.raises(ConfigError, match="--calibration"):
        export(str(tmp_path / "ckpt"), "onnx", tmp_path / "x.onnx", quantize="int8-static")


# --------------------------------------------------------------------------- cost
def test_macs_of_a_convolution_by_hand():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    # each of the 6 x 7 x 10 outputs is a sum of 4 x 3 x 3 products
    assert count_macs(conv, width=10, height=7, in_channels=4) == 6 * 7 * 10 * 4 * 9
    strided = nn.Conv2d(3, 8, 2, stride=2)  # 1920 x 1080 -> 960 x 540 outputs of 3 x 2 x 2 products
    assert count_macs(strided) == 8 * 540 * 960 * 3 * 4
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_macs(depthwise, 16, 16, 8) == 8 * 16 * 16 * 9
    assert next(conv.parameters()).device.type == "cpu"  # counted on a meta copy
    assert count_params(conv) == 6 * 4 * 9 + 6


# --------------------------------------------------------------------------- Pareto
def test_pareto_front_by_hand():
    pts = [Point("teacher", 30.0, 1000.0, role="teacher"),
           Point("a", 29.8, 200.0),   # faster, slightly worse: on the front
           Point("b", 29.0, 300.0),   # dominated by a (worse and slower)
           Point("c", 28.0, 50.0),    # fastest: on the front
           Point("d", 30.0, 1200.0),  # as good as the teacher but slower: dominated
           Point("e", 29.8, 200.0 + 1e-9)]  # a hair slower than a at the same quality: dominated
    assert [p.name for p in front(pts)] == ["c", "a", "teacher"]
    assert [p.name for p in front(pts, mode="min")] == ["c"]  # lower is better (e.g. a loss)
    headers, rows = table(pts)
    by = {r[0]: dict(zip(headers, r)) for r in rows}
    assert by["a"]["speed-up"] == pytest.approx(5.0) and by["a"]["Δ val_psnr"] == pytest.approx(-0.2)
    assert by["b"]["front"] == "" and by["c"]["front"] == "yes"
    again, metric, mode, frame = from_json(points_json(pts, "val_psnr", "max", frame="640x360"))
    assert again == pts and (metric, mode, frame) == ("val_psnr", "max", "640x360")
    assert from_json('{"points": []}')[1:] == ("val_psnr", "max", "1080p")  # files written before "frame"


def test_pareto_plot_and_report_section():
    from platform.report import _img, _table
    from platform.report.pareto import plot, section

    pts = [Point("teacher", 30.0, 1000.0, 1_000_000, 5e9, "teacher"), Point("pruned 0.5", 29.7, 400.0, 300_000, 2e9)]
    assert plot(pts)[:8] == b"\x89PNG\r\n\x1a\n"
    page = section(copy.deepcopy(pts), "val_psnr", "max", "1080p", _table, _img)
    assert "pruned 0.5" in page and "<img" in page and "2.5" in page  # speed-up 1000 / 400


# --------------------------------------------------------------------------- command line
def test_compress_command_line(tmp_path, capsys):
    from platform.compress.__main__ import main
    from platform.pyfunc import load_any

    config = _config("unet", "small", {"base_filters": 8})
    config["task"].update(crop=32, crops_per_epoch=4, batch_size=2, val_max_side=64)
    model = _randomised(build_model(config))
    save_checkpoint(tmp_path / "ckpt", model, config)
    out = tmp_path / "pruned.pt"
    assert main(["prune", "--model", str(tmp_path / "ckpt"), "--sparsity", "0.5", "--epochs", "0",
                 "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "before" in text and "after" in text and "val_psnr" in text
    assert count_params(load_any(str(out)).model) == count_params(prune_structured(model, 0.5, {3}))

    assert main(["unstructured", "--model", str(tmp_path / "ckpt"), "--sparsity", "0.5", "--resolution", "96x64"]) == 0
    text = capsys.readouterr().out
    assert "of the weights are zero" in text and "dense" in text and "zeroed" in text

    assert main(["prune", "--model", str(tmp_path / "ckpt"), "--sparsity", "1.2", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--sparsity" in err and "[0, 1)" in err and "Traceback" not in err


# --------------------------------------------------------------------------- a pruning search
def test_pruning_search_registers_name_student_with_its_pareto_points(tmp_cwd):
    """``python -m platform.search prune_champion --init-from models:/shot@champion``: the pruned,
    fine-tuned students are registered as ``shot_student`` and the parent run holds the teacher
    and every student as quality-vs-cost points, the students with fewer parameters."""
    import mlflow
    import skimage.data
    from mlflow.tracking import MlflowClient

    from platform import pyfunc, tracking
    from platform.data.io import write_image
    from platform.report.pareto import ARTIFACT
    from platform.safeio import save_atomic, to_json_text
    from platform.search.driver import SearchOptions, prepare_spec, run_search

    shot = tmp_cwd / "shot"
    for name in ("chelsea", "coffee", "astronaut"):
        x = getattr(skimage.data, name)()[:64, :64].astype(np.float32) / 255.0
        write_image(shot / "input" / f"{name}.png", x)
        write_image(shot / "target" / f"{name}.png", x**0.7)
    config = _config("lut3d", "local")
    config["task"].update(data=str(shot), crop=32)
    teacher = _randomised(build_model(config))
    folder = tmp_cwd / "teacher_ckpt"
    folder.mkdir()
    save_atomic({"model": teacher.state_dict(), "config": to_json_text(config), "epoch": 1}, folder / "state.pt")
    mlflow.set_tracking_uri(tracking.tracking_uri())  # where pyfunc.log_model logs
    client = MlflowClient(tracking.tracking_uri())
    run = client.create_run(client.create_experiment("shot"))
    client.create_registered_model("shot")
    version = client.create_model_version("shot", pyfunc.log_model(folder, run.info.run_id), run.info.run_id)
    client.set_registered_model_alias("shot", "champion", version.version)

    opts = SearchOptions(space="prune_champion", quick=True, data=str(shot), max_trials=1,
                         init_from="models:/shot@champion",
                         overrides={"task": {"crop": 32, "crops_per_epoch": 8, "batch_size": 4, "val_holdout": 1},
                                    "train": {"epochs": 1}, "compress": {"pareto_frame": "320x180",
                                                                         "prune": {"sparsity": 0.5}},
                                    "promotion": {"floors": False}, "search": {"timebox": {"seconds": None}}})
    assert prepare_spec(opts).name == "shot_student"
    assert prepare_spec(SearchOptions(space="prune_champion", experiment="mine")).name == "mine"
    out = run_search(opts)
    assert out.spec.name == "shot_student" and out.promotion is not None and out.promotion.promoted
    student = pyfunc.load_any("models:/shot_student@champion").model
    points, _, _, frame = from_json(Path(client.download_artifacts(out.parent_run_id, ARTIFACT)).read_text())
    assert frame == "320x180" and [p.role for p in points] == ["teacher", "student"]
    assert points[0].params == count_params(teacher) > points[1].params == count_params(student)
    assert points[1].name.startswith("lut3d/local pruned 50%") and points[1].quality == pytest.approx(out.best["val_psnr"])
    assert out.teacher_score == pytest.approx(points[0].quality)


def test_student_search_teachers_and_names():
    from platform.compress.points import pruned_student_name, teacher_uri

    prune = {"compress": {"prune": {"sparsity": {"choice": [0.25, 0.5]}}}, "warm_start": {"weights": "models:/a@champion"}}
    assert teacher_uri(prune) == "models:/a@champion" and pruned_student_name(prune) == "a_student"
    assert teacher_uri({**prune, "compress": {"prune": {"sparsity": 0.0}}}) is None  # warm start, no pruning
    distill = {"distill": {"teacher": "/ckpt/weights.pt#sha256:0123abcd"}}
    assert teacher_uri(distill) == "/ckpt/weights.pt" and pruned_student_name(distill) is None
    assert teacher_uri({"warm_start": {"weights": None}}) is None


def test_trials_receive_the_pruning_and_distillation_sections():
    """Trials see ``compress.prune`` (searched or fixed) and ``distill``; a sparsity of 0 or a
    driver-only field such as ``compress.pareto_frame`` stays out of the trial's config."""
    from platform.search.conditional import SpaceModel, trial_tree

    base = {"model": {"architecture": "lut3d"}, "compress": {"pareto_frame": "1080p"}}
    searched = trial_tree({**base, "compress": {"pareto_frame": "1080p", "prune": {"sparsity": {"choice": [0.25, 0.5]}}}})
    assert searched["compress"] == {"prune": {"sparsity": {"choice": [0.25, 0.5]}}}
    assert "compress.prune.sparsity" in SpaceModel(searched).searched_paths()
    assert trial_tree({**base, "compress": {"prune": {"sparsity": 0.5}}})["compress"] == {"prune": {"sparsity": 0.5}}
    assert "compress" not in trial_tree({**base, "compress": {"prune": {"sparsity": 0.0}}})
    assert "compress" not in trial_tree(base)
    assert trial_tree({**base, "distill": {"teacher": "t.pt", "alpha": 0.5}})["distill"]["alpha"] == 0.5
