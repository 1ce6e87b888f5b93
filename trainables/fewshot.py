"""The trial every search runs.

``run_trial`` is the Tune function trainable. A multi-worker trial builds a Ray Train
``TorchTrainer`` (DDP) whose workers run the common trainer and forward their reports to
Tune through ``TuneReportCallback``. A single-worker trial, by default, runs the very same
trainer in the Tune trial's own process: no second process to start, so a few-minute trial
does not pay Train's ~20 s worker-group start-up (``resources.mode: train`` forces the
TorchTrainer path).
"""

from __future__ import annotations

import logging

from platform.train.loop import train_loop
from platform.train.session import RayTrainSession, TuneSession

log = logging.getLogger(__name__)


def uses_torch_trainer(resources: dict) -> bool:
    mode = resources.get("mode", "auto")
    return mode == "train" or (mode == "auto" and int(resources.get("workers", 1)) > 1)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train_loop(config, RayTrainSession())


def run_trial(config: dict) -> None:
    """Ray Tune function trainable."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    resources = config["resources"]
    if not uses_torch_trainer(resources):
        train_loop(config, TuneSession())
        return

    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    ctx = ray.tune.get_context()
    run = config.get("_run", {})
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
    trainer.fit()
