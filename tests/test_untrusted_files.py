"""Issue 15.1: no code runs from a model file we load.

A crafted ``state.pt``/``weights.pt`` whose unpickling would create a file is handed to
``predict --model``, to the trainer's resume and to the registered pyfunc model: each refuses
it with a clear error and the file is never created. A legitimate checkpoint still trains,
resumes and serves (it holds tensors, numbers and JSON text only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from platform.config import load_spec
from platform.errors import UserError
from platform.safeio import UnsafeFileError
from platform.search.presets import cpu_nafnet
from platform.train.loop import CHECKPOINT_FILE, load_checkpoint_state, train_loop
from platform.train.session import Session
from test_inference_helpers import register, save_checkpoint, tiny_config, tiny_model


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appearing proves code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(path: Path, marker: Path) -> Path:
    """A platform-shaped checkpoint with the payload in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model = tiny_model()
    torch.save({"model": model.state_dict(), "config": tiny_config(), "epoch": 1, "optimizer": _Payload(marker),
                "scheduler": {}, "rng": {"torch": torch.get_rng_state()}}, path)
    return path


def test_the_payload_really_runs_when_unpickled(tmp_path):
    """Guard for the tests below: the crafted file does run code under a plain unpickle."""
    marker = tmp_path / "pwned"
    f = _crafted(tmp_path / "state.pt", marker)
    torch.load(f, map_location="cpu", weights_only=False)
    assert marker.exists()


def test_predict_refuses_a_crafted_checkpoint(tmp_path, capsys):
    import imageio.v3 as iio

    from platform.predict import main as predict_main

    marker = tmp_path / "pwned"
    for name in ("state.pt", "weights.pt"):
        f = _crafted(tmp_path / "ckpt" / name, marker)
        src = tmp_path / "in.png"
        iio.imwrite(src, np.zeros((32, 32, 3), np.uint8))
        rc = predict_main(["--model", str(f), "--input", str(src), "--output", str(tmp_path / "out.png"), "--quiet"])
        err = capsys.readouterr().err
        assert rc != 0 and "refused" in err and "pickled Python objects (io.open)" in err and str(f) in err, err
        assert "Traceback" not in err
        assert not marker.exists()
        f.unlink()


def test_trainer_resume_refuses_a_crafted_checkpoint(tmp_path, one_thread):
    marker = tmp_path / "pwned"
    _crafted(tmp_path / "resume" / CHECKPOINT_FILE, marker)
    config = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({
        "task": {"crop": 32, "crops_per_epoch": 4, "batch_size": 4, "val_max_side": 64},
        "model": {"options": {"width": 8}}, "loss": {"l1": 1.0, "lpips": 0.0, "laplacian": 0.0, "ssim": 0.0},
        "optimizer": {"lr": 1.0e-3}, "train": {"epochs": 2, "image_every": 1}})).config
    with pytest.raises(UnsafeFileError, match="refused"):
        train_loop(config, Session(tmp_path / "out", resume_from=tmp_path / "resume"))
    assert not marker.exists()

    # The trainer's own checkpoint holds no pickled object and resumes.
    first = Session(tmp_path / "first")
    train_loop({**config, "train": {**config["train"], "epochs": 1}}, first)
    state = torch.load(first.checkpoints[-1] / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert isinstance(state["config"], str) and json.loads(state["config"])["train"]["epochs"] == 1
    resumed = Session(tmp_path / "second", resume_from=first.checkpoints[-1])
    train_loop(config, resumed)
    assert [r["epoch"] for r in resumed.reports] == [2]
    assert load_checkpoint_state(resumed.checkpoints[-1])["epoch"] == 2


def test_registered_pyfunc_model_refuses_crafted_weights(tmp_path, monkeypatch):
    import mlflow

    from platform.pyfunc import load_any

    config = tiny_config()
    save_checkpoint(tmp_path / "ckpt", tiny_model(config), config)
    previous = mlflow.get_tracking_uri()
    try:
        uri = register(tmp_path, tmp_path / "ckpt")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        assert load_any("models:/tiny@champion").config["task"]["crop"] == config["task"]["crop"]
        logged = list((tmp_path / "artifacts").rglob("weights.pt"))
        assert len(logged) == 1
        marker = tmp_path / "pwned"
        _crafted(logged[0], marker)  # someone with write access to the artifact store swaps the weights
        with pytest.raises(UserError, match="refused"):
            mlflow.pyfunc.load_model("models:/tiny@champion")
        with pytest.raises(UserError, match="refused"):
            load_any("models:/tiny@champion")
        assert not marker.exists()
    finally:
        mlflow.set_tracking_uri(previous)
