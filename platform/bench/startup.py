"""``python -m platform.bench startup``: time from a trial being scheduled to its first training step.

Runs tiny one-epoch trials on a local Ray through the real trial function
(``trainables.fewshot.run_trial``, found by name through :mod:`platform.train.trainable`) in three ways: a single-worker trial in the Tune trial's own
process (the platform's default), a single-worker TorchTrainer trial, and a 2-worker DDP
TorchTrainer trial. Each mode runs ``--repeats`` trials one after another on the same Ray
instance; the first is "cold" (runtime environment unpacked, imports), the rest "warm". The
start of a trial is Tune's ``on_trial_start``; the first step is the wall-clock time the
trainer records just before its first optimisation step.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

from platform.errors import cli_main
from platform.search.presets import cpu_nafnet

log = logging.getLogger(__name__)

MODES = {
    "inprocess-1w": {"workers": 1, "mode": "inprocess"},
    "trainer-1w": {"workers": 1, "mode": "train"},
    "trainer-2w-ddp": {"workers": 2, "mode": "train"},
}


def _space():
    from platform.config import load_spec
    from platform.data.samples import resolve_data

    spec = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({
        "task": {"crop": 48, "crops_per_epoch": 8, "batch_size": 4, "val_max_side": 64},
        "model": {"size": "small", "options": {"width": 8}},
        "loss": {"l1": 1.0, "lpips": 0.0, "laplacian": 0.0, "ssim": 0.0},
        "optimizer": {"lr": 1e-3}, "train": {"epochs": 1}}))
    spec.config["task"]["data"] = str(resolve_data(spec.config["task"]["data"]))
    return spec


def measure(modes: list[str], repeats: int, storage: str) -> dict[str, list[float]]:
    from ray import tune

    from platform.search.space import param_space
    from platform.train.trainable import get_trainable

    run_trial = get_trainable("fewshot")

    spec = _space()
    starts: dict[str, float] = {}

    class Starts(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            starts[trial.trial_id] = time.time()

    out: dict[str, list[float]] = {}
    for mode in modes:
        res = dict(spec["resources"], **MODES[mode])
        trial_resources = {"cpu": 1} if res["mode"] == "inprocess" else {"cpu": 0.1}
        spec.config["resources"] = res
        out[mode] = []
        for i in range(repeats):
            tuner = tune.Tuner(
                tune.with_resources(run_trial, trial_resources),
                param_space=param_space(spec, {"storage_path": storage, "metric": "val_psnr", "mode": "max"}),
                tune_config=tune.TuneConfig(num_samples=1),
                run_config=tune.RunConfig(name=f"startup-{mode}-{i}", storage_path=storage, callbacks=[Starts()],
                                          verbose=0))
            result = tuner.fit()[0]
            if result.error:
                raise RuntimeError(f"{mode}: trial failed: {result.error}")
            trial_id = result.metrics["trial_id"]
            out[mode].append(result.metrics["first_step_at"] - starts[trial_id])
            log.info("%s run %d: %.2f s", mode, i + 1, out[mode][-1])
    return out


def parser():
    p = argparse.ArgumentParser(prog="python -m platform.bench startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num-cpus", type=int, default=8)
    return p


@cli_main
def main(argv=None) -> int:
    import tempfile

    import ray

    from platform.config import REPO_ROOT
    from platform.logs import quiet_third_party

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("ray").setLevel(logging.WARNING)
    quiet_third_party()
    args = parser().parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        from platform.errors import ConfigError

        raise ConfigError(f"--modes: unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}.")
    env = {"PLATFORM_DATA_DIR": os.environ.get("PLATFORM_DATA_DIR", str((REPO_ROOT / ".cache/data").resolve()))}
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"working_dir": str(REPO_ROOT), "excludes": [".git", ".venv", "mlruns", ".cache"],
                          "env_vars": env})
    try:
        with tempfile.TemporaryDirectory() as storage:
            out = measure(modes, args.repeats, storage)
    finally:
        ray.shutdown()
    print(f"{'mode':<16} {'cold s':>8} {'warm median s':>14} {'warm runs':>10}")
    for mode, values in out.items():
        warm = values[1:] or values
        print(f"{mode:<16} {values[0]:>8.2f} {statistics.median(warm):>14.2f} {len(values[1:]):>10}")
    return 0
