"""A trial that starts from the pretrained store: `pretrained:` in the search space fine-tunes.

The "release" is made in the test: a tiny NAFNet whose last layer (``ending``) has another
number of output channels, saved in the official ``{"params": ...}`` format into a private
local store. Loaded into the trial's 3-channel NAFNet, every tensor but ``ending.*`` transfers:
those are the backbone (lr x backbone_lr_factor, frozen first), ``ending.*`` the new head.
"""

from __future__ import annotations

import pytest
import torch

from platform import models
from platform.config import load_spec
from platform.errors import ConfigError
from platform.search.presets import cpu_nafnet
from platform.train.loop import load_checkpoint_state, train_loop
from platform.train.session import Session

OPTIONS = {"width": 8, "enc_blk_nums": [1, 1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1],
           "drop_out_rate": 0.0}
KEY = "layer_2/nafnet/tiny-release.pth"


@pytest.fixture
def store(tmp_path, monkeypatch):
    folder = tmp_path / "store"
    monkeypatch.setenv("PLATFORM_PRETRAINED_STORE", str(folder))
    monkeypatch.setenv("PLATFORM_PRETRAINED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATFORM_PRETRAINED_HUB", "0")
    torch.manual_seed(123)
    release = models.create("nafnet", size="small", out_channels=1, **OPTIONS)
    (folder / KEY).parent.mkdir(parents=True)
    torch.save({"params": release.state_dict()}, folder / KEY)
    return release.state_dict()


def _config(pretrained: dict, epochs: int = 3) -> dict:
    spec = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({
        "task": {"crop": 32, "crops_per_epoch": 8, "batch_size": 4, "val_max_side": 64},
        "model": {"size": "small", "options": OPTIONS},
        "loss": {"l1": 1.0, "lpips": 0.0, "laplacian": 0.0, "ssim": 0.0},
        "optimizer": {"lr": 1.0e-3, "grad_clip": None},
        "schedule": {"warmup_epochs": 0, "name": "constant"},
        "train": {"epochs": epochs, "image_every": epochs},
        "pretrained": {"key": KEY, **pretrained}}))
    return spec.config


def _backbone_and_head(state: dict) -> tuple[dict, dict]:
    head = {k: v for k, v in state.items() if k.startswith("ending.")}
    return {k: v for k, v in state.items() if k not in head}, head


def test_trial_fine_tunes_from_the_store_with_frozen_then_warmed_backbone(store, tmp_path, one_thread):
    config = _config({"backbone_lr_factor": 0.1, "freeze_epochs": 1, "warmup_epochs": 1})
    session = Session(tmp_path / "ckpts")
    train_loop(config, session)
    first = session.reports[0]
    n = len(store)
    assert first["pretrained_transferred"] == n - 2  # all but ending.weight and ending.bias
    assert first["pretrained_shape_mismatched"] == 2
    # Reported learning rates are those in effect after each epoch's last step: the backbone,
    # frozen during epoch 1, warms up at half its rate in epoch 2, then runs at 0.1x; head 1x.
    assert [r["lr"] for r in session.reports] == pytest.approx([1e-3] * 3)
    assert [r["lr_backbone"] for r in session.reports] == pytest.approx([0.5e-4, 1e-4, 1e-4])

    released_backbone, _ = _backbone_and_head(store)
    states = [load_checkpoint_state(c)["model"] for c in session.checkpoints]
    after1, head1 = _backbone_and_head(states[0])
    # Epoch 1: the backbone is exactly the release (frozen), the head trained.
    for k, v in released_backbone.items():
        assert torch.equal(after1[k], v), k
    assert any(not torch.equal(v, states[1][k]) for k, v in head1.items())
    # Epochs 2-3: the backbone moves, slowly (10x smaller steps than the head at most).
    after3, _ = _backbone_and_head(states[2])
    moved = max(float((after3[k] - v).abs().max()) for k, v in released_backbone.items() if v.is_floating_point())
    assert 0 < moved < 0.05


