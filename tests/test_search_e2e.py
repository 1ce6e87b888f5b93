"""End to end: real Ray Tune searches (ASHA + Optuna) of the common trainer, MLflow, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from platform.search import SearchOptions, run_search
from platform.search.presets import cpu_nafnet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module's searches (each search would otherwise start and stop its own)."""
    from tests.netutil import keep_local_ray

    yield from keep_local_ray("nafnet_fewshot")

TINY = {
    "task": {"crop": 48, "crops_per_epoch": 32, "batch_size": 4, "val_max_side": 192},
    "train": {"image_every": 2},
}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_search_tracks_registers_and_guards_the_champion(tmp_cwd):
    import mlflow
    from mlflow.tracking import MlflowClient

    overrides = {
        **TINY,
        "optimizer": {"lr": {"loguniform": [1.0e-5, 3.0e-2]}},
        "train": {"epochs": 6, "image_every": 2},
        # One trial at a time: the order (and so which trials ASHA stops) is deterministic.
        "search": {"max_concurrent": 1, "scheduler": {"grace_period": 1, "reduction_factor": 3}},
        # The registry mechanics against the champion alone (the floors have their own test below).
        "promotion": {"floors": False},
    }
    out = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=4, overrides=cpu_nafnet(overrides)))
    assert len(out.rows) == 4
    stops = [r["stop"] for r in out.rows]
    assert any(s.startswith("early-stopped") for s in stops), stops
    assert any(s == "completed" for s in stops), stops
    assert out.promotion.promoted and out.promotion.version == "1"
    # One trial at a time: every trial ran in the first trial's worker process (search.reuse_actors).
    assert len({r["result"].metrics["pid"] for r in out.rows}) == 1, [r["result"].metrics["pid"] for r in out.rows]

    client = MlflowClient()
    exp = client.get_experiment_by_name("nafnet_fewshot")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == out.parent_run_id]
    assert len(children) == 4
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_psnr")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        for comp in ("train_loss", "train_loss/l1", "train_loss/laplacian", "train_loss/ssim"):
            assert client.get_metric_history(child.info.run_id, comp), comp
        assert "stop_reason" in child.data.tags
        assert child.data.params["optimizer.lr"]
    # No LPIPS trunk on this machine: said once on the parent run, and every trial ran with λ = 0.
    parent = client.get_run(out.parent_run_id)
    assert "alexnet-owt-7be5be79.pth" in parent.data.tags["lpips_unavailable"]
    assert {float(c.data.params["loss.lpips"]) for c in children} == {0.0}
    # TensorBoard has the same per-component scalars as MLflow, per trial.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_dirs = {f.parent for f in (tmp_cwd / "mlruns" / "tensorboard").rglob("events.out.tfevents.*")}
    assert len(event_dirs) == 4, event_dirs
    for folder in event_dirs:
        acc = EventAccumulator(str(folder))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {"train_loss", "train_loss/l1", "train_loss/laplacian", "train_loss/ssim", "val_psnr"} <= tags, tags
    best_child = client.get_run(out.best["run_id"])
    artifacts = [a.path for a in client.list_artifacts(best_child.info.run_id, "validation")]
    assert artifacts and all(p.endswith(".png") for p in artifacts)
    assert client.list_artifacts(best_child.info.run_id, "tensorboard")

    # The champion runs on a full-resolution frame at its own size and beats the identity.
    version = client.get_model_version_by_alias("nafnet_fewshot", "champion")
    assert str(version.version) == "1" and version.tags["promotion.decision"] == "promoted"
    model = mlflow.pyfunc.load_model("models:/nafnet_fewshot@champion")
    from platform.data.io import read_image
    from platform.data.samples import ensure_sample

    folder = ensure_sample("vfx_grade")
    x = read_image(folder / "input" / "09_camera.png")
    y = read_image(folder / "target" / "09_camera.png")
    pred = model.predict(x[None].astype(np.float32))
    assert pred.shape == (1, *x.shape)
    assert _psnr(pred[0], y) > _psnr(x, y) + 0.5

    # A worse search (learning rate ~0, one epoch) registers a version but keeps the champion.
    worse = {**TINY, "optimizer": {"lr": 1.0e-9}, "loss": {"lpips": 0.0, "laplacian": 0.0, "ssim": 0.0},
             "model": {"options": {"width": 8}}, "train": {"epochs": 1}, "promotion": {"floors": False}}
    out2 = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=1, overrides=cpu_nafnet(worse)))
    assert out2.promotion.version == "2" and not out2.promotion.promoted
    assert str(client.get_model_version_by_alias("nafnet_fewshot", "champion").version) == "1"
    v2 = client.get_model_version("nafnet_fewshot", "2")
    assert v2.tags["promotion.decision"] == "not promoted"
    assert float(v2.tags["promotion.champion_score"]) > float(v2.tags["promotion.score"])


