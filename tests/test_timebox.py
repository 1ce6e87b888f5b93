"""Time-boxed searches: durations, the plan's arithmetic, and a real measurement of a step."""

from __future__ import annotations

import time

import pytest

from platform.errors import ConfigError
from platform.search import timebox
from platform.search.timebox import Measurement, parse_duration, plan


def test_durations():
    assert parse_duration("10m") == 600 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    assert parse_duration(180) == 180
    for bad in ("ten minutes", "5s", "-3m"):
        with pytest.raises(ConfigError, match="time-budget"):
            parse_duration(bad)


def test_the_plan_spends_the_budget_on_steps_at_the_largest_crop_that_keeps_enough_of_them():
    # 50 ms/step at 64², 600 ms at 256² (affine in pixels), 2 s per validation, 600 s per trial.
    m = Measurement((64, 256), (0.05, 0.6), 2.0)
    p = plan(600, m, [64, 96, 128, 192, 256], batch=8, trials_at_once=2, waves=1, min_steps=1000)
    assert p.trials == 2 and p.trial_seconds == 600
    step_192 = m.step_at(192)
    assert 540 / step_192 >= 1000 > 540 / m.step_at(256)  # 192 is the largest crop with >= 1000 steps
    assert p.crop == 192
    assert p.epochs == 15  # 5% of 600 s over 2 s validations
    spent = p.steps * p.step_s + p.epochs * p.val_s
    assert 0.97 * 600 <= spent <= 600 + p.epochs * p.step_s * 8  # within one rounding per epoch
    assert p.crops_per_epoch % 8 == 0
    # Two waves: twice the trials, half the time each.
    p2 = plan(600, m, [64, 256], batch=8, trials_at_once=2, waves=2, min_steps=100)
    assert p2.trials == 4 and p2.trial_seconds == 300


def test_a_tiny_budget_still_trains_at_the_smallest_crop():
    m = Measurement((64, 128), (0.5, 2.0), 30.0)
    p = plan(40, m, [64, 128], batch=4, trials_at_once=1, waves=1, min_steps=400)
    assert p.crop == 64 and p.epochs == 3 and p.steps >= 3


def test_the_user_fixes_win_over_the_plan():
    from platform.config import load_spec

    fixed = {"train": {"epochs": 5}, "search": {"num_trials": 3}}
    spec = load_spec("nafnet_fewshot", quick=True, overrides=fixed)
    p = plan(100, Measurement((64, 128), (0.1, 0.2), 1.0), [64, 128], 8, 2, 1, 10)
    timebox.apply(spec, p, fixed)
    assert spec["train"]["epochs"] == 5 and spec["search"]["num_trials"] == 3
    assert spec["task"]["crop"] == p.crop and spec["search"]["scheduler"]["max_t"] == 5
    assert timebox.trial_time_limit(spec) == pytest.approx(1.5 * p.trial_seconds)


def test_the_plan_warms_up_over_a_twentieth_of_the_steps_and_writes_a_measured_bf16_choice():
    from platform.config import load_spec

    spec = load_spec("nafnet_fewshot", quick=True)
    m = Measurement((64, 128), (0.05, 0.2), 1.0, precision="bf16")
    p = plan(200, m, [64, 128], 4, 2, 1, 2000)
    timebox.apply(spec, p, {})
    assert spec["schedule"]["warmup_epochs"] == pytest.approx(0.05 * p.epochs, abs=1e-3)
    assert spec["train"]["precision"] == "bf16" and spec["train"]["channels_last"] is True
    assert "bf16" in p.describe()
    # A precision the user fixed stays; fp32 measured faster writes nothing.
    pinned = {"train": {"precision": "fp32"}}
    spec = load_spec("nafnet_fewshot", quick=True, overrides=pinned)
    timebox.apply(spec, p, pinned)
    assert spec["train"]["precision"] == "fp32"
    spec = load_spec("nafnet_fewshot", quick=True)
    timebox.apply(spec, plan(200, Measurement((64, 128), (0.05, 0.2), 1.0), [64, 128], 4, 2, 1, 2000), {})
    assert spec["train"]["precision"] == "auto"


def test_a_real_step_is_measured_on_the_common_trainer(one_thread):
    from platform.config import load_spec
    from platform.data.samples import resolve_data

    spec = load_spec("nafnet_fewshot", quick=True)
    spec.config["task"]["data"] = str(resolve_data(spec["task"]["data"]))
    configs = timebox.candidate_configs(spec)
    assert [c["model"]["size"] for c in configs] == ["local"]
    m = timebox.measure(spec, [64, 96], batch=2)
    assert 0 < m.step_s[0] and 0 < m.step_s[1] and m.val_s > 0 and m.precision == "auto"
    # A step at the smallest crop slower than the budget allows: the largest crop is not timed.
    m = timebox.measure(spec, [64, 96], batch=2, max_step_s=1e-6)
    assert m.crops == (64, 64) and m.step_s[0] == m.step_s[1]
    # bf16 is timed beside the default precision and kept only when clearly faster.
    m = timebox.measure(spec, [64, 96], batch=2, precisions=("auto", "bf16"))
    assert m.precision in ("auto", "bf16") and m.step_s[0] > 0


@pytest.mark.parametrize("repeat, replicas", [({"over": "none", "k": 3}, 1), ({"over": "fold", "k": 3}, 3),
                                              ({"over": "seed", "k": 2}, 2)])
def test_steps_are_timed_with_every_trainer_that_steps_at_once(monkeypatch, repeat, replicas):
    """A trial that repeats over folds or seeds runs k trainers in lockstep on its cores: the plan
    times a step with all of them stepping, or its steps would not fit the budget."""
    from platform.config import load_spec
    from platform.data.samples import resolve_data
    from platform.tasks import create

    spec = load_spec("nafnet_fewshot", quick=True, overrides={"search": {"repeat": repeat}})
    spec.config["task"]["data"] = str(resolve_data(spec["task"]["data"]))
    seen = {}

    def fake_measure(spec, crops, batch, max_step_s=None, precisions=("auto",), together=1):
        seen["together"] = together
        return Measurement((crops[0], crops[-1]), (0.05, 0.1), 0.5)

    monkeypatch.setattr(timebox, "measure", fake_measure)
    task = create(spec["task"]["name"], spec["task"])
    timebox.size_search(spec, task, 180, {}, started=time.monotonic())
    assert seen["together"] == timebox.concurrency(spec) * replicas
