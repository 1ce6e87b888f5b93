"""The search driver: Ray Tune (ASHA + Optuna TPE) over trials of the common trainer.

``run_search(options)`` validates the space and the data before anything starts, connects to
(or starts) Ray with the repository as ``working_dir``, runs the Tune search with MLflow and
TensorBoard tracking from the driver, prints a summary of the trials and registers the best
model, moving the ``champion`` alias only when it beats the current champion.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platform.config import REPO_ROOT, SearchSpec, is_searchable, load_spec
from platform.errors import ConfigError

log = logging.getLogger("platform.search")


@dataclass
class SearchOptions:
    space: str
    quick: bool = False
    data: str | None = None
    max_trials: int | None = None
    experiment: str | None = None
    address: str | None = None
    storage: str | None = None
    promote: bool = True
    num_cpus: int | None = None
    overrides: dict = field(default_factory=dict)


@dataclass
class SearchOutcome:
    spec: SearchSpec
    parent_run_id: str
    rows: list[dict]
    best: dict | None
    promotion: Any = None
    lpips_unavailable: str | None = None
    storage_path: str = ""


# --------------------------------------------------------------------------- preparation
def prepare_spec(opts: SearchOptions) -> SearchSpec:
    overrides: dict = dict(opts.overrides)
    if opts.data:
        overrides.setdefault("task", {})["data"] = opts.data
    if opts.max_trials:
        overrides.setdefault("search", {})["num_trials"] = opts.max_trials
    spec = load_spec(opts.space, quick=opts.quick, overrides=overrides)
    if opts.experiment:
        spec.config["name"] = opts.experiment
    return spec


def preflight(spec: SearchSpec):
    """Validate the data in the driver (fast, clear errors before Ray starts) and pin paths."""
    from platform import tasks
    from platform.data.samples import resolve_data

    folder = resolve_data(spec["task"]["data"])
    spec.config["task"]["data"] = str(folder)  # workers get an absolute path
    task_cfg = dict(spec["task"])
    crop = task_cfg["crop"]
    if is_searchable(crop):  # the largest crop the space can ask for must fit every image
        kind, args = next(iter(crop.items()))
        task_cfg["crop"] = int(max(args))
    task = tasks.create(spec["task"]["name"], task_cfg, seed=spec["train"]["seed"])
    task.train_dataset()  # raises DataError for an image smaller than the crop
    return task


def check_lpips(spec: SearchSpec) -> str | None:
    """If LPIPS is asked for but its trunk weights cannot be had, say so once and set λ to 0."""
    loss = spec["loss"]
    if "lpips" not in loss:
        return None
    from platform import losses
    from platform.pretrained import WeightsUnavailableError

    options = loss["lpips"] if isinstance(loss["lpips"], dict) and "weight" in loss["lpips"] else {}
    spec_one = {"lpips": {**options, "weight": 1.0}} if options else {"lpips": 1.0}
    try:
        losses.create(spec_one)
    except WeightsUnavailableError as exc:
        spec.config["loss"]["lpips"] = 0.0
        log.warning("LPIPS is unavailable, so this search runs with λ(lpips) = 0. %s", exc)
        return str(exc)
    return None


def storage_path(opts: SearchOptions) -> str:
    if opts.storage:
        s = opts.storage
        return s if "://" in s else str(Path(s).expanduser().resolve())
    return str((Path.cwd() / "mlruns" / "ray_results").resolve())


def init_ray(opts: SearchOptions, env_vars: dict[str, str]) -> None:
    import ray

    runtime_env = {
        # Workers see the `platform` package only through the working_dir (it goes first on
        # PYTHONPATH there); the upload honours .gitignore, so .venv and mlruns stay home.
        "working_dir": str(REPO_ROOT),
        "excludes": [".git", ".venv", "mlruns", ".cache", "**/__pycache__"],
        "env_vars": env_vars,
    }
    address = opts.address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        # On small machines give Ray more logical CPUs than cores, or Train worker groups time out.
        num_cpus = opts.num_cpus or max(8, os.cpu_count() or 1)
        log.info("starting a local Ray with %d logical CPUs", num_cpus)
        ray.init(num_cpus=num_cpus, runtime_env=runtime_env, log_to_driver=False, include_dashboard=False)


def check_shared_storage(opts: SearchOptions, storage: str) -> None:
    """Trials on several nodes need storage every node can reach (S3, GCS, NFS...)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1 or "://" in storage:
        return
    if opts.storage is None:
        raise ConfigError(
            f"the Ray cluster has {len(nodes)} nodes but results would go to the local folder {storage}, which "
            "the other nodes cannot reach. Give --storage s3://BUCKET/PREFIX (or a path on a filesystem that "
            "every node mounts, e.g. --storage /mnt/shared/ray_results).")
    log.warning("storage %s is a local path on a %d-node cluster: it must be a filesystem every node mounts",
                storage, len(nodes))