def test_ddp_trial_through_torch_trainer(tmp_cwd):
    """A 2-worker DDP trial (gloo) as a Ray Train TorchTrainer job reports through Tune to MLflow."""
    from mlflow.tracking import MlflowClient

    overrides = {**TINY, "train": {"epochs": 2, "image_every": 1},
                 "optimizer": {"lr": 1.0e-3}, "model": {"options": {"width": 8}},
                 "resources": {"workers": 2, "mode": "train"}}
    out = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=1, overrides=cpu_nafnet(overrides),
                                   promote=False))
    row = out.rows[0]
    assert row["epochs"] == 2 and row["stop"] == "completed"
    client = MlflowClient()
    hist = client.get_metric_history(row["run_id"], "train_loss")
    assert [m.step for m in hist] == [1, 2] and all(np.isfinite(m.value) for m in hist)
    df = row["result"].metrics_dataframe
    assert df["checkpoint_path"].notna().all()  # Train's checkpoints, reported through Tune
    from platform.train.loop import load_checkpoint_state

    state = load_checkpoint_state(df["checkpoint_path"].iloc[-1])
    assert state["epoch"] == 2 and isinstance(state["model"]["intro.weight"], torch.Tensor)


def test_architecture_battle_quick_pits_every_architecture(tmp_cwd):
    """`architecture_battle --quick`: one trial per architecture family (points_to_evaluate),
    each with its own size and options from the conditional space, all through the one trainer."""
    from mlflow.tracking import MlflowClient

    out = run_search(SearchOptions("architecture_battle", quick=True, promote=False))
    archs = sorted(r["model.architecture"] for r in out.rows)
    assert archs == ["attention_unet", "convnext_unet", "mambair", "nafnet", "swinir", "unet"]
    assert all(r["stop"] == "completed" or r["stop"].startswith("early-stopped") for r in out.rows), out.rows
    assert all(np.isfinite(r["val_psnr"]) and r["val_psnr"] > 5 for r in out.rows), out.rows

    # Each child run trained the architecture (and only the options) its case prescribes.
    client = MlflowClient()
    exp = client.get_experiment_by_name("architecture_battle")
    children = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == out.parent_run_id]
    params = {c.data.params["model.architecture"]: c.data.params for c in children}
    assert params["swinir"]["model.size"] == "small" and params["swinir"]["model.options.embed_dim"] == "16"
    assert params["nafnet"]["model.options.width"] == "8" and "model.options.width" not in params["mambair"]
    assert params["convnext_unet"]["model.size"] == "nano"
    assert out.best["val_psnr"] == max(r["val_psnr"] for r in out.rows)


def test_quick_search_is_sized_to_its_budget_and_judged_against_the_floors(tmp_cwd):
    """The main job as shipped (`nafnet_fewshot --quick`), on a shorter budget: a measured time plan,
    floors on the parent run, and a registry decision that follows the floor rule."""
    from mlflow.tracking import MlflowClient

    out = run_search(SearchOptions("nafnet_fewshot", quick=True, time_budget=60))
    plan = out.timebox
    assert plan and plan["trials"] == len(out.rows) and plan["step_s"] > 0
    for row in out.rows:
        cfg = row["result"].config
        assert cfg["model"]["architecture"] == "lut3d" and cfg["task"]["crop"] == plan["crop"]
        assert cfg["train"]["epochs"] == plan["epochs"] and 1 <= row["epochs"] <= plan["epochs"]

    client = MlflowClient()
    parent = client.get_run(out.parent_run_id)
    assert set(out.floors) == {"identity", "poly_color", "lut3d"}
    for name, scores in out.floors.items():
        assert parent.data.metrics[f"floor.{name}.val_psnr"] == pytest.approx(scores["val_psnr"], abs=1e-4)
    best_floor = max(out.floors, key=lambda n: out.floors[n]["val_psnr"])
    assert parent.data.tags["floor.best"] == best_floor
    assert {"identity.png", "lut3d.png", "input.png", "target.png"} <= {
        a.path.split("/")[-1] for a in client.list_artifacts(out.parent_run_id, "floors")}

    v = client.get_model_version("nafnet_fewshot", out.promotion.version)
    assert v.tags["origin"] == "quick" and v.tags["promotion.floor"].startswith(f"{best_floor}=")
    beats = float(v.tags["promotion.score"]) > out.floors[best_floor]["val_psnr"] + 0.5
    assert out.promotion.promoted == beats, v.tags["promotion.reason"]
