"""Registering a search's best model and moving the ``champion`` alias only when it earns it.

Every search registers its best model as a new version; the version becomes ``champion`` only if
all of these hold, and otherwise the alias stays where it was (fail-safe):

1. its score is a finite number;
2. it beats the best quality floor (:mod:`platform.floors`) by ``promotion.min_gain``
   (:data:`DEFAULT_MIN_GAIN` per metric when not set);
3. it beats the current champion, both re-evaluated now on the same validation data by the
   task's own validation; a champion that cannot be re-evaluated blocks the promotion (it is
   not "beaten" by an error);
4. the alias still points where it pointed when the search started (re-read right before it is
   moved): another search that promoted meanwhile is not silently overwritten;
5. a ``--quick`` search never takes the alias from a version of a full search.

Like with like: the score compared with the floors is the search's own metric as the trials
report it (with ``search.repeat`` the mean over the k folds or seeds, the floors averaged over
the same folds); the champion comparison re-evaluates both models on the data of the registered
weights' own validation split. The decision, the reason and every score are tags of the version
(``promotion.*``, ``origin``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

ALIAS = "champion"

# Margins over the best floor that make a model worth using (per metric; 0 for others).
DEFAULT_MIN_GAIN = {
    "val_psnr": 0.5, "val_ssim": 0.005, "val_lpips": 0.005,
    "val_miou": 0.01, "val_mdice": 0.01, "val_iou": 0.01, "val_dice": 0.01, "val_pixel_accuracy": 0.005,
    "val_miou_fine": 0.01, "val_miou_coarse": 0.01, "val_miou_binary": 0.01,
    "val_sad": 0.1, "val_mse": 1e-4, "val_grad": 0.1, "val_sad_unknown": 0.1,
}


def min_gain(metric: str, configured: float | None) -> float:
    return float(configured) if configured is not None else DEFAULT_MIN_GAIN.get(metric, 0.0)


@dataclass
class Candidate:
    """What is known about the new version when the decision is taken."""

    score: float                      # the search's metric as its trials report it
    reevaluated: float | None         # the registered model re-evaluated now (None: failed)
    origin: str                       # "quick" or "full"
    floor: tuple[str, float] | None   # the best floor (name, score), None when floors are off
    error: str | None = None          # why re-evaluation failed


@dataclass
class Incumbent:
    """The current champion as seen right before the alias would move."""

    version: str | None
    score: float | None = None        # re-evaluated now, on the same data
    origin: str = "full"
    error: str | None = None
    version_at_start: str | None = None


@dataclass
class Decision:
    promoted: bool
    reason: str
    tags: dict = field(default_factory=dict)


def better(a: float, b: float, mode: str, margin: float = 0.0) -> bool:
    return a > b + margin if mode == "max" else a < b - margin


def decide(new: Candidate, champ: Incumbent, metric: str, mode: str, gain: float) -> Decision:
    """The promotion rules in order; the first that fails is the reason (pure: tested directly)."""
    unit = " dB" if "psnr" in metric else ""
    if new.error is not None:
        return Decision(False, f"the new version could not be re-evaluated ({new.error})")
    for label, value in (("score", new.score), ("re-evaluated score", new.reevaluated)):
        if value is None or not math.isfinite(value):
            return Decision(False, f"its {label} {metric} is {value}, not a finite number")
    if new.floor is not None and not better(new.score, new.floor[1], mode, gain):
        return Decision(False, f"{metric} {new.score:.4f}{unit} does not beat the best floor `{new.floor[0]}` "
                               f"({new.floor[1]:.4f}{unit}) by promotion.min_gain {gain:g}{unit}")
    if champ.version != champ.version_at_start:
        return Decision(False, f"the `{ALIAS}` alias moved from version {champ.version_at_start} to "
                               f"{champ.version} while this search ran; re-run or promote by hand")
    if champ.version is None:
        return Decision(True, "there was no champion before")
    if new.origin == "quick" and champ.origin != "quick":
        return Decision(False, f"a --quick search never takes `{ALIAS}` from a full search's version "
                               f"{champ.version}")
    if champ.error is not None:
        return Decision(False, f"the champion (version {champ.version}) could not be re-evaluated "
                               f"({champ.error}); fix or re-register it, then promote by hand")
    if not math.isfinite(champ.score) or not better(new.reevaluated, champ.score, mode):
        return Decision(False, f"re-evaluated {metric} {new.reevaluated:.4f}{unit} does not beat the champion "
                               f"(version {champ.version}) re-evaluated on the same data: {champ.score:.4f}{unit}")
    return Decision(True, f"re-evaluated {metric} {new.reevaluated:.4f}{unit} beats the champion (version "
                          f"{champ.version}): {champ.score:.4f}{unit}")


# --------------------------------------------------------------------------- the registry
def evaluate(model, task, metric: str) -> float:
    device = next(model.parameters()).device
    result = task.validate(model, device, "fp32")
    return result.sums[metric] / max(1, result.count)


def current_champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version the alias points to now (None: no champion)."""
    v = current_champion(client, name)
    return str(v.version) if v is not None else None