# --------------------------------------------------------------------------- progress
class ProgressReporter:
    """Logs trials running/finished, the best so far and an ETA as results arrive."""

    def __init__(self, total: int, metric: str, mode: str, concurrency: int, min_interval_s: float = 10.0):
        from ray.tune import Callback

        self.total, self.metric, self.mode, self.concurrency = total, metric, mode, concurrency
        self.start = time.monotonic()
        self.finished: list[float] = []
        self.best: tuple[float, str] | None = None
        self.min_interval = min_interval_s
        self._last = 0.0
        outer = self

        class _CB(Callback):
            def on_trial_result(self, iteration, trials, trial, result, **info):
                outer.result(trials, trial, result)

            def on_trial_complete(self, iteration, trials, trial, **info):
                outer.done(trials, trial, "finished")

            def on_trial_error(self, iteration, trials, trial, **info):
                outer.done(trials, trial, "failed")

        self.callback = _CB()

    def result(self, trials, trial, result):
        v = result.get(self.metric)
        if isinstance(v, (int, float)):
            if self.best is None or (v > self.best[0] if self.mode == "max" else v < self.best[0]):
                self.best = (float(v), trial.trial_id)
        now = time.monotonic()
        if now - self._last >= self.min_interval:
            self._last = now
            self.log(trials, f"trial {trial.trial_id} epoch {result.get('epoch')}: {self.metric}={v:.3f}"
                     if isinstance(v, (int, float)) else "")

    def done(self, trials, trial, how: str):
        self.finished.append(time.monotonic() - self.start)
        self.log(trials, f"trial {trial.trial_id} {how}")

    def log(self, trials, event: str = ""):
        running = sum(1 for t in trials if t.status == "RUNNING")
        done = len(self.finished)
        elapsed = time.monotonic() - self.start
        eta = ""
        if done:
            per_trial = elapsed / done
            eta = f", ETA ~{_fmt(per_trial * (self.total - done))}"
        best = f", best {self.metric} {self.best[0]:.3f} (trial {self.best[1]})" if self.best else ""
        log.info("[%s] trials: %d running, %d/%d finished%s, elapsed %s%s", event or "progress", running, done,
                 self.total, best, _fmt(elapsed), eta)


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


# --------------------------------------------------------------------------- summary
def summarise(results, callback, spec: SearchSpec) -> list[dict]:
    from platform.search.space import searched_keys

    metric, mode = spec["search"]["metric"], spec["search"]["mode"]
    keys = []
    for section in ("model", "loss", "optimizer", "schedule", "task", "train"):
        keys += [f"{section}.{k}" for k in searched_keys(spec[section])]
    rows = []
    for res in results:
        cfg = res.config or {}
        trial_id = (res.metrics or {}).get("trial_id") or Path(res.path).name
        df = res.metrics_dataframe
        best_val = best_ssim = None
        epochs = 0
        if df is not None and len(df) and metric in df:
            col = df[metric].dropna()
            if len(col):
                idx = col.idxmax() if mode == "max" else col.idxmin()
                best_val = float(df.loc[idx, metric])
                best_ssim = float(df.loc[idx, "val_ssim"]) if "val_ssim" in df else None
            epochs = int(df["epoch"].max()) if "epoch" in df else len(df)
        reason = callback.stop_reasons.get(trial_id)
        if reason is None:
            reason = f"error: {res.error}" if res.error else "unknown"
        row = {"trial": trial_id, "epochs": epochs, "stop": reason, metric: best_val, "val_ssim": best_ssim,
               "run_id": callback.run_ids.get(trial_id), "result": res}
        for k in keys:
            node: Any = cfg
            for part in k.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            row[k] = node
        rows.append(row)
    rows.sort(key=lambda r: (r[metric] is None, -(r[metric] or 0) if mode == "max" else (r[metric] or 0)))
    return rows


def format_table(rows: list[dict], metric: str) -> str:
    if not rows:
        return "(no trials)"
    cols = ["trial"] + [k for k in rows[0] if "." in k] + ["epochs", metric, "val_ssim", "stop"]

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    table = [[c for c in cols]] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def best_checkpoint(row: dict, metric: str, mode: str) -> str | None:
    """Path of the best checkpoint of a trial (Tune's own, or the Train run's reported path)."""
    res = row["result"]
    best = None
    for ckpt, metrics in (res.best_checkpoints or []):
        v = metrics.get(metric)
        if v is not None and (best is None or (v > best[0] if mode == "max" else v < best[0])):
            best = (v, ckpt.path)
    df = res.metrics_dataframe
    if df is not None and "checkpoint_path" in df and metric in df:
        sub = df.dropna(subset=["checkpoint_path", metric])
        for _, r in sub.iterrows():
            v, p = float(r[metric]), r["checkpoint_path"]
            if Path(p).is_dir() and (best is None or (v > best[0] if mode == "max" else v < best[0])):
                best = (v, p)
    return best[1] if best else None


