"""The earlier champion whose weights start a warm-started search's trials (``--init-from``).

``warm_start.weights`` is ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model``
or a local ``weights.pt``/``state.pt``. :func:`resolve` (in the driver, before Ray starts) finds
it in the MLflow registry, downloads its weights and checks that they are a platform model; a
URI that does not resolve is a :class:`ConfigError` naming it. :func:`stage` copies the weights
into the experiment folder, which every node of the search reaches (``--storage``, as for
checkpoints); each trial reads them from there (:mod:`platform.train.warm`), never from MLflow,
so workers need no tracking credentials.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from platform.errors import ConfigError, UserError
from platform.model_uri import MODEL_URI

log = logging.getLogger(__name__)

STAGED = "warm_start/weights.pt"  # inside the experiment folder


@dataclass(frozen=True)
class ChampionWeights:
    uri: str  # what the user gave
    file: Path  # a local weights.pt / state.pt (``model`` tensors and trial ``config``)
    architecture: str
    version: str | None = None  # registry version, when the URI names one
    run_id: str | None = None

    def describe(self) -> str:
        at = f" (version {self.version})" if self.version else ""
        return f"{self.uri}{at}, a {self.architecture}"


def resolve(uri: str) -> ChampionWeights:
    """Find and download the weights ``uri`` names; a :class:`ConfigError` when it does not resolve."""
    uri = uri.strip()
    local = Path(uri).expanduser()
    if local.exists():
        return _checked(uri, _weights_file(local), None, None)
    if not uri.startswith(("models:/", "runs:/")):
        raise ConfigError(f"--init-from {uri}: neither a model URI nor an existing file. Give the earlier shot's "
                          "champion as models:/NAME@champion (or models:/NAME/VERSION, runs:/RUN_ID/model), or a "
                          "weights.pt / state.pt path.")
    version, run_id = _registry_version(uri)
    folder = Path(tempfile.mkdtemp(prefix="warm-init-"))
    try:
        import mlflow

        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder))
    except Exception as exc:  # an MLflow or storage error: the URI does not resolve here
        shutil.rmtree(folder, ignore_errors=True)
        raise ConfigError(f"--init-from {uri}: its files cannot be downloaded from the MLflow store "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). Check "
                          "MLFLOW_TRACKING_URI and the artifact store, or give a weights.pt path.") from None
    return _checked(uri, _weights_file(folder), version, run_id)


def _registry_version(uri: str) -> tuple[str | None, str | None]:
    """(version, run id) a ``models:/`` URI points to now; a ConfigError naming what exists otherwise."""
    m = MODEL_URI.match(uri)
    if not m:
        if uri.startswith("models:/"):
            raise ConfigError(f"--init-from {uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION.")
        return None, None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        v = (client.get_model_version_by_alias(m["name"], m["alias"]) if m["alias"]
             else client.get_model_version(m["name"], m["version"]))
    except MlflowException:
        raise ConfigError(f"--init-from {uri}: no such model version in the MLflow registry at "
                          f"{client.tracking_uri} ({_registered(client)}). Promote a champion of the earlier shot "
                          "first (run its search), or name an existing models:/NAME/VERSION.") from None
    return str(v.version), v.run_id


def _registered(client) -> str:
    try:
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
    except Exception:  # the registry itself may be unreachable; the message says where we looked
        return "the registry could not be listed"
    return f"registered models: {', '.join(names)}" if names else "no model is registered there"


def _weights_file(path: Path) -> Path:
    if path.is_file():
        return path
    for candidate in ("artifacts/weights.pt", "weights.pt", "state.pt"):
        if (path / candidate).is_file():
            return path / candidate
    found = sorted(path.rglob("weights.pt"))
    if found:
        return found[0]
    raise ConfigError(f"--init-from: {path} holds no weights.pt or state.pt; give a model logged by a platform "
                      "search (models:/NAME@champion) or a checkpoint file.")


def _checked(uri: str, file: Path, version: str | None, run_id: str | None) -> ChampionWeights:
    from platform.safeio import load_state

    try:
        state = load_state(file, "--init-from model file")
    except UserError as exc:
        raise ConfigError(f"--init-from {uri}: {exc}") from None
    config = state.get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict) or "model" not in state or "architecture" not in (config.get("model") or {}):
        raise ConfigError(f"--init-from {uri}: {file.name} is not a platform model (no trial config with "
                          "model.architecture); give a model logged by a platform search.")
    weights = ChampionWeights(uri, file, config["model"]["architecture"], version, run_id)
    log.info("warm start: trials whose architecture is %s start from %s", weights.architecture, weights.describe())
    return weights


def stage(weights: ChampionWeights, experiment_path: str) -> str:
    """Copy the weights into the experiment folder (local or ``s3://...``); returns where trials read them."""
    dest = f"{experiment_path.rstrip('/')}/{STAGED}"
    if "://" not in experiment_path:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights.file, dest)
        return dest
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(dest)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pyarrow.fs.copy_files(str(weights.file), path, destination_filesystem=fs)
    return dest


def record(client, parent_id: str, weights: ChampionWeights) -> None:
    """Tags ``warm_start.weights*`` on the new search's parent run."""
    tags = {"warm_start.weights": weights.uri, "warm_start.weights_architecture": weights.architecture}
    if weights.version:
        tags["warm_start.weights_version"] = weights.version
    if weights.run_id:
        tags["warm_start.weights_run"] = weights.run_id
    for k, v in tags.items():
        client.set_tag(parent_id, k, v)
