"""Promotion: a version becomes `champion` only above the floors and the re-evaluated champion.

The rules are tested on their own (``decide``) and through a real MLflow registry (SQLite store)
with real models re-evaluated by a real task: below the floor, NaN, a re-evaluation error, the
alias moved underneath, quick over full, and a genuine win.
"""

from __future__ import annotations

import math
import pathlib

import pytest
import torch

from platform.champion import Candidate, Incumbent, decide, min_gain, register_and_maybe_promote
from tests.test_inference_helpers import save_checkpoint, tiny_config


def _new(score=30.0, reevaluated=30.0, origin="full", floor=("lut3d", 25.0), error=None):
    return Candidate(score, reevaluated, origin, floor, error)


def _champ(version="1", score=28.0, origin="full", error=None, at_start="1"):
    return Incumbent(version, score, origin, error, at_start)


def test_a_version_above_the_floor_and_the_champion_is_promoted():
    d = decide(_new(), _champ(), "val_psnr", "max", 0.5)
    assert d.promoted and "beats the champion" in d.reason
    first = decide(_new(), Incumbent(None), "val_psnr", "max", 0.5)
    assert first.promoted and "no champion" in first.reason


@pytest.mark.parametrize("new, champ, why", [
    (_new(score=25.3), _champ(), "does not beat the best floor `lut3d`"),          # within min_gain
    (_new(score=float("nan")), _champ(), "not a finite number"),
    (_new(reevaluated=float("inf")), _champ(), "not a finite number"),
    (_new(error="OSError: gone"), _champ(), "could not be re-evaluated (OSError: gone)"),
    (_new(), _champ(version="2", at_start="1"), "moved from version 1 to 2"),
    (_new(), _champ(version="1", at_start=None), "moved from version None to 1"),
    (_new(origin="quick"), _champ(origin="full"), "never takes `champion` from a full search"),
    (_new(), _champ(error="KeyError: state"), "champion (version 1) could not be re-evaluated"),
    (_new(reevaluated=27.9), _champ(), "does not beat the champion"),
])
def test_every_refusal_names_its_reason(new, champ, why):
    d = decide(new, champ, "val_psnr", "max", 0.5)
    assert not d.promoted and why in d.reason, d.reason


def test_quick_may_replace_a_quick_champion_and_lower_is_better_for_min_metrics():
    assert decide(_new(origin="quick"), _champ(origin="quick"), "val_psnr", "max", 0.5).promoted
    sad = decide(_new(score=1.0, reevaluated=1.0, floor=("foreground", 2.0)),
                 _champ(score=1.5), "val_sad", "min", min_gain("val_sad", None))
    assert sad.promoted
    assert min_gain("val_psnr", None) == 0.5 and min_gain("val_psnr", 2.0) == 2.0 and min_gain("other", None) == 0


# --------------------------------------------------------------------------- through the registry
def _identity_model(config: dict, scale: float = 0.0) -> torch.nn.Module:
    """The tiny NAFNet of the test helpers: the identity (scale 0) or a perturbed, worse network."""
    from platform.train.loop import build_model

    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.ending.weight.normal_(0.0, scale) if scale else None
    return model.eval()


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """(client, task, log(model) -> model URI) against a private SQLite MLflow store."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from platform import tasks
    from platform.data.samples import resolve_data
    from platform.pyfunc import log_model

    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient()
    exp = client.create_experiment("look", artifact_location=(tmp_path / "artifacts").as_uri())
    config = tiny_config()
    task_cfg = {**config["task"], "data": str(resolve_data("sample:vfx_grade")), "val_max_side": 96}
    task = tasks.create("img2img", task_cfg)
    counter = iter(range(100))

    def log(model) -> tuple[str, str]:
        folder = tmp_path / f"ckpt{next(counter)}"
        save_checkpoint(folder, model, config)
        run_id = client.create_run(exp).info.run_id
        return log_model(folder, run_id), run_id

    yield client, task, config, log
    mlflow.set_tracking_uri(previous)


def _promote(client, task, uri_run, score, **kw):
    uri, run = uri_run
    kw.setdefault("floor", ("identity", 0.0))
    return register_and_maybe_promote(client, "look", uri, run, task, "val_psnr", "max", score=score, gain=0.5, **kw)


def test_registry_refusals_keep_the_alias_and_tag_the_reason(registry):
    client, task, config, log = registry
    identity = _identity_model(config)
    worse = _identity_model(config, scale=0.05)

    first = _promote(client, task, log(identity), 20.9)
    assert first.promoted and str(client.get_model_version_by_alias("look", "champion").version) == "1"

    # Below the floor: registered, not promoted, the reason and scores on the version.
    low = _promote(client, task, log(identity), 21.0, floor=("lut3d", 24.9), champion_at_start="1")
    v = client.get_model_version("look", low.version)
    assert not low.promoted and v.tags["promotion.decision"] == "not promoted"
    assert "best floor `lut3d`" in v.tags["promotion.reason"] and v.tags["promotion.floor"].startswith("lut3d=")

    # A NaN score never wins.
    nan = _promote(client, task, log(identity), float("nan"), champion_at_start="1")
    assert not nan.promoted and "finite" in nan.reason

    # Not better than the champion re-evaluated on the same data.
    lose = _promote(client, task, log(worse), 99.0, champion_at_start="1")
    assert not lose.promoted and "does not beat the champion" in lose.reason
    assert math.isfinite(float(client.get_model_version("look", lose.version).tags["promotion.champion_score"]))

    # The alias moved while the search ran (another search promoted version 2 meanwhile).
    client.set_registered_model_alias("look", "champion", "2")
    moved = _promote(client, task, log(identity), 30.0, champion_at_start="1")
    assert not moved.promoted and "moved from version 1 to 2" in moved.reason
    assert str(client.get_model_version_by_alias("look", "champion").version) == "2"


def test_quick_never_takes_a_full_champion_and_a_broken_champion_blocks(registry, tmp_path):
    import shutil

    client, task, config, log = registry
    identity = _identity_model(config)
    worse = _identity_model(config, scale=0.05)
    full = _promote(client, task, log(worse), 20.0, origin="full")
    assert full.promoted and client.get_model_version("look", "1").tags["origin"] == "full"
    quick = _promote(client, task, log(identity), 30.0, origin="quick", champion_at_start="1")
    assert not quick.promoted and "--quick" in quick.reason
    assert client.get_model_version("look", quick.version).tags["origin"] == "quick"

    # The champion's files are gone: it cannot be re-evaluated, so nothing is promoted over it.
    from urllib.parse import urlparse

    folder = pathlib.Path(urlparse(client.get_model_version_download_uri("look", "1")).path)
    assert folder.is_dir()
    shutil.rmtree(folder)
    blocked = _promote(client, task, log(identity), 30.0, champion_at_start="1")
    assert not blocked.promoted and "could not be re-evaluated" in blocked.reason
    assert str(client.get_model_version_by_alias("look", "champion").version) == "1"
