"""Prune a trained network and fine-tune it with the common trainer.

The trained weights are staged as a warm start (``warm_start.init: champion``, as a warm-started
search stages its champion), the trial config gets ``compress.prune.sparsity`` and the trainer
(:func:`platform.train.loop.train_loop`) does the rest: load, prune
(:func:`platform.compress.prune.prune_for_trial`), train and validate every epoch with the
trial's own task, loss, optimiser and schedule, checkpoints recording the pruned widths. A
search over the sparsity is the same config with ``compress.prune.sparsity: {choice: [...]}``
and ``warm_start.weights: models:/NAME@champion`` (``search_spaces/prune_champion.yaml``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from platform.compress.prune import output_channels, prune_structured, pruned_config
from platform.config import deep_merge
from platform.safeio import save_atomic, to_json_text
from platform.train.loop import CHECKPOINT_FILE, build_model, train_loop
from platform.train.session import Session

log = logging.getLogger(__name__)


@dataclass
class Pruned:
    model: nn.Module
    config: dict
    metrics: dict[str, Any]  # the last epoch's report ({} without fine-tuning)
    checkpoint: Path | None  # the fine-tuned checkpoint's state.pt


def stage_weights(model: nn.Module, config: dict, dest: Path) -> Path:
    """``model`` as a weights file the trainer's warm start reads (tensors + JSON config)."""
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "config": to_json_text(config), "epoch": 0}
    save_atomic(state, dest)
    return dest


def finetune_config(config: dict, weights: Path, sparsity: float, epochs: int,
                    overrides: dict | None = None) -> dict:
    cfg = deep_merge(copy.deepcopy(config), overrides or {})
    cfg["warm_start"] = {**(cfg.get("warm_start") or {}), "init": "champion"}
    cfg["_run"] = {**(cfg.get("_run") or {}), "warm_weights": str(weights)}
    cfg["compress"] = {**(cfg.get("compress") or {}), "prune": {"sparsity": float(sparsity)}}
    cfg["train"] = {**cfg["train"], "epochs": int(epochs)}
    return cfg


def prune_and_finetune(model: nn.Module, config: dict, sparsity: float, epochs: int, workdir: str | Path,
                       overrides: dict | None = None) -> Pruned:
    """``model`` (trained, with its trial ``config``) pruned at ``sparsity`` and fine-tuned for
    ``epochs`` epochs (0: pruned only); checkpoints under ``workdir``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if epochs <= 0:
        kwargs = config.get("_model_kwargs") or {}
        pruned = prune_structured(model, sparsity, output_channels(config), int(kwargs.get("in_channels", 3)))
        fresh = build_model({**config, "_pruned": None})
        return Pruned(pruned, pruned_config(config, pruned, fresh, sparsity), {}, None)
    weights = stage_weights(model, config, workdir / "trained.pt")
    cfg = finetune_config(config, weights, sparsity, epochs, overrides)
    session = Session(workdir / "checkpoints")
    metrics = train_loop(cfg, session)
    checkpoint = session.checkpoints[-1] / CHECKPOINT_FILE
    from platform.pyfunc import build_from_weights

    tuned, tuned_config = build_from_weights(checkpoint, torch.device("cpu"))
    return Pruned(tuned, tuned_config, metrics, checkpoint)
