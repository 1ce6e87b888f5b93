"""The MLflow model flavour of a trained platform model.

A logged model is an ``mlflow.pyfunc`` model whose artifacts are the weights and the trial
config needed to rebuild the network through the model registry; ``predict`` takes images
(N x H x W x C, uint8 or float in [0, 1]) at any resolution and returns float32 images in
[0, 1] of the same size, with the same padding the trainer's validation uses. The platform's
own code travels with the model (``code_paths``), so ``mlflow models serve`` works anywhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import torch

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
WEIGHTS_FILE = "weights.pt"


def export_weights(checkpoint_dir: str | Path, dest: Path) -> Path:
    """Weights + config only (no optimiser state) from a training checkpoint."""
    from platform.train.loop import load_checkpoint_state

    state = load_checkpoint_state(checkpoint_dir)
    torch.save({"model": state["model"], "config": state["config"], "epoch": state["epoch"]}, dest)
    return dest


def build_from_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    from platform import tasks
    from platform.train.loop import build_model

    state = torch.load(path, map_location="cpu", weights_only=False)
    config = state["config"]
    model = build_model(config, tasks.TASKS.get(config["task"]["name"]))
    model.load_state_dict(state["model"])
    model.eval().to(device)
    return model, config


class PlatformImageModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: images in, images out, at native resolution."""

    def load_context(self, context):
        self.model, self.config = build_from_weights(context.artifacts["weights"])

    def predict(self, context, model_input, params=None):
        from platform.inference import predict_image

        arr = np.asarray(model_input)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2))).float() * 2.0 - 1.0
        with torch.inference_mode():
            y = predict_image(self.model, x)
        return ((y + 1.0) / 2.0).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


def log_model(checkpoint_dir: str | Path, run_id: str, sample: np.ndarray | None = None) -> str:
    """Log the model of ``checkpoint_dir`` under ``run_id``; returns its model URI."""
    import tempfile

    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        weights = export_weights(checkpoint_dir, Path(tmp) / WEIGHTS_FILE)
        config = torch.load(weights, map_location="cpu", weights_only=False)["config"]
        (Path(tmp) / "config.json").write_text(json.dumps(config, indent=1, default=str))
        if sample is None:
            sample = np.zeros((1, 64, 64, 3), dtype=np.float32)
        signature = infer_signature(sample.astype(np.float32), sample.astype(np.float32))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=PlatformImageModel(),
                artifacts={"weights": str(weights), "config": str(Path(tmp) / "config.json")},
                code_paths=[str(PACKAGE_DIR)],
                signature=signature,
                pip_requirements=_requirements(),
            )
    return info.model_uri


def _requirements() -> list[str]:
    req = PACKAGE_DIR.parent / "requirements.txt"
    if req.is_file():
        return [line.strip() for line in req.read_text().splitlines()
                if line.strip() and not line.startswith("#") and not line.startswith(("pytest", "moto"))]
    return ["torch", "numpy"]


def load_torch_model(model_uri: str) -> tuple[torch.nn.Module, dict]:
    """The torch module and trial config behind a logged/registered model URI."""
    pyfunc_model = mlflow.pyfunc.load_model(model_uri)
    impl = pyfunc_model.unwrap_python_model()
    return impl.model, impl.config
