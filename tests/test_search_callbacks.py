"""The driver's Tune callbacks, driven through Tune's own ``CallbackList`` in the search's order.

The trial ledger records what each trial did and the bookkeeping callbacks (budget, packing,
state file, retention) act on it; each is checked against a hand computation. No Ray cluster:
Tune calls these hooks in the driver process, and so does the test.
"""

from __future__ import annotations

import json
import math
import pickle
from types import SimpleNamespace

import pytest
from ray.tune.callback import CallbackList

from platform.search.bookkeeping import (
    BudgetCallback,
    PackingCallback,
    RetentionCallback,
    StateFileCallback,
)
from platform.search.budget import BudgetTracker, rung_milestones
from platform.search.ledger import TrialLedger


def _trial(tid: str, status: str = "RUNNING", **kw):
    return SimpleNamespace(trial_id=tid, status=status, config=kw.pop("config", {}), **kw)


def test_stop_reasons_name_completion_budget_and_rung():
    key = "cb-reasons"
    budget = BudgetTracker(key, usd=1.0, price_per_cpu_hour=3600.0)
    ledger = TrialLedger("val_psnr", "max", epochs=8, milestones=rung_milestones(2, 2, 8), budget_key=key)
    cbs = CallbackList([ledger, BudgetCallback(key)])
    done, early, spent = _trial("done"), _trial("early"), _trial("spent")
    for t, epochs in ((done, 8), (early, 5), (spent, 3)):
        cbs.on_trial_start(iteration=0, trials=[], trial=t)
        for e in range(1, epochs + 1):
            cbs.on_trial_result(iteration=e, trials=[], trial=t, result={"epoch": e, "val_psnr": 20.0 + e})
    budget.stopped["spent"] = 3
    budget.exhausted_reason = "dollar budget spent ($1.0000 of $1)"
    for t in (done, early, spent):
        cbs.on_trial_complete(iteration=9, trials=[], trial=t)
    # rungs at 2, 4, 8: epoch 5 passed two of them, epoch 3 one
    assert ledger.stop_reasons == {
        "done": "completed",
        "early": "early-stopped by scheduler at epoch 5 (rung 2)",
        "spent": "stopped by budget at epoch 3 (rung 1): dollar budget spent ($1.0000 of $1)"}
    assert ledger.best == {"done": 28.0, "early": 25.0, "spent": 23.0} and ledger.best_overall() == 28.0
    trials = [_trial("done", "TERMINATED"), _trial("early", "TERMINATED"), _trial("x", "ERROR"), _trial("y")]
    assert ledger.counts(trials) == {"pending": 0, "running": 1, "finished": 1, "stopped": 1, "failed": 1}


def test_budget_clock_runs_on_each_step_and_travels_in_tune_state():
    key = "cb-clock"
    budget = BudgetTracker(key, price_per_cpu_hour=3600.0)  # $1 per CPU-second
    cbs = CallbackList([TrialLedger("val_psnr", "max", epochs=2, budget_key=key), BudgetCallback(key)])
    trial = _trial("t1")  # no placement group: the space's resources (1 CPU)
    cbs.on_trial_start(iteration=0, trials=[trial], trial=trial)
    budget.trials["t1"].since -= 2.0  # two seconds ago
    cbs.on_step_end(iteration=1, trials=[trial])  # Tune's per-step hook accrues the spend
    assert budget.trials["t1"].usd == pytest.approx(2.0, abs=0.05)
    cbs.on_trial_complete(iteration=2, trials=[trial], trial=trial)
    assert budget.trials["t1"].since is None  # its clock stopped with it
    state = cbs.get_state()
    fresh = BudgetTracker(key)  # a resumed driver: a new tracker under the same key
    cbs.set_state(pickle.loads(pickle.dumps(state)))
    assert fresh.trials["t1"].usd == pytest.approx(2.0, abs=0.05) and fresh.trials["t1"].since is None


