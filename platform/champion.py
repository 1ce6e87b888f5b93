"""Registering a search's best model and moving the ``champion`` alias only when it wins.

Both the new model and the current champion are re-evaluated now, on the same validation
data, by the task's own validation; the scores logged by the trials are not trusted for the
decision (they may come from other data or other code). The decision and both scores are
written as tags on the new version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from platform.pyfunc import load_torch_model

log = logging.getLogger(__name__)

ALIAS = "champion"


@dataclass
class Promotion:
    name: str
    version: str
    score: float
    champion_version: str | None
    champion_score: float | None
    promoted: bool
    metric: str

    def message(self) -> str:
        unit = " dB" if "psnr" in self.metric else ""
        if self.promoted and self.champion_version is None:
            return (f"version {self.version} of `{self.name}` is now `{ALIAS}`: {self.metric} "
                    f"{self.score:.3f}{unit} (there was no champion before)")
        if self.promoted:
            return (f"version {self.version} of `{self.name}` is now `{ALIAS}`: {self.metric} {self.score:.3f}{unit} "
                    f"vs {self.champion_score:.3f}{unit} of version {self.champion_version}")
        return (f"version {self.version} of `{self.name}` was registered but NOT promoted: {self.metric} "
                f"{self.score:.3f}{unit} does not beat {self.champion_score:.3f}{unit} of `{ALIAS}` "
                f"version {self.champion_version}")


def evaluate(model: torch.nn.Module, task, metric: str) -> float:
    device = next(model.parameters()).device
    result = task.validate(model, device, "fp32")
    return result.sums[metric] / max(1, result.count)


def current_champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None


def register_and_maybe_promote(client: MlflowClient, name: str, model_uri: str, run_id: str, task,
                               metric: str, mode: str, source_checkpoint: str | None = None) -> Promotion:
    """Register ``model_uri`` as a new version of ``name`` and decide on the alias.

    ``source_checkpoint`` (the trial checkpoint the model was made from) is stored as the
    version's ``source_checkpoint`` tag; checkpoint retention never deletes such a folder.
    """
    champion = current_champion(client, name)  # read before the new version exists
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Champion of the platform's searches for this space.")
    # A logged model's URI is models:/<model id>; an MLflow server checks the source against it.
    model_id = model_uri[len("models:/"):] if model_uri.startswith("models:/m-") else None
    version = str(client.create_model_version(name, model_uri, run_id=run_id, model_id=model_id).version)

    new_model, _ = load_torch_model(f"models:/{name}/{version}")
    score = evaluate(new_model, task, metric)
    champ_score = None
    if champion is not None:
        try:
            champ_model, _ = load_torch_model(f"models:/{name}/{champion.version}")
            champ_score = evaluate(champ_model, task, metric)
        except Exception as exc:  # a champion that cannot be rebuilt any more cannot defend its title
            log.warning("could not re-evaluate champion version %s (%s); treating it as beaten",
                        champion.version, exc)
    if champ_score is None:
        promoted = True
    else:
        promoted = score > champ_score if mode == "max" else score < champ_score
    if promoted:
        client.set_registered_model_alias(name, ALIAS, version)
    result = Promotion(name, version, score, str(champion.version) if champion else None, champ_score, promoted, metric)
    tags = {
        "promotion.metric": metric,
        "promotion.score": f"{score:.6f}",
        "promotion.decision": "promoted" if promoted else "not promoted",
        "promotion.champion_version": str(champion.version) if champion else "none",
        "promotion.champion_score": f"{champ_score:.6f}" if champ_score is not None else "none",
        "promotion.message": result.message(),
    }
    if source_checkpoint:
        tags["source_checkpoint"] = str(source_checkpoint)
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    return result
