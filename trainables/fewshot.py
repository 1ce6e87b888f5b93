"""The trial every search runs.

``run_trial`` is the Tune function trainable. A multi-worker trial builds a Ray Train
``TorchTrainer`` (DDP) whose workers run the common trainer and forward their reports to
Tune through ``TuneReportCallback``. A single-worker trial, by default, runs the very same
trainer in the Tune trial's own process: no second process to start, so a few-minute trial
does not pay Train's ~20 s worker-group start-up (``resources.mode: train`` forces the
TorchTrainer path).

On top of the trainer's own metrics a trial reports its cost (``cost_params_m``, and
``cost_latency_ms`` when the search's cost is latency) and, on CUDA, its peak GPU memory
(``gpu_mem_peak_bytes``). With ``search.repeat`` the trial runs k trainers in lockstep and
reports their mean (:mod:`trainables.repeats`). A CUDA out-of-memory error is re-raised as
:class:`TrialOutOfMemoryError` so the driver can tell it from other failures.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

from platform.train.loop import NonFiniteLossError, train_loop
from platform.train.session import RayTrainSession, TuneSession
from platform.train.trainable import register_trainable, uses_torch_trainer

log = logging.getLogger(__name__)


class TrialOutOfMemoryError(RuntimeError):
    """The trial ran out of GPU memory (its config is not retried with the same GPU share)."""


def train_loop_per_worker(config: dict) -> dict | None:
    """Ray Train worker entry point.

    A NaN/Inf loss is detected on all-reduced losses, so every rank stops at the same epoch.
    Raised, it would make Ray Train restart the worker group from the last checkpoint into the
    same NaN (``FailureConfig`` retries any worker error): the run ends normally instead and
    hands the error to the Tune trial as rank 0's return value, which re-raises it there.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        train_loop(config, RayTrainSession())
    except NonFiniteLossError as exc:
        log.error("%s", exc)
        return {"fatal": "nan-loss", "message": str(exc)}
    return None


# --------------------------------------------------------------------------- cost
def model_cost(checkpoint_dir: str | Path, latency: bool, size: int = 256, device=None) -> dict[str, float]:
    """Parameters (millions) of a checkpoint's model and, if asked, its inference latency (ms)."""
    import torch

    from platform.train.loop import build_model, load_checkpoint_state

    state = load_checkpoint_state(checkpoint_dir)
    model = build_model(state["config"])
    model.load_state_dict(state["model"])
    out = {"cost_params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if latency:
        device = device or torch.device("cpu")
        model = model.to(device).eval()
        channels = int((state["config"].get("_model_kwargs") or {}).get("in_channels", 3))
        x = torch.zeros(1, channels, size, size, device=device)
        times = []
        with torch.inference_mode():
            for i in range(6):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:  # the first call warms up
                    times.append((time.perf_counter() - t0) * 1000)
        out["cost_latency_ms"] = statistics.median(times)
    return out


class TrialSession(TuneSession):
    """The Tune session of an in-process trial, adding cost and GPU-memory metrics."""

    def __init__(self, run: dict):
        super().__init__()
        self.cost_kind = run.get("cost", "none")
        self.latency_size = int(run.get("latency_size", 256))
        self.cost: dict[str, float] | None = None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import torch

        metrics = dict(metrics)
        if self.cost is None and checkpoint_dir:
            try:
                self.cost = model_cost(checkpoint_dir, self.cost_kind == "latency", self.latency_size, self.device())
            except Exception as exc:  # cost is a convenience; the trial's quality still counts
                log.warning("could not measure the model's cost: %s", exc)
                self.cost = {}
        metrics.update(self.cost or {})
        if torch.cuda.is_available():
            metrics["gpu_mem_peak_bytes"] = float(torch.cuda.max_memory_allocated())
        super().report(metrics, checkpoint_dir)


# --------------------------------------------------------------------------- the trainable
@register_trainable("fewshot")
def run_trial(config: dict) -> None:
    """Ray Tune function trainable (the search driver finds it by name: ``get_trainable("fewshot")``)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    resources = config["resources"]
    run = config.get("_run", {})
    try:
        if not uses_torch_trainer(resources):
            session = TrialSession(run)
            repeat = run.get("repeat") or {}
            if int(repeat.get("k", 1)) > 1 and repeat.get("over", "none") != "none":
                from trainables.repeats import run_lockstep

                run_lockstep(config, int(repeat["k"]), repeat["over"], session)
            else:
                train_loop(config, session)
            return
        _run_torch_trainer(config, resources, run)
    except torch.cuda.OutOfMemoryError as exc:
        raise TrialOutOfMemoryError(f"CUDA out of memory: {str(exc).splitlines()[0]}") from exc


def _run_torch_trainer(config: dict, resources: dict, run: dict) -> None:
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    ctx = ray.tune.get_context()
    gpus = float(resources.get("gpus_per_worker", 0))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=int(resources["workers"]),
            use_gpu=gpus > 0,
            resources_per_worker={"CPU": float(resources.get("cpus_per_worker", 1)), **({"GPU": gpus} if gpus else {})},
        ),
        run_config=ray.train.RunConfig(
            # A stable name per trial: a restarted trial finds its own Train run and resumes it.
            name=f"{ctx.get_experiment_name()}-train-{ctx.get_trial_id()}",
            storage_path=run.get("storage_path"),
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=int(config["train"].get("max_failures", 1))),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=int(run.get("keep_checkpoints", 2)),
                checkpoint_score_attribute=run.get("metric", "val_psnr"),
                checkpoint_score_order=run.get("mode", "max"),
            ),
        ),
    )
    result = trainer.fit()
    fatal = getattr(result, "return_value", None)
    if isinstance(fatal, dict) and fatal.get("fatal") == "nan-loss":
        raise NonFiniteLossError(fatal["message"])
