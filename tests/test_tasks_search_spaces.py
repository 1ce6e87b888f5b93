"""The data/task search spaces load (full and --quick) and their quick trial builds and runs one step."""

from __future__ import annotations

import pytest
import torch

from platform import models, tasks
from platform.config import is_searchable, load_spec
from platform.train.loop import build_model, loss_spec

SPACES = ["convnext_fewshot", "unet_attention_vfx", "artefact_encoders", "artefact_hierarchical", "background_removal"]


def _first(node):
    """Resolve every searchable leaf to its first option / lower bound (a valid trial config)."""
    if is_searchable(node):
        _kind, args = next(iter(node.items()))
        return args[0]
    if isinstance(node, dict):
        return {k: _first(v) for k, v in node.items()}
    return node


@pytest.mark.parametrize("space", SPACES)
def test_space_loads(space):
    full = load_spec(space)
    quick = load_spec(space, quick=True)
    assert full.config["task"]["name"] in tasks.available()
    archs = full["model"]["architecture"]
    for a in (archs["choice"] if is_searchable(archs) else [archs]):
        assert a in models.available()
    assert quick["train"]["epochs"] <= 3 and quick["resources"]["gpus_per_worker"] == 0


@pytest.mark.parametrize("space", SPACES)
def test_quick_trial_takes_a_step(space):
    torch.set_num_threads(1)
    cfg = _first(load_spec(space, quick=True).config)
    task = tasks.create(cfg["task"]["name"], cfg["task"], seed=0)
    assert task.primary_metric == cfg["search"]["metric"] or cfg["search"]["metric"] in task.metric_names
    model = build_model(cfg, task.model_kwargs())
    spec = loss_spec(cfg) or task.default_loss()
    criterion = (task.create_loss(spec) if hasattr(task, "create_loss") else
                 __import__("platform.losses", fromlist=["create"]).create(spec, allow_unavailable=True))
    x, y = next(iter(torch.utils.data.DataLoader(task.train_dataset(), batch_size=2)))
    total, parts = criterion(model(x), y)
    total.backward()
    assert torch.isfinite(total) and parts