def test_resumed_trial_keeps_its_groups_and_takes_a_mutated_backbone_factor(store, tmp_path, one_thread):
    """PBT resumes a trial from another's checkpoint with mutated values: the config wins."""
    first = Session(tmp_path / "a")
    train_loop(_config({"backbone_lr_factor": 0.1}, epochs=1), first)
    resumed = Session(tmp_path / "b", resume_from=first.checkpoints[0])
    train_loop(_config({"backbone_lr_factor": 0.5}, epochs=2), resumed)
    assert [r["epoch"] for r in resumed.reports] == [2]
    assert resumed.reports[0]["lr_backbone"] == pytest.approx(0.5 * resumed.reports[0]["lr"])


def test_trial_from_scratch_has_one_group_and_no_pretrained_metrics(store, tmp_path):
    config = _config({}, epochs=1)
    config["pretrained"]["key"] = None
    session = Session(tmp_path / "ckpts")
    train_loop(config, session)
    assert "pretrained_transferred" not in session.reports[0] and "lr_backbone" not in session.reports[0]


def test_weights_of_another_architecture_are_a_clear_error(store, tmp_path):
    other = tmp_path / "store" / "layer_2" / "unet" / "u.pth"
    other.parent.mkdir(parents=True)
    torch.save(torch.nn.Linear(5, 7).state_dict(), other)
    config = _config({}, epochs=1)
    config["pretrained"]["key"] = "layer_2/unet/u.pth"
    with pytest.raises(ConfigError, match=r"pretrained.key 'layer_2/unet/u.pth': none of its tensors fits the nafnet"):
        train_loop(config, Session(tmp_path / "ckpts"))


def test_searched_fine_tuning_values_are_validated():
    with pytest.raises(ConfigError, match="pretrained.backbone_lr_factor"):
        load_spec("nafnet_fewshot", overrides={"pretrained": {"backbone_lr_factor": -1}})
    spec = load_spec("nafnet_fewshot", overrides={"pretrained": {"key": KEY,
                                                                 "backbone_lr_factor": {"loguniform": [0.01, 1.0]},
                                                                 "freeze_epochs": {"randint": [0, 3]}}})
    from platform.search.conditional import SpaceModel

    paths = SpaceModel.from_spec(spec).searched_paths()
    assert "pretrained.backbone_lr_factor" in paths and "pretrained.freeze_epochs" in paths


@pytest.mark.slow
def test_search_with_pretrained_section_records_the_fine_tuning(store, tmp_cwd):
    """A search space's `pretrained:` section: weights from the store, the searched backbone
    factor and frozen epochs in each trial's MLflow params, the load's counts in its metrics."""
    from mlflow.tracking import MlflowClient

    from platform.search import SearchOptions, run_search

    overrides = {
        "task": {"crop": 32, "crops_per_epoch": 8, "batch_size": 4, "val_max_side": 64},
        "model": {"size": "small", "options": OPTIONS},
        "loss": {"lpips": 0.0},
        "train": {"epochs": 2, "image_every": 2},
        "pretrained": {"key": KEY, "backbone_lr_factor": {"loguniform": [0.01, 1.0]},
                       "freeze_epochs": {"randint": [0, 2]}},
    }
    out = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=2, promote=False, overrides=cpu_nafnet(overrides)))
    assert len(out.rows) == 2
    client = MlflowClient()
    exp = client.get_experiment_by_name("nafnet_fewshot")
    children = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == out.parent_run_id]
    assert len(children) == 2
    factors = set()
    for child in children:
        p, m = child.data.params, child.data.metrics
        assert p["pretrained.key"] == KEY
        factor, frozen = float(p["pretrained.backbone_lr_factor"]), int(p["pretrained.freeze_epochs"])
        assert 0.01 <= factor <= 1.0 and frozen in (0, 1)
        factors.add(factor)
        assert m["pretrained_transferred"] == len(store) - 2
        # After the last epoch the backbone runs at lr x factor (no warm-up in this space).
        assert m["lr_backbone"] == pytest.approx(m["lr"] * factor, rel=1e-6)
    assert len(factors) == 2


def test_search_with_a_missing_pretrained_key_stops_before_ray(store, tmp_cwd):
    from platform.pretrained import WeightsUnavailableError
    from platform.search import SearchOptions, run_search

    with pytest.raises(WeightsUnavailableError, match="layer_2/nafnet/missing.pth"):
        run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=1,
                                 overrides=cpu_nafnet({"pretrained": {"key": "layer_2/nafnet/missing.pth"}})))
    import ray

    assert not ray.is_initialized()
