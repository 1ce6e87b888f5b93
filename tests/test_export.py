"""``python -m platform.export``: ONNX (dynamic height/width, int8) and TorchScript, checked
against the PyTorch network on real photos."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from platform.export import export, main, psnr
from platform.inference import InferenceOptions
from platform.tasks import predictor as task_predictor
from test_inference_helpers import astronaut, save_checkpoint, tiny_config, tiny_model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    config = tiny_config(crop=64)
    save_checkpoint(folder, tiny_model(config), config)
    return folder, config


def _predict(config: dict, img: np.ndarray, tlc: bool = True) -> np.ndarray:
    return task_predictor(tiny_model(config), config, "cpu", InferenceOptions(tlc=tlc)).run(img)["image"]


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _nchw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)


def test_onnx_matches_pytorch_at_any_size(ckpt, tmp_path):
    folder, config = ckpt
    out = tmp_path / "model.onnx"
    lines = []
    report = export(str(folder), "onnx", out, report=lines.append)
    assert report.max_abs_diff < 1e-4 and report.min_side == 96  # the TLC window of a 64 px crop
    assert any("max |onnx fp32 - pytorch|" in ln for ln in lines)
    graph = onnx.load(str(out)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    session = _session(out)
    # Sizes the trace never saw, not multiples of the network's 4: same result as predict.
    for size in ((131, 250), (200, 97)):
        img = astronaut(size)
        got = session.run(None, {"image": _nchw(img)})[0][0].transpose(1, 2, 0)
        assert got.shape == img.shape
        assert float(np.abs(got - _predict(config, img)).max()) < 1e-4
    # A batch of two frames.
    pair = np.concatenate([_nchw(astronaut((128, 128))), _nchw(astronaut((128, 128))[::-1].copy())])
    assert session.run(None, {"image": pair})[0].shape == (2, 3, 128, 128)


def test_onnx_without_tlc_runs_small_frames(ckpt, tmp_path):
    folder, config = ckpt
    out = tmp_path / "plain.onnx"
    report = export(str(folder), "onnx", out, tlc=False, report=lambda s: None)
    assert report.min_side == 4
    img = astronaut((40, 52))
    got = _session(out).run(None, {"image": _nchw(img)})[0][0].transpose(1, 2, 0)
    assert float(np.abs(got - _predict(config, img, tlc=False)).max()) < 1e-4


def test_int8_quantisation_reports_its_psnr_cost(ckpt, tmp_path):
    import imageio.v3 as iio

    folder, config = ckpt
    img = astronaut((160, 192))
    iio.imwrite(tmp_path / "in.png", np.round(img * 255).astype(np.uint8))
    target = np.clip(img * 0.9 + 0.05, 0, 1)  # a "graded" frame: the cost is measured against it
    iio.imwrite(tmp_path / "target.png", np.round(target * 255).astype(np.uint8))
    out = tmp_path / "model.int8.onnx"
    lines = []
    report = export(str(folder), "onnx", out, quantize="int8", image=tmp_path / "in.png",
                    target=tmp_path / "target.png", report=lines.append)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "ConvInteger" in ops or "DynamicQuantizeLinear" in ops  # really quantised
    session = _session(out)
    x = iio.imread(tmp_path / "in.png").astype(np.float32) / 255
    q = session.run(None, {"image": _nchw(x)})[0][0].transpose(1, 2, 0)
    fp32 = _predict(config, x)
    assert report.int8_psnr_vs_fp32 == pytest.approx(psnr(q, fp32), abs=0.05)
    assert 25 < report.int8_psnr_vs_fp32 < 200  # close to fp32, but not identical
    fp32_db, int8_db = report.int8_target_psnr
    t = iio.imread(tmp_path / "target.png").astype(np.float32) / 255
    assert fp32_db == pytest.approx(psnr(fp32, t), abs=0.01) and int8_db == pytest.approx(psnr(q, t), abs=0.01)
    assert any("cost" in ln for ln in lines)


def test_torchscript_matches_pytorch(ckpt, tmp_path):
    folder, config = ckpt
    out = tmp_path / "model.pt"
    report = export(str(folder), "torchscript", out, report=lambda s: None)
    assert report.max_abs_diff < 1e-5
    module = torch.jit.load(str(out))
    img = astronaut((150, 170))
    with torch.no_grad():
        got = module(torch.from_numpy(_nchw(img)))[0].numpy().transpose(1, 2, 0)
    assert float(np.abs(got - _predict(config, img)).max()) < 1e-5


def test_export_refuses_bad_requests(ckpt, tmp_path, capsys):
    folder, _ = ckpt
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"keep")
    assert main(["--model", str(folder), "--format", "onnx", "--output", str(existing)]) == 2
    assert existing.read_bytes() == b"keep"
    assert main(["--model", str(folder), "--format", "torchscript", "--quantize", "int8",
                 "--output", str(tmp_path / "m.pt")]) == 2
    assert main(["--model", str(tmp_path / "nothing"), "--format", "onnx", "--output", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "use it with --format onnx" in err and "neither an MLflow model URI" in err
    assert "Traceback" not in err


def test_batchnorm_network_is_exported_and_checked_in_eval_mode(tmp_path, monkeypatch):
    """A U-Net (BatchNorm) with non-trivial running statistics: the graph and the PyTorch check
    both use them (a module left in training mode would normalise with batch statistics)."""
    import copy

    config = copy.deepcopy(tiny_config(crop=64))
    config["model"] = {"architecture": "unet", "size": "small", "options": {"base_filters": 8}}
    torch.manual_seed(0)
    from platform.train.loop import build_model

    model = build_model(config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    save_checkpoint(tmp_path / "unet", model.eval(), config)
    monkeypatch.chdir(tmp_path)
    report = export(str(tmp_path / "unet"), "onnx", report=lambda *_: None)
    assert report.path.name == "unet.onnx"
    assert report.max_abs_diff < 1e-4
    img = astronaut((160, 192))
    got = _session(tmp_path / "unet.onnx").run(None, {"image": _nchw(img)})[0][0].transpose(1, 2, 0)
    want = task_predictor(model.eval(), config, "cpu", InferenceOptions()).run(img)["image"]
    assert float(np.abs(got - want).max()) < 1e-4


def test_default_output_names_follow_the_model():
    from pathlib import Path

    from platform.export import default_output

    assert default_output("models:/nafnet_fewshot@champion", "onnx", None) == Path("nafnet_fewshot-champion.onnx")
    assert default_output("models:/nafnet_fewshot/3", "onnx", "int8") == Path("nafnet_fewshot-3.int8.onnx")
    assert default_output("runs/trial_1/checkpoint_000004", "torchscript", None) == Path("checkpoint_000004.pt")
    assert default_output("ckpt/state.pt", "onnx", None) == Path("ckpt.onnx")


def test_an_operator_the_exporter_cannot_express_is_a_clear_error(ckpt, tmp_path, monkeypatch, capsys):
    import platform.export as ex

    def fail(*args, **kwargs):
        raise RuntimeError("SymbolicValueError: Unsupported: ONNX export of operator adaptive_avg_pool2d")

    monkeypatch.setattr(ex, "export_onnx", fail)
    folder, _ = ckpt
    out = tmp_path / "x.onnx"
    assert main(["--model", str(folder), "--format", "onnx", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "could not be exported to onnx" in err and "adaptive_avg_pool2d" in err and "--format torchscript" in err
    assert "Traceback" not in err and not out.exists()