# --------------------------------------------------------------------------- main entry
def run_search(opts: SearchOptions) -> SearchOutcome:
    from platform.logs import quiet_third_party

    quiet_third_party()
    spec = prepare_spec(opts)  # validate everything cheap before importing the heavy stack
    task = preflight(spec)
    lpips_reason = check_lpips(spec)

    import mlflow
    import ray
    from ray import tune

    from platform import pyfunc, tracking
    from platform.champion import register_and_maybe_promote
    from platform.search.space import make_scheduler, make_searcher, param_space
    s = spec["search"]
    metric, mode = s["metric"], s["mode"]
    storage = storage_path(opts)

    client, exp_id = tracking.setup_mlflow(spec.name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_name = f"{spec.name}-{stamp}"
    parent = client.create_run(exp_id, run_name=run_name, tags={"search_space": str(spec.source),
                                                                   "quick": str(opts.quick)})
    parent_id = parent.info.run_id
    client.log_text(parent_id, spec.source.read_text(), "search_space.yaml")
    client.log_dict(parent_id, spec.config, "resolved_spec.json")
    for k, v in {"metric": metric, "mode": mode, "num_trials": s["num_trials"], "scheduler": s["scheduler"]["name"],
                 "searcher": s["searcher"]["name"], "epochs": spec["train"]["epochs"], "seed": spec["train"]["seed"],
                 "data": spec["task"]["data"]}.items():
        client.log_param(parent_id, k, str(v))
    if lpips_reason:
        client.set_tag(parent_id, "lpips_unavailable", lpips_reason[:5000])
    tb_dir = Path("mlruns") / "tensorboard" / run_name

    env_vars = {k: os.environ[k] for k in ("PLATFORM_PRETRAINED_DIR", "PLATFORM_DATA_DIR") if k in os.environ}
    env_vars.setdefault("PLATFORM_DATA_DIR", str(Path(".cache/data").resolve()))
    env_vars.setdefault("PLATFORM_PRETRAINED_DIR", str(Path(".cache/pretrained").resolve()))
    init_ray(opts, env_vars)
    check_shared_storage(opts, storage)

    from trainables.fewshot import run_trial, uses_torch_trainer

    res = spec["resources"]
    if uses_torch_trainer(res):
        trial_resources = {"cpu": 0.1}  # the trial only drives a TorchTrainer, whose workers ask for their own
    else:
        trial_resources = {"cpu": float(res["cpus_per_worker"]), "gpu": float(res["gpus_per_worker"])}
    run_info = {"storage_path": storage, "metric": metric, "mode": mode, "keep_checkpoints": 2,
                "search": spec.name, "parent_run_id": parent_id}
    callback = tracking.MLflowSearchCallback(client, exp_id, parent_id, tb_dir, spec["train"]["epochs"], metric, mode)
    progress = ProgressReporter(s["num_trials"], metric, mode, s["max_concurrent"])
    tuner = tune.Tuner(
        tune.with_resources(run_trial, trial_resources),
        param_space=param_space(spec, run_info),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=s["num_trials"],
                                    search_alg=make_searcher(spec), scheduler=make_scheduler(spec),
                                    max_concurrent_trials=s["max_concurrent"]),
        run_config=tune.RunConfig(
            name=run_name, storage_path=storage, callbacks=[callback, progress.callback], verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=metric,
                                                    checkpoint_score_order=mode)),
    )
    log.info("search %r: %d trials of up to %d epochs, %s + %s, storage %s, MLflow %s (parent run %s)",
             spec.name, s["num_trials"], spec["train"]["epochs"], s["scheduler"]["name"], s["searcher"]["name"],
             storage, tracking.tracking_uri(), parent_id)
    status = "FAILED"
    try:
        results = tuner.fit()
        rows = summarise(results, callback, spec)
        log.info("trials of %s:\n%s", spec.name, format_table(rows, metric))
        outcome = SearchOutcome(spec, parent_id, rows, None, lpips_unavailable=lpips_reason, storage_path=storage)
        ok = [r for r in rows if r[metric] is not None]
        if not ok:
            raise ConfigError(f"no trial of {spec.name} produced {metric}; see the trial errors above and the "
                              f"MLflow runs under parent run {parent_id}.")
        outcome.best = best = ok[0]
        client.set_tag(parent_id, "best_trial", best["trial"])
        client.log_metric(parent_id, f"best_{metric}", best[metric])
        ckpt = best_checkpoint(best, metric, mode)
        if ckpt is None:
            raise RuntimeError(f"best trial {best['trial']} left no checkpoint")
        model_uri = pyfunc.log_model(ckpt, best["run_id"] or parent_id, sample=task.example_input())
        if opts.promote:
            outcome.promotion = register_and_maybe_promote(client, spec.name, model_uri, best["run_id"] or parent_id,
                                                           task, metric, mode)
            log.info("%s", outcome.promotion.message())
            client.set_tag(parent_id, "promotion", outcome.promotion.message())
        status = "FINISHED"
        return outcome
    finally:
        client.set_terminated(parent_id, status=status)
        mlflow.end_run()
        if not opts.address and ray.is_initialized() and not os.environ.get("PLATFORM_KEEP_RAY"):
            ray.shutdown()
