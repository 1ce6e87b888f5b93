"""The MLflow model flavour of a trained platform model, and loading models from anywhere.

A logged model is an ``mlflow.pyfunc`` model whose artifacts are the weights and the trial
config needed to rebuild the network through the model registry. ``predict`` runs every
frame through :class:`platform.inference.Predictor`, the same code as
``python -m platform.predict``: native resolution, tiles when a frame does not fit in
memory, NAFNet's TLC, optional TTA. Input: images N x H x W x C, float32 in [0, 1] (MLflow
enforces the signature's float32; the unwrapped model also takes uint8/uint16). Output by
task output kind (:meth:`platform.tasks.outputs.OutputKind.stack`):

* img2img: N x H x W x C float32 images in [0, 1];
* segmentation: N x H x W int64 class-index masks;
* hierarchical segmentation: ``{level: N x H x W int64}`` for every level;
* matting: N x H x W float32 alpha in [0, 1].

Parameters (``params=`` in Python, ``"params"`` in a served request): ``tile`` (0 = whole
frame when it fits), ``overlap`` (-1 = automatic), ``precision`` (fp32/bf16/fp16), ``tta``,
``tlc``. Images are the task's data values, as ``predict`` reads them from files: an
image-to-image task with a transfer function (``task.transfer``, e.g. ``log`` for linear
EXR plates) encodes them and decodes its outputs back, exactly as ``predict`` does. The
platform's code travels with the model (``code_paths``), so ``mlflow models serve`` works
anywhere the requirements are installed.

:func:`load_any` resolves what a user may call a model: a registry URI
(``models:/NAME@ALIAS``, ``models:/NAME/VERSION``), a run's model (``runs:/RUN_ID/model``),
a logged model folder, a training checkpoint folder or file (``state.pt``), a Tune trial
folder (its latest ``checkpoint_*``) or an exported ``weights.pt``.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from platform.errors import UserError
from platform.safeio import load_state, save_atomic, to_json_text

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
WEIGHTS_FILE = "weights.pt"
CHECKPOINT_FILE = "state.pt"
URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
PARAM_DEFAULTS: dict[str, Any] = {"tile": 0, "overlap": -1, "precision": "fp32", "tta": False, "tlc": True}


class ModelLoadError(UserError):
    """A model URI or checkpoint path cannot be resolved or loaded."""


def export_weights(checkpoint_dir: str | Path, dest: Path) -> Path:
    """Weights + config only (no optimiser state) from a training checkpoint."""
    from platform.train.loop import load_checkpoint_state

    state = load_checkpoint_state(checkpoint_dir)
    save_atomic({"model": state["model"], "config": to_json_text(state["config"]), "epoch": state["epoch"]}, dest)
    return dest


def _build(state: dict, device: str | torch.device, source: str) -> tuple[torch.nn.Module, dict]:
    from platform.train.loop import build_model

    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ModelLoadError(f"{source} is not a platform checkpoint (expected a dict with 'model' and 'config', "
                             "as written by the trainer's state.pt or the registry's weights.pt).")
    config = state["config"]
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:2]
        raise ModelLoadError(f"the weights in {source} do not fit the network its config describes "
                             f"({config.get('model')}): {' '.join(first)}") from None
    model.eval().to(device)
    return model, config


def build_from_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The network and trial config of a ``weights.pt``/``state.pt`` file (loaded with
    ``weights_only=True``: a file with pickled objects is refused and nothing in it runs)."""
    return _build(load_state(path, "model file"), device, str(path))


class _PlatformImageModel:
    """pyfunc wrapper: images in, task outputs out, at native resolution.

    The MLflow base class is mixed in by :func:`__getattr__` on first use, so that importing
    this module (``predict`` on a local checkpoint, the trainer) does not import MLflow.
    """

    def load_context(self, context):
        self.model, self.config = build_from_weights(context.artifacts["weights"])
        self._serving: dict[bool, torch.nn.Module] = {}

    def _device(self) -> torch.device:
        import os

        name = os.environ.get("PLATFORM_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(name)

    def predictor(self, params: dict | None = None):
        """The :class:`Predictor` for request ``params`` (the TLC copy of the network is cached;
        ``self.model`` stays the plain trained network, as the champion's re-evaluation expects)."""
        from platform.inference import InferenceOptions
        from platform.tasks import predictor

        p = {**PARAM_DEFAULTS, **{k: v for k, v in (params or {}).items() if v is not None}}
        tlc = bool(p["tlc"])
        device = self._device()
        if tlc not in self._serving:
            self._serving[tlc] = copy.deepcopy(self.model).to(device) if tlc else self.model.to(device)
        overlap = int(p["overlap"])
        options = InferenceOptions(precision=str(p["precision"]), tile=int(p["tile"]) or None,
                                   overlap=None if overlap < 0 else overlap, tta=bool(p["tta"]), tlc=tlc)
        return predictor(self._serving[tlc], self.config, device, options)

    def predict(self, context, model_input, params=None):
        from platform.inference import deterministic

        predictor = self.predictor(params)
        frames = as_frames(model_input)
        with deterministic(predictor.device):
            return stack_outputs([predictor.run(frame) for frame in frames], predictor.kind)


def __getattr__(name: str):
    """``PlatformImageModel``: the pyfunc class, built (and MLflow imported) on first access."""
    if name != "PlatformImageModel":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    import mlflow.pyfunc

    with warnings.catch_warnings():
        # Subclassing PythonModel without type hints warns; the model has an explicit signature.
        warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)
        cls = type("PlatformImageModel", (_PlatformImageModel, mlflow.pyfunc.PythonModel),
                   {"__module__": __name__, "__doc__": _PlatformImageModel.__doc__})
    globals()["PlatformImageModel"] = cls
    return cls


