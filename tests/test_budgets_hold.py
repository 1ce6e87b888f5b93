"""Issue 15.3: budgets hold, and no setting can silently switch one off.

Non-finite and negative values are refused by validation (a NaN budget compared false with
every spend, so it never stopped anything); a spent budget stops a running trial at the end
of the epoch that crossed it, not at the next ASHA rung; a NaN validation metric never
becomes a trial's best (NaN compares false, so it would stay "best" for good). The real
search under a budget is ``tests/test_search_engine.py::test_dollar_budget_stops_new_trials_at_the_limit``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import yaml

from platform.config import check_name, load_spec
from platform.errors import ConfigError
from test_config import _write


@pytest.mark.parametrize("patch, needle", [
    ("search: {budget: {usd: .nan, price_per_cpu_hour: 1}}", "search.budget.usd` is nan"),
    ("search: {budget: {usd: .inf, price_per_cpu_hour: 1}}", "search.budget.usd` is inf"),
    ("search: {budget: {usd: -5, price_per_cpu_hour: 1}}", "must be > 0"),
    ("search: {budget: {time_s: .nan}}", "finite"),
    ("search: {budget: {price_per_gpu_hour: .inf}}", "finite"),
    ("optimizer: {grad_clip: -1.0}", "optimizer.grad_clip` is -1.0; it must be >= 0"),
    ("optimizer: {grad_clip: .nan}", "finite"),
    ("optimizer: {lr: {loguniform: [1.0e-4, .inf]}}", "finite"),
    ("optimizer: {weight_decay: .nan}", "finite"),
    ("loss: {l1: .nan}", "loss.l1"),
    ("loss: {l1: {uniform: [0, .inf]}}", "loss.l1"),
    ("resources: {gpus_per_worker: .inf}", "finite"),
    ("name: ../../etc", "the search name"),
])
def test_non_finite_and_negative_values_are_refused(tmp_path, patch, needle):
    with pytest.raises(ConfigError) as e:
        load_spec(_write(tmp_path, patch))
    text = str(e.value).replace("`name` is '../../etc'", "the search name")
    assert needle in text, text
    assert str(tmp_path / "space.yaml") in text


def test_grad_clip_zero_and_null_still_mean_no_clipping(tmp_path):
    assert load_spec(_write(tmp_path, "optimizer: {grad_clip: 0}"))["optimizer"]["grad_clip"] == 0
    assert load_spec(_write(tmp_path, "optimizer: {grad_clip: null}"))["optimizer"]["grad_clip"] is None


@pytest.mark.parametrize("name", ["../x", "a/b", "x y", "", "-lead", "a" * 101, "a..b", "café", "x;rm -rf"])
def test_search_names_are_restricted_to_safe_characters(tmp_path, name):
    with pytest.raises(ConfigError, match="letters, digits"):
        load_spec(_write(tmp_path, yaml.safe_dump({"name": name})))
    with pytest.raises(ConfigError, match="--experiment"):
        check_name(name, "--experiment")
    assert check_name("nafnet_fewshot-v2.1", "--experiment") == "nafnet_fewshot-v2.1"


def test_experiment_option_is_checked_too():
    from platform.search.driver import SearchOptions, prepare_spec

    with pytest.raises(ConfigError, match="--experiment"):
        prepare_spec(SearchOptions("nafnet_fewshot", quick=True, experiment="../../outside"))
    assert prepare_spec(SearchOptions("nafnet_fewshot", quick=True, experiment="ok-name")).name == "ok-name"


def test_spent_budget_stops_at_the_end_of_the_epoch_not_the_next_rung():
    from platform.search.budget import BudgetTracker, rung_milestones

    tracker = BudgetTracker("budget-test", usd=1.0, price_per_cpu_hour=3600.0,
                            milestones=rung_milestones(2, 2, 8))  # rungs at 2, 4, 8
    tracker.start("t1", gpus=0, cpus=1)
    assert not tracker.should_stop("t1", {"training_iteration": 1, "epoch": 1})  # nothing spent yet
    tracker.trials["t1"].since -= 2.0  # two CPU-seconds at $1/s: the budget is spent
    assert tracker.should_stop("t1", {"training_iteration": 3, "epoch": 3})  # epoch 3 is no rung
    assert tracker.stopped == {"t1": 3}


def test_nan_validation_metric_never_becomes_the_best(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from ray.tune.callback import CallbackList

    from platform.search.ledger import TrialLedger, finite
    from platform.tracking import MLflowSearchCallback

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("nan", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp).info.run_id
    ledger = TrialLedger("val_psnr", "max", epochs=3)
    cb = MLflowSearchCallback(client, exp, parent, tmp_path / "tb", ledger)
    callbacks = CallbackList([ledger, cb])
    trial = SimpleNamespace(trial_id="t1", config={"optimizer": {"lr": 1e-3}}, __str__=lambda self: "t1")
    for epoch, value in enumerate([math.nan, 21.0, math.inf, math.nan], start=1):
        callbacks.on_trial_result(iteration=0, trials=[], trial=trial, result={"epoch": epoch, "val_psnr": value})
    assert ledger.best == {"t1": 21.0} and ledger.best_overall() == 21.0
    history = client.get_metric_history(cb.run_ids["t1"], "val_psnr")
    assert [(m.step, m.value) for m in history] == [(2, 21.0)]
    assert finite(True) is None and finite(math.nan) is None and finite(3) == 3.0


def test_nan_checkpoint_is_never_kept_as_best(tmp_path):
    import json

    from platform.search.retention import list_checkpoints, select_deletions

    for i, v in enumerate([math.nan, 20.0, 25.0, 22.0]):
        d = tmp_path / f"checkpoint_{i:06d}"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"val_psnr": v}))
    ckpts = list_checkpoints(tmp_path, "val_psnr")
    assert ckpts[0].value is None
    kept = {c.index for c in ckpts} - {c.index for c in select_deletions(ckpts, 1, "max")}
    assert kept == {2, 3}  # the best (25) and the latest