def _reevaluate(uri: str, task, metric: str) -> tuple[float | None, str | None]:
    from platform.pyfunc import load_torch_model

    try:
        model, _ = load_torch_model(uri)
        return float(evaluate(model, task, metric)), None
    except Exception as exc:  # any failure is a reason not to promote, recorded on the version
        log.warning("could not re-evaluate %s: %s", uri, exc)
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


def _incumbent(client: MlflowClient, name: str, task, metric: str, at_start: str | None) -> Incumbent:
    champ = current_champion(client, name)  # re-read right before the decision
    if champ is None:
        return Incumbent(None, version_at_start=at_start)
    score, error = _reevaluate(f"models:/{name}/{champ.version}", task, metric)
    return Incumbent(str(champ.version), score, (champ.tags or {}).get("origin", "full"), error, at_start)


@dataclass
class Promotion:
    name: str
    version: str
    score: float
    champion_version: str | None
    champion_score: float | None
    promoted: bool
    metric: str
    reason: str = ""

    def message(self) -> str:
        unit = " dB" if "psnr" in self.metric else ""
        head = f"version {self.version} of `{self.name}` ({self.metric} {self.score:.3f}{unit})"
        if self.promoted:
            return f"{head} is now `{ALIAS}`: {self.reason}"
        return f"{head} was registered but NOT promoted: {self.reason}"


def register_and_maybe_promote(client: MlflowClient, name: str, model_uri: str, run_id: str, task, metric: str,
                               mode: str, *, score: float, origin: str = "full",
                               floor: tuple[str, float] | None = None, gain: float = 0.0,
                               champion_at_start: str | None = None,
                               source_checkpoint: str | None = None) -> Promotion:
    """Register ``model_uri`` as a new version of ``name`` and move the alias only if it earns it.

    ``score`` is the trial's reported metric; ``floor`` the best floor (name, score) on the same
    footing; ``champion_at_start`` the alias's version when the search began.
    """
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Champion of the platform's searches for this space.")
    # A logged model's URI is models:/<model id>; an MLflow server checks the source against it.
    model_id = model_uri[len("models:/"):] if model_uri.startswith("models:/m-") else None
    version = str(client.create_model_version(name, model_uri, run_id=run_id, model_id=model_id).version)
    client.set_model_version_tag(name, version, "origin", origin)
    reevaluated, error = _reevaluate(f"models:/{name}/{version}", task, metric)
    new = Candidate(score, reevaluated, origin, floor, error)
    champ = _incumbent(client, name, task, metric, champion_at_start)
    decision = decide(new, champ, metric, mode, gain)
    if decision.promoted and champion_version(client, name) != champ.version:  # last look before moving it
        decision = Decision(False, f"the `{ALIAS}` alias moved while the champion was being re-evaluated")
    if decision.promoted:
        client.set_registered_model_alias(name, ALIAS, version)
    result = Promotion(name, version, score, champ.version, champ.score, decision.promoted, metric, decision.reason)
    tags = {
        "promotion.metric": metric,
        "promotion.score": f"{score:.6f}",
        "promotion.reevaluated_score": "none" if reevaluated is None else f"{reevaluated:.6f}",
        "promotion.floor": f"{floor[0]}={floor[1]:.6f}" if floor else "none",
        "promotion.min_gain": f"{gain:g}",
        "promotion.decision": "promoted" if decision.promoted else "not promoted",
        "promotion.reason": decision.reason,
        "promotion.champion_version": champ.version or "none",
        "promotion.champion_score": "none" if champ.score is None else f"{champ.score:.6f}",
        "promotion.message": result.message(),
    }
    if source_checkpoint:
        tags["source_checkpoint"] = str(source_checkpoint)
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v[:5000])
    (log.info if decision.promoted else log.warning)("%s", result.message())
    return result