def as_frames(model_input: Any) -> list[np.ndarray]:
    """A pyfunc input (array N x H x W x C or H x W x C, list, DataFrame of arrays) as float32 [0, 1] frames."""
    if hasattr(model_input, "to_numpy") and not isinstance(model_input, np.ndarray):  # pandas
        model_input = model_input.to_numpy()
        if model_input.dtype == object:
            model_input = [np.asarray(v.tolist() if hasattr(v, "tolist") else v) for v in model_input.ravel()]
    if isinstance(model_input, dict):
        model_input = next(iter(model_input.values()))
    frames = list(model_input) if isinstance(model_input, (list, tuple)) else None
    if frames is None:
        arr = np.asarray(model_input)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim == 1 and arr.dtype == object:  # ragged batch
            frames = list(arr)
        elif arr.ndim != 4:
            raise UserError(f"expected images N x H x W x C (or one H x W x C), got an array of shape {arr.shape}.")
        else:
            frames = list(arr)
    out = []
    for f in frames:
        f = np.asarray(f)
        f = f.astype(np.float32) / (65535.0 if f.dtype == np.uint16 else 255.0) if f.dtype in (np.uint8, np.uint16) \
            else f.astype(np.float32)
        out.append(f)
    return out


def stack_outputs(outputs: list[dict[str, np.ndarray]], kind):
    """Per-frame :meth:`Predictor.run` results as the pyfunc's batch output (the output kind stacks them)."""
    return kind.stack(outputs)


