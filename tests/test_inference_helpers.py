"""Tiny trained-format models for the inference, predict, export and serving tests.

No search is run: a small NAFNet is built from the quick profile of ``nafnet_fewshot``,
its residual scales (beta/gamma, zero at initialisation, which would make every block the
identity) are set to random values so that every block, channel attention included, acts,
and it is saved exactly as the trainer saves a checkpoint (``state.pt``) and logged and
registered through :func:`platform.pyfunc.log_model` into a private SQLite MLflow store.

The tests at the bottom check that helper output loads through every route ``predict``
accepts.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from platform.search.presets import cpu_nafnet

TINY_OPTIONS = {"width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1],
                "drop_out_rate": 0.0}


def _resolve(value):
    """First option / lower bound of every searchable leaf of a search space."""
    if isinstance(value, dict):
        if len(value) == 1:
            kind, args = next(iter(value.items()))
            if kind in ("choice", "grid"):
                return _resolve(args[0])
            if kind in ("uniform", "loguniform", "quniform", "randint"):
                return args[0]
        return {k: _resolve(v) for k, v in value.items()}
    return value


def tiny_config(crop: int = 64) -> dict:
    """A resolved trial config of the quick profile with a tiny NAFNet and ``_model_kwargs``."""
    from platform.config import load_spec

    cfg = _resolve(copy.deepcopy(load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet()).config))
    cfg["model"]["architecture"] = "nafnet"
    cfg["model"]["size"] = "small"
    cfg["model"]["options"] = dict(TINY_OPTIONS)
    cfg["task"]["crop"] = crop
    cfg["_model_kwargs"] = {"in_channels": 3, "out_channels": 3}
    return cfg


def tiny_model(config: dict | None = None, seed: int = 0) -> torch.nn.Module:
    from platform.train.loop import build_model

    config = config or tiny_config()
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma")) or name.startswith("ending."):  # as if trained (the
                p.normal_(0.0, 0.3)  # identity start zeroes them, which would make the network the identity)
    return model.eval()


def save_checkpoint(folder: Path, model: torch.nn.Module, config: dict) -> Path:
    """``folder/state.pt`` written by the trainer's own checkpoint function."""
    from platform.train.loop import _save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    _save_checkpoint(folder, model, opt, sch, 1, config, {"val_psnr": 30.0}, None)
    return folder / "state.pt"


def register(tmp: Path, checkpoint_dir: Path, name: str = "tiny") -> str:
    """Log the checkpoint as a pyfunc model in ``tmp/mlflow.db``, register it as ``name`` with
    the ``champion`` alias; returns the tracking URI (also set as the current one)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from platform.pyfunc import log_model

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.create_experiment(name, artifact_location=(tmp / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    model_uri = log_model(checkpoint_dir, run_id)
    client.set_terminated(run_id)
    client.create_registered_model(name)
    version = client.create_model_version(name, model_uri, run_id=run_id).version
    client.set_registered_model_alias(name, "champion", version)
    return uri


def astronaut(size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A real photo crop, float32 H x W x 3 in [0, 1]."""
    import skimage.data

    h, w = size
    return skimage.data.astronaut()[40:40 + h, 160:160 + w].astype(np.float32) / 255.0


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """(tracking URI, checkpoint folder, model, config) of a registered tiny model."""
    import mlflow

    config = tiny_config()
    model = tiny_model(config)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, model, config)
    previous = mlflow.get_tracking_uri()
    uri = register(tmp_path, ckpt)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri, ckpt, model, config
    mlflow.set_tracking_uri(previous)


# --------------------------------------------------------------------------- tests
def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_model_route_loads_the_same_network(mlflow_store):
    from platform.pyfunc import load_any

    _, ckpt, model, config = mlflow_store
    for spec in ("models:/tiny@champion", "models:/tiny/1", str(ckpt), str(ckpt / "state.pt")):
        loaded = load_any(spec)
        assert _same_weights(loaded.model, model), spec
        assert loaded.config["task"]["crop"] == config["task"]["crop"]


def test_unknown_model_names_the_uri_and_what_is_registered(mlflow_store, tmp_path):
    from platform.errors import UserError
    from platform.pyfunc import load_any

    with pytest.raises(UserError, match=r"models:/nope@champion.*Registered models there: tiny"):
        load_any("models:/nope@champion")
    with pytest.raises(UserError, match="neither an MLflow model URI"):
        load_any(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_any(str(junk))


def test_grey_frames_come_back_grey():
    from platform.inference import InferenceOptions
    from platform.tasks import predictor as task_predictor

    config = tiny_config()
    predictor = task_predictor(tiny_model(config), config, "cpu", InferenceOptions())
    rgb = astronaut((64, 80))
    grey = rgb @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    out = predictor.run(grey[:, :, None])["image"]
    assert out.shape == (64, 80, 1)
    colour = predictor.run(np.repeat(grey[:, :, None], 3, axis=2))["image"]  # what the network made of it
    np.testing.assert_allclose(out[:, :, 0], colour @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32), atol=1e-6)
    with_alpha = predictor.run(np.dstack([grey, np.full_like(grey, 0.5)]))["image"]
    assert with_alpha.shape == (64, 80, 2) and np.all(with_alpha[:, :, 1] == 0.5)