def test_an_out_of_memory_trial_gives_its_config_a_whole_gpu(tmp_path):
    from platform.search.packing import TrialResources

    key = "cb-oom"
    packer = TrialResources(key, {"gpus_per_worker": 0.25, "gpu_memory_gb": 16}, {})
    config = {"model": {"architecture": "nafnet"}, "task": {"crop": 64, "batch_size": 4}}
    err = tmp_path / "error.txt"
    err.write_text("Traceback\ntrainables.fewshot.TrialOutOfMemoryError: CUDA out of memory. Tried 2 GiB\n")
    ledger = TrialLedger("val_psnr", "max", epochs=2)
    cbs = CallbackList([ledger, PackingCallback(key, ledger)])
    trial = _trial("t1", config=config, error_file=str(err))
    cbs.on_trial_error(iteration=1, trials=[trial], trial=trial)
    assert ledger.stop_reasons["t1"].startswith("failed (cuda-oom)") and ledger.status["t1"] == "ERROR"
    assert packer.gpu_fraction(config) == 1.0


def test_state_file_shows_each_trial_as_the_ledger_and_tracking_know_it(tmp_path):
    ledger = TrialLedger("val_psnr", "max", epochs=2)
    run_ids = {"a": "run-a", "b": "run-b"}  # the tracking callback's live mapping
    state_file = StateFileCallback(str(tmp_path), "s", "parent", ledger, run_ids)
    cbs = CallbackList([ledger, state_file])
    a, b = _trial("a"), _trial("b")
    for t in (a, b):
        cbs.on_trial_start(iteration=0, trials=[], trial=t)
    cbs.on_trial_result(iteration=1, trials=[], trial=a, result={"epoch": 1, "val_psnr": math.nan})
    cbs.on_trial_result(iteration=2, trials=[], trial=a, result={"epoch": 2, "val_psnr": 24.5})
    cbs.on_trial_complete(iteration=2, trials=[], trial=a)
    state = json.loads((tmp_path / "search_state.json").read_text())
    assert state["finished"] == 1 and state["metric"] == "val_psnr" and state["parent_run_id"] == "parent"
    assert state["trials"] == {
        "a": {"status": "TERMINATED", "stop": "completed", "epochs": 2, "best": 24.5, "run_id": "run-a"},
        "b": {"status": "RUNNING", "stop": None, "epochs": 0, "best": None, "run_id": "run-b"}}
    copy = pickle.loads(pickle.dumps([ledger, state_file]))  # as Tune saves them in tuner.pkl
    assert copy[1].ledger is copy[0] and copy[1]._staging is None


def test_retention_keeps_the_best_and_the_latest_checkpoint(tmp_path):
    for i, v in enumerate([20.0, 26.0, 22.0, 21.0]):
        d = tmp_path / f"checkpoint_{i:06d}"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"val_psnr": v}))
    cbs = CallbackList([RetentionCallback("val_psnr", "max", keep_best=1)])
    cbs.on_checkpoint(iteration=4, trials=[], trial=_trial("t"),
                      checkpoint=SimpleNamespace(path=str(tmp_path / "checkpoint_000003"), filesystem=None))
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*")) == ["checkpoint_000001", "checkpoint_000003"]


def test_a_search_whose_tuner_fails_to_start_ends_its_parent_run_failed(tmp_cwd, monkeypatch):
    """Ray or the tuner failing to start (after the parent run exists) ends the run FAILED, not RUNNING."""
    from mlflow.tracking import MlflowClient

    from platform.search import driver
    from platform.search.presets import cpu_nafnet
    from platform.tracking import tracking_uri

    def broken(*args, **kwargs):
        raise RuntimeError("tuner broke")

    monkeypatch.setattr(driver, "start_ray", lambda *a, **k: None)
    monkeypatch.setattr(driver, "build_tuner", broken)
    with pytest.raises(RuntimeError, match="tuner broke"):
        driver.run_search(driver.SearchOptions("nafnet_fewshot", quick=True, max_trials=1, overrides=cpu_nafnet({})))
    client = MlflowClient(tracking_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]
