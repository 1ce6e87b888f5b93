"""Every speed-up keeps the results (issue 10).

* bf16 autocast and ``torch.compile`` reach the validation PSNR of fp32 eager on a short
  fixed-seed run (tolerances stated below);
* a single-worker trial run in the Tune trial's own process (the fast default) and the same
  trial as a Ray Train ``TorchTrainer`` job report identical metrics for the same seed.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from platform.config import load_spec
from platform.models import register_model
from platform.search.presets import cpu_nafnet
from platform.train.loop import train_loop
from platform.train.session import Session

# bf16 keeps 8 bits of mantissa: on these 3-epoch runs its PSNR stays within 0.01 dB of fp32
# (measured 19.546 vs 19.551 dB for NAFNet width 8); 0.1 dB leaves room for other CPUs' kernels.
BF16_TOLERANCE_DB = 0.1
# Inductor may fuse and reorder float sums; on CPU it matched eager to the last digit.
COMPILE_TOLERANCE_DB = 0.02


class TinyResidual(nn.Module):
    """Three convolutions and a skip: compiles in seconds on CPU (NAFNet takes minutes)."""

    size_multiple = 1

    def __init__(self, channels: int = 3, width: int = 16):
        super().__init__()
        self.a = nn.Conv2d(channels, width, 3, padding=1)
        self.b = nn.Conv2d(width, width, 3, padding=1)
        self.c = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x):
        return x + self.c(torch.relu(self.b(torch.relu(self.a(x)))))


@register_model("_test_tiny_residual", kind="img2img")
def _tiny_residual(size=None, in_channels=3, out_channels=3, **_):
    return TinyResidual(in_channels)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny networks run faster on one thread than on two busy ones."""


def _config(precision: str = "fp32", compile_: bool = False, architecture: str = "nafnet", epochs: int = 3) -> dict:
    model = ({"architecture": "nafnet", "size": "small", "options": {"width": 8}} if architecture == "nafnet"
             else {"architecture": architecture, "size": None, "options": {}})
    return load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({
        "task": {"crop": 48, "crops_per_epoch": 64, "batch_size": 8, "val_max_side": 128},
        "model": model,
        "loss": {"l1": 1.0, "lpips": 0.0, "laplacian": 0.0, "ssim": 0.0},
        "optimizer": {"lr": 2.0e-3},
        "schedule": {"warmup_epochs": 0},
        "train": {"epochs": epochs, "precision": precision, "compile": compile_, "image_every": epochs},
    })).config


def _psnrs(config: dict, tmp_path, name: str) -> list[float]:
    session = Session(checkpoint_root=tmp_path / name)
    train_loop(config, session)
    return [r["val_psnr"] for r in session.reports]


def test_bf16_training_reaches_the_fp32_psnr(tmp_path):
    fp32 = _psnrs(_config("fp32"), tmp_path, "fp32")
    bf16 = _psnrs(_config("bf16"), tmp_path, "bf16")
    assert fp32[-1] > fp32[0] + 0.5, fp32  # the run really trains
    assert bf16 != fp32  # bf16 really ran (its rounding shows in the last digits)
    assert abs(bf16[-1] - fp32[-1]) < BF16_TOLERANCE_DB, (fp32, bf16)


def test_compiled_training_reaches_the_eager_psnr(tmp_path):
    eager = _psnrs(_config("fp32", architecture="_test_tiny_residual"), tmp_path, "eager")
    compiled = _psnrs(_config("fp32", compile_=True, architecture="_test_tiny_residual"), tmp_path, "compiled")
    assert eager[-1] > eager[0], eager
    assert abs(compiled[-1] - eager[-1]) < COMPILE_TOLERANCE_DB, (eager, compiled)


@pytest.mark.slow
def test_in_process_and_torch_trainer_trials_report_identical_metrics(tmp_cwd):
    """The same config as a Tune trial run in-process (the default for one worker) and as a
    one-worker TorchTrainer job (``resources.mode: train``): identical metrics, epoch by epoch."""
    import ray
    from ray import tune

    from platform.search.driver import SearchOptions, init_ray
    from trainables.fewshot import run_trial

    base = _config(epochs=2)
    base["resources"] = {**base["resources"], "workers": 1, "cpus_per_worker": 1}
    storage = str(tmp_cwd / "ray_results")
    base["_run"] = {"storage_path": storage, "metric": "val_psnr", "mode": "max"}
    configs = {mode: {**base, "resources": {**base["resources"], "mode": mode}} for mode in ("auto", "train")}

    def placement(config):
        # The TorchTrainer trial only drives its worker group, which asks for its own CPU.
        return tune.PlacementGroupFactory([{"CPU": 0.1 if config["resources"]["mode"] == "train" else 1}])

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PLATFORM_DATA_DIR": os.environ["PLATFORM_DATA_DIR"],
           "PLATFORM_PRETRAINED_DIR": os.path.join(repo, ".cache", "pretrained"),
           "OMP_NUM_THREADS": "1"}
    os.environ["PLATFORM_KEEP_RAY"] = "1"
    try:
        init_ray(SearchOptions("nafnet_fewshot"), env)
        tuner = tune.Tuner(
            tune.with_resources(run_trial, placement),
            param_space=tune.grid_search([configs["auto"], configs["train"]]),
            run_config=tune.RunConfig(name="paths", storage_path=storage, verbose=0),
        )
        results = tuner.fit()
    finally:
        os.environ.pop("PLATFORM_KEEP_RAY", None)
        ray.shutdown()
    assert not results.errors, results.errors
    histories = {}
    for result in results:
        df = result.metrics_dataframe
        histories[result.config["resources"]["mode"]] = df[["epoch", "train_loss", "val_psnr", "val_ssim"]]
    auto, train = histories["auto"], histories["train"]
    assert list(auto["epoch"]) == list(train["epoch"]) == [1, 2]
    for column in ("train_loss", "val_psnr", "val_ssim"):
        assert auto[column].tolist() == pytest.approx(train[column].tolist(), rel=1e-6, abs=1e-7), column


def test_precision_resolves_to_what_the_device_runs_well():
    from platform.train.loop import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"  # CPU bf16 autocast (tested above)
    assert resolve_precision("fp16", cpu) == "fp32"  # fp16 autocast and its gradient scaler are CUDA's
    assert resolve_precision("fp32", cpu) == "fp32"
