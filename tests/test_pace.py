"""A time-boxed trial keeps to its budget (platform/train/pace.py).

The trainer's clock is replaced by one that advances a fixed time per training step, so the
re-planning is checked against hand-computed step counts, not against this machine's speed.
"""

from __future__ import annotations

import math

import pytest
import torch

from platform.config import load_spec
from platform.safeio import load_state, save_atomic
from platform.search.presets import cpu_nafnet
from platform.train import loop
from platform.train.pace import Pace, Schedule
from platform.train.session import Session

STEP_S = 0.5  # seconds per training step on the fake clock


def test_schedule_is_warmup_then_cosine_to_the_floor():
    s = Schedule(total_steps=105, warmup_steps=5, base_lr=1e-3, min_lr=1e-4, kind="cosine")
    assert [s(i) for i in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert s(5) == pytest.approx(1.0)
    assert s(55) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: the mean of 1 and the floor 0.1
    assert s(105) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    assert Schedule(10, 0, 1e-3, 0.0, "constant")(7) == 1.0


def test_pace_keeps_a_plan_that_fits_and_shortens_one_that_does_not():
    s = Schedule(100, 0, 1e-3, 0.0, "cosine")
    on_plan = Pace(budget_s=100.0, schedule=s, steps_per_epoch=10, epochs=10)
    # 10 steps in 9 s + 1 s of validation: 100 s for 10 epochs, exactly the budget
    assert on_plan.after_epoch(10.0, 9.0, 1.0, 10, 10, 1) and s.total_steps == 100 and s.epoch_cap == 0

    s = Schedule(100, 0, 1e-3, 0.0, "cosine")
    behind = Pace(budget_s=100.0, schedule=s, steps_per_epoch=10, epochs=10)
    # twice as slow: 1.9 s a step; 9 epochs left need 9 s of validation; (100 - 20 - 9) / 1.9 = 37.4 steps
    assert behind.after_epoch(20.0, 19.0, 1.0, 10, 10, 1)
    assert s.epoch_cap == 37 // 9 == 4 and s.total_steps == 10 + 9 * 4 and behind.epoch_steps() == 4

    s = Schedule(100, 0, 1e-3, 0.0, "cosine")
    over = Pace(budget_s=100.0, schedule=s, steps_per_epoch=10, epochs=10)
    assert not over.after_epoch(95.0, 94.0, 1.0, 10, 10, 1)  # not one step per remaining epoch fits


def test_a_shortened_schedule_survives_a_checkpoint(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    s = Schedule(100, 0, 1e-3, 0.0, "cosine")
    s.epoch_cap, s.total_steps = 4, 46
    save_atomic({"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, s).state_dict()}, tmp_path / "c.pt")
    fresh = Schedule(100, 0, 1e-3, 0.0, "cosine")
    sched = torch.optim.lr_scheduler.LambdaLR(torch.optim.AdamW(model.parameters(), lr=1e-3), fresh)
    sched.load_state_dict(load_state(tmp_path / "c.pt", "checkpoint")["scheduler"])  # weights_only load
    assert (fresh.epoch_cap, fresh.total_steps) == (4, 46)


def _config(budget: float | None) -> dict:
    return load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({
        "task": {"crop": 32, "crops_per_epoch": 32, "batch_size": 4, "val_max_side": 48},
        "model": {"architecture": "nafnet", "size": "small", "options": {"width": 8}},
        "loss": {"l1": 1.0, "lpips": 0.0, "laplacian": 0.0, "ssim": 0.0},
        "optimizer": {"lr": 2.0e-3},
        "schedule": {"warmup_epochs": 0, "min_lr": 1.0e-6},
        "train": {"epochs": 4, "precision": "fp32", "image_every": 4, "time_budget_s": budget},
    })).config


def _run(config: dict, monkeypatch, tmp_path) -> list[dict]:
    """Train on a clock that moves STEP_S per training step and not otherwise."""
    now = [0.0]
    real_step = loop.train_step

    def step(*args):
        now[0] += STEP_S
        return real_step(*args)

    monkeypatch.setattr(loop, "clock", lambda: now[0])
    monkeypatch.setattr(loop, "train_step", step)
    session = Session(checkpoint_root=tmp_path)
    loop.train_loop(config, session)
    return session.reports


def test_a_trial_behind_its_plan_ends_on_time_with_a_decayed_learning_rate(monkeypatch, tmp_path, one_thread):
    # 4 epochs of 8 steps planned (32 steps, 16 s); budget 10 s. After epoch 1 (8 steps, 4 s):
    # (10 - 4) / 0.5 = 12 steps fit in the 3 epochs left -> 4 steps each; the schedule ends at 8 + 12 = 20.
    reports = _run(_config(10.0), monkeypatch, tmp_path / "short")
    assert [r["train_steps"] for r in reports] == [8, 12, 16, 20]
    assert reports[-1]["lr"] == pytest.approx(1.0e-6)  # the floor: cosine finished at the new end
    assert sum(r["epoch_time_s"] for r in reports) == pytest.approx(10.0)

    planned = _run(_config(None), monkeypatch, tmp_path / "plan")
    assert [r["train_steps"] for r in planned] == [8, 16, 24, 32]
    assert reports[0]["lr"] == planned[0]["lr"] and reports[1]["lr"] < planned[1]["lr"]  # re-planned after epoch 1
    ample = _run(_config(16.0), monkeypatch, tmp_path / "ample")  # the plan fits: nothing changes
    assert [r["val_psnr"] for r in ample] == [r["val_psnr"] for r in planned]
    assert all(math.isfinite(r["val_psnr"]) for r in reports)