def _signature(model: torch.nn.Module, config: dict, sample: np.ndarray):
    """Any batch size, height, width and channel count in; outputs as the task produces them."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    from platform.inference import InferenceOptions
    from platform.tasks import predictor as task_predictor

    predictor = task_predictor(copy.deepcopy(model), config, "cpu", InferenceOptions(tlc=False))
    example = stack_outputs([predictor.run(f) for f in as_frames(sample[:1])], predictor.kind)
    if isinstance(example, dict):
        outputs = Schema([TensorSpec(v.dtype, (-1,) * v.ndim, name=k) for k, v in example.items()])
    else:
        outputs = Schema([TensorSpec(example.dtype, (-1,) * example.ndim)])
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1, -1))])
    types = {int: "integer", bool: "boolean", str: "string"}
    params = ParamSchema([ParamSpec(k, types[type(v)], v) for k, v in PARAM_DEFAULTS.items()])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


# The served model is logged as "model from code": MLflow runs this file when it loads the
# model. A server process (uvicorn, gunicorn) has usually imported the standard library's
# ``platform`` before any model code runs, and a pickled model class referring to
# ``platform.pyfunc`` would then fail to import ("'platform' is not a package"). The entry
# puts the platform package (logged under code/, and re-exporting the stdlib module) in
# its place first.
ENTRY_FILE = "platform_model.py"
ENTRY_CODE = '''"""MLflow entry of a platform model (written by platform.pyfunc.log_model)."""
import sys
from pathlib import Path

_code = Path(__file__).resolve().parent / "code"
if _code.is_dir() and str(_code) not in sys.path:
    sys.path.insert(0, str(_code))
_loaded = sys.modules.get("platform")
if _loaded is not None and not hasattr(_loaded, "__path__"):
    del sys.modules["platform"]  # the stdlib module; the package re-exports all of it

import mlflow  # noqa: E402
from platform.pyfunc import PlatformImageModel  # noqa: E402

mlflow.models.set_model(PlatformImageModel())
'''


def log_model(checkpoint_dir: str | Path, run_id: str, sample: np.ndarray | None = None) -> str:
    """Log the model of ``checkpoint_dir`` under ``run_id``; returns its model URI.

    ``sample`` (N x H x W x C float32 in [0, 1], e.g. the task's example input) is run once to
    type the outputs of the signature; the signature accepts any batch, size and channel count.
    """
    import tempfile
    import warnings

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        weights = export_weights(checkpoint_dir, Path(tmp) / WEIGHTS_FILE)
        model, config = build_from_weights(weights)
        (Path(tmp) / "config.json").write_text(json.dumps(config, indent=1, default=str))
        entry = Path(tmp) / ENTRY_FILE
        entry.write_text(ENTRY_CODE)
        channels = int((config.get("_model_kwargs") or {}).get("in_channels", 3))
        if sample is None:
            sample = np.linspace(0, 1, 64 * 64 * channels, dtype=np.float32).reshape(1, 64, 64, channels)
        sample = np.asarray(sample, dtype=np.float32)
        if sample.ndim == 3:
            sample = sample[None]
        with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            # We give an explicit signature; MLflow's hints about type hints and input examples are noise.
            warnings.filterwarnings("ignore", message=".*(type hints|input example).*", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(entry),
                artifacts={"weights": str(weights), "config": str(Path(tmp) / "config.json")},
                code_paths=[str(PACKAGE_DIR)],
                signature=_signature(model, config, sample),
                pip_requirements=_requirements(),
            )
    return info.model_uri


def _requirements() -> list[str]:
    req = PACKAGE_DIR.parent / "requirements.txt"
    if req.is_file():
        # The runtime pins only: the test stack lives in requirements-test.txt.
        return [line.strip() for line in req.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return ["torch", "numpy"]


def load_torch_model(model_uri: str) -> tuple[torch.nn.Module, dict]:
    """The torch module and trial config behind a logged/registered model URI."""
    import mlflow.pyfunc

    pyfunc_model = mlflow.pyfunc.load_model(model_uri)
    impl = pyfunc_model.unwrap_python_model()
    return impl.model, impl.config


# --------------------------------------------------------------------------- any model
@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: dict
    source: str  # what was loaded, for messages


def load_any(spec: str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model from a registry/run URI or a local checkpoint (see the module docstring).

    Raises :class:`ModelLoadError` (a user error) naming the spec and what to do when it
    cannot be resolved.
    """
    spec = str(spec)
    if URI_RE.match(spec) and not Path(spec).exists():
        model, config = _load_uri(spec)
        return LoadedModel(model.to(device), config, spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"model {spec!r} is neither an MLflow model URI (models:/NAME@champion, models:/NAME/VERSION, "
            f"runs:/RUN_ID/model) nor an existing checkpoint file or folder. Check the path, or give a URI."
        )
    file = _checkpoint_file(path)
    model, config = _build(load_state(file, "checkpoint"), device, str(file))
    return LoadedModel(model, config, str(file))


def _checkpoint_file(path: Path) -> Path:
    if path.is_file():
        return path
    for candidate in (path / CHECKPOINT_FILE, path / WEIGHTS_FILE, path / "artifacts" / WEIGHTS_FILE):
        if candidate.is_file():
            return candidate
    checkpoints = sorted((p for p in path.glob("checkpoint_*") if (p / CHECKPOINT_FILE).is_file()),
                         key=lambda p: (len(p.name), p.name))
    if checkpoints:
        return checkpoints[-1] / CHECKPOINT_FILE
    raise ModelLoadError(f"folder {path} holds no model: expected {CHECKPOINT_FILE} (a training checkpoint), "
                         f"{WEIGHTS_FILE}, a logged MLflow model (artifacts/{WEIGHTS_FILE}) or checkpoint_* folders.")


def _load_uri(uri: str) -> tuple[torch.nn.Module, dict]:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return load_torch_model(uri)
    except MlflowException as exc:
        message = str(exc.message if hasattr(exc, "message") else exc).strip().splitlines()[0]
        hint = ""
        if uri.startswith("models:/"):
            hint = _registered_models_hint()
        raise ModelLoadError(
            f"cannot load model {uri!r} from the MLflow tracking store {mlflow.get_tracking_uri()!r}: {message}."
            f"{hint} Set MLFLOW_TRACKING_URI to the store the model was registered in, or give a checkpoint path."
        ) from None
    except (OSError, AttributeError, KeyError) as exc:
        raise ModelLoadError(f"{uri!r} is not a platform model ({type(exc).__name__}: {exc}); give a model "
                             "logged by a platform search, or a checkpoint path.") from None


def _registered_models_hint() -> str:
    try:
        from mlflow.tracking import MlflowClient

        names = sorted(m.name for m in MlflowClient().search_registered_models(max_results=50))
    except Exception:  # the store itself may be unreachable; the main message says so
        return ""
    return f" Registered models there: {', '.join(names)}." if names else " No model is registered there."
