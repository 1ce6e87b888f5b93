"""The search driver: Ray Tune (ASHA + Optuna TPE by default) over trials of the common trainer.

``run_search(options)`` validates the space and the data before anything starts, connects to
(or starts) Ray with the repository as ``working_dir``, runs the Tune search with MLflow and
TensorBoard tracking from the driver, prints a summary of the trials (with the spend and, for
a multi-objective search, the Pareto front), registers the best model (moving the
``champion`` alias only when it beats the current champion), prunes checkpoints and writes
the HTML report. ``SearchOptions(resume=True)`` (``--resume``) continues a crashed search.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platform.config import SearchSpec, check_name, is_search_node, load_spec, possible_values
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
    resume: bool | str = False  # True: the newest experiment of this space; a str: that experiment folder
    num_gpus: int | None = None  # GPUs of a local Ray (Ray accepts a count the machine does not have)
    time_budget: float | None = None  # seconds for the whole search (--time-budget): trials sized to it
    trainable: str = "fewshot"  # the Ray trainable every trial runs, by name (platform.train.trainable)
    warm_start: list[str] = field(default_factory=list)  # earlier searches to learn from (--warm-start)
    init_from: str | None = None  # models:/NAME@ALIAS whose weights start matching trials (--init-from)


@dataclass
class SearchOutcome:
    spec: SearchSpec
    parent_run_id: str
    rows: list[dict]
    best: dict | None
    promotion: Any = None
    lpips_unavailable: str | None = None
    storage_path: str = ""
    experiment_path: str = ""
    spend: dict = field(default_factory=dict)
    pareto: list[dict] = field(default_factory=list)
    report_path: str | None = None
    floors: dict = field(default_factory=dict)  # {floor: {metric: value}} on the trials' footing
    timebox: dict | None = None  # the plan of a time-boxed search


# --------------------------------------------------------------------------- preparation
def user_overrides(opts: SearchOptions) -> dict:
    """Everything the user fixed on the command line (a time budget sizes only the rest)."""
    overrides: dict = {k: (dict(v) if isinstance(v, dict) else v) for k, v in opts.overrides.items()}
    if opts.data:
        overrides.setdefault("task", {})["data"] = opts.data
    if opts.max_trials:
        overrides.setdefault("search", {})["num_trials"] = opts.max_trials
    if opts.warm_start:
        overrides.setdefault("warm_start", {})["searches"] = list(opts.warm_start)
    if opts.init_from:
        overrides.setdefault("warm_start", {})["weights"] = opts.init_from
    return overrides


def prepare_spec(opts: SearchOptions) -> SearchSpec:
    overrides = user_overrides(opts)
    if opts.time_budget is not None:
        overrides = {**overrides, "search": {**overrides.get("search", {}),
                                             "timebox": {**overrides.get("search", {}).get("timebox", {}),
                                                         "seconds": float(opts.time_budget)}}}
    spec = load_spec(opts.space, quick=opts.quick, overrides=overrides)
    if opts.experiment:
        spec.config["name"] = check_name(opts.experiment, "--experiment")
    return spec


def preflight(spec: SearchSpec):
    """Validate the data in the driver (fast, clear errors before Ray starts) and pin paths."""
    from platform import tasks
    from platform.data.samples import resolve_data

    folder = resolve_data(spec["task"]["data"])
    spec.config["task"]["data"] = str(folder)  # workers get an absolute path
    task_cfg = dict(spec["task"])
    crop = task_cfg["crop"]
    if is_search_node(crop):  # the largest crop the space can ask for must fit every image
        task_cfg["crop"] = int(max(v for v in possible_values(crop) if isinstance(v, (int, float))))
    task = tasks.create(spec["task"]["name"], task_cfg, seed=spec["train"]["seed"])
    task.train_dataset()  # raises DataError for an image smaller than the crop
    task.check_sequences()  # validation videos: readable, input and target of the same size
    return task


def check_lpips(spec: SearchSpec) -> str | None:
    """If LPIPS is asked for but its trunk weights cannot be had, say so once and set λ to 0."""
    loss = spec["loss"]
    if "lpips" not in loss or (isinstance(loss["lpips"], (int, float)) and loss["lpips"] == 0):
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
    """--storage, else $PLATFORM_STORAGE_PATH (set on every node of clusters/aws.yaml), else ./mlruns/ray_results."""
    s = opts.storage or os.environ.get("PLATFORM_STORAGE_PATH")
    if s:
        return s if "://" in s else str(Path(s).expanduser().resolve())
    return str((Path.cwd() / "mlruns" / "ray_results").resolve())


def check_pretrained(spec: SearchSpec) -> None:
    """The weights a fine-tuning search starts from must be reachable before any trial starts
    (a missing key is a WeightsUnavailableError naming the key, the store and what was tried);
    this also puts them in this node's cache."""
    key = spec["pretrained"]["key"]
    if key:
        from platform.pretrained import resolve

        log.info("pretrained weights %s: %s", key, resolve(key))


def check_combination(spec: SearchSpec, model) -> None:
    """Settings that cannot work together, said before anything starts."""
    from platform.train.trainable import uses_torch_trainer

    s = spec["search"]
    sched, sea = s["scheduler"]["name"], s["searcher"]["name"]
    if s["repeat"]["over"] != "none" and s["repeat"]["k"] > 1 and uses_torch_trainer(spec["resources"]):
        raise ConfigError(f"{spec.source}: search.repeat runs k trainers inside one single-worker trial; it cannot "
                          "be combined with resources.workers > 1 (or mode: train). Drop one of the two.")
    if s["repeat"]["over"] != "none" and s["repeat"]["k"] < 2:
        raise ConfigError(f"{spec.source}: search.repeat.k is {s['repeat']['k']}; give k >= 2 to average over "
                          f"{s['repeat']['over']}s (or over: none).")
    if s["repeat"]["over"] == "fold" and is_search_node(spec["task"].get("fold")):
        raise ConfigError(f"{spec.source}: task.fold is searched and search.repeat averages over folds; use one.")
    if sched in ("pbt", "bohb") and model.conditional:
        raise ConfigError(f"{spec.source}: scheduler {sched} cannot search a conditional space (switch/optional); "
                          "use scheduler asha or hyperband with the optuna or random searcher.")
    ddp = uses_torch_trainer(spec["resources"])
    if sched == "pbt" and ddp:
        raise ConfigError(f"{spec.source}: scheduler pbt exploits other trials' checkpoints, which TorchTrainer trials "
                          "(resources.workers > 1 or mode: train) keep inside Ray Train; use asha or hyperband for "
                          "DDP trials, or PBT with single-worker trials.")
    if s["cost"]["metric"] != "none" and ddp:
        raise ConfigError(f"{spec.source}: search.cost.metric {s['cost']['metric']} is measured by single-worker "
                          "trials; with resources.workers > 1 (or mode: train) set it to none.")
    budget = s["budget"]
    if budget["usd"] is not None and not (budget["price_per_gpu_hour"] or budget["price_per_cpu_hour"]):
        raise ConfigError(f"{spec.source}: search.budget.usd is {budget['usd']} but price_per_gpu_hour and "
                          "price_per_cpu_hour are both 0, so nothing would ever be spent; give the prices of your "
                          "instances (e.g. price_per_gpu_hour: 1.006 for a g5.xlarge).")
    if sched == "bohb":
        from platform.search.space import require_bohb_packages

        require_bohb_packages(spec.source)
    if sched == "bohb" and sea != "optuna":
        log.warning("scheduler bohb brings its own searcher (TuneBOHB); search.searcher %r is ignored", sea)
    if s["cost"]["optimize"] and s["cost"]["metric"] == "none":
        raise ConfigError(f"{spec.source}: search.cost.optimize is true but search.cost.metric is none; give "
                          "params or latency.")
    if s["cost"]["optimize"] and sched in ("pbt", "bohb"):
        raise ConfigError(f"{spec.source}: a multi-objective search (search.cost.optimize) needs the optuna, "
                          f"random or grid searcher, not scheduler {sched}.")
    if spec["warm_start"]["searches"] and sched in ("pbt", "bohb"):
        raise ConfigError(f"{spec.source}: warm_start.searches (--warm-start) hands earlier trials to Optuna's "
                          f"sampler, which scheduler {sched} does not use; use scheduler asha or hyperband (or keep "
                          "only --init-from).")
    if sea == "grid":
        model.grid(s["searcher"]["grid_points"])  # raises for conditional spaces
    from platform.search.conditional import expand_points

    expand_points(s["points_to_evaluate"], model, f"{spec.source}: search.points_to_evaluate")


def trial_dirname(trial) -> str:
    """Trial folders named by trial id (summaries and reports find trials without metrics by it)."""
    return f"trial_{trial.trial_id}"


def job_runtime_env() -> dict:
    """The runtime env of the Ray job this driver runs in (``ray job submit``), else {}."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # set by Ray's job supervisor
    if not raw:
        return {}
    try:
        return dict(json.loads(raw).get("runtime_env") or {})
    except (ValueError, AttributeError):
        return {}


def without_job_fields(runtime_env: dict, job_env: dict) -> dict:
    """Ray refuses a driver runtime env that sets a field (or env var) the job already sets: the
    job's choice wins (``ray job submit --working-dir .`` already ships the project)."""
    if not job_env:
        return runtime_env
    out = {k: v for k, v in runtime_env.items() if k not in job_env and k != "env_vars"}
    if "working_dir" in job_env:
        out.pop("excludes", None)  # excludes belong to the working_dir the job uploaded
    job_vars = job_env.get("env_vars") or {}
    env_vars = {k: v for k, v in (runtime_env.get("env_vars") or {}).items() if k not in job_vars}
    if env_vars:
        out["env_vars"] = env_vars
    return out


def local_num_cpus(opts: SearchOptions) -> int:
    # On small machines give Ray more logical CPUs than cores, or Train worker groups time out.
    return opts.num_cpus or max(8, os.cpu_count() or 1)


def check_local_ray_fits(spec, opts: SearchOptions) -> None:
    """Before the floors: a local Ray that this driver will start must be able to run a trial."""
    import ray

    if opts.address or os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        return  # checked against the real cluster once connected
    from platform.search.preflight import check_local_fits

    check_local_fits(spec, local_num_cpus(opts), detected_gpus() if opts.num_gpus is None else opts.num_gpus)


def detected_gpus() -> int:
    """GPUs that ``ray.init`` will find on this machine (Ray's own detection, CUDA_VISIBLE_DEVICES
    honoured); torch's count if that private API moved."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        visible = manager.get_current_process_visible_accelerator_ids()
        found = manager.get_current_node_num_accelerators()
        return min(found, len(visible)) if visible is not None else found
    except (ImportError, AttributeError):
        import torch

        return torch.cuda.device_count()


def init_ray(opts: SearchOptions, env_vars: dict[str, str]) -> None:
    import ray

    from platform.search.shipping import code_dir

    runtime_env = {
        # Workers see the `platform` package only through the working_dir (it goes first on
        # PYTHONPATH there); it holds the code folders only (no .env, data or stores).
        "working_dir": code_dir(),
        "excludes": [".git", ".venv", "mlruns", ".cache", "**/__pycache__"],
        "env_vars": env_vars,
    }
    runtime_env = without_job_fields(runtime_env, job_runtime_env())
    address = opts.address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        num_cpus = local_num_cpus(opts)
        extra = {"num_gpus": opts.num_gpus} if opts.num_gpus is not None else {}
        log.info("starting a local Ray with %d logical CPUs%s", num_cpus,
                 f" and {opts.num_gpus} GPU(s)" if extra else "")
        # address="local": always a new instance, even when `ray start` left a cluster on this machine
        # (a bare ray.init() would silently join that one instead).
        ray.init(address="local", num_cpus=num_cpus, runtime_env=runtime_env, log_to_driver=False,
                 include_dashboard=False, **extra)


def check_shared_storage(opts: SearchOptions, storage: str) -> None:
    """Trials on several nodes need storage every node can reach (S3, GCS, NFS...)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    hosts = {n.get("NodeManagerAddress") for n in nodes}
    if len(hosts) <= 1 or "://" in storage:
        return  # one machine (several raylets on one host share its disk) or a URI every node reaches
    if not (opts.storage or os.environ.get("PLATFORM_STORAGE_PATH")):
        raise ConfigError(
            f"the Ray cluster has {len(hosts)} machines but results would go to the local folder {storage}, which "
            "the other nodes cannot reach. Give --storage s3://BUCKET/PREFIX (or a path on a filesystem that "
            "every node mounts, e.g. --storage /mnt/shared/ray_results).")
    log.warning("storage %s is a local path on a %d-machine cluster: it must be a filesystem every node mounts",
                storage, len(hosts))


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
        if isinstance(v, (int, float)) and math.isfinite(v) and (
                self.best is None or (v > self.best[0] if self.mode == "max" else v < self.best[0])):
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
def summarise(results, callback, spec: SearchSpec, model=None, budget=None) -> list[dict]:
    from platform.search.conditional import SpaceModel
    from platform.search.space import cost_metric

    metric, mode = spec["search"]["metric"], spec["search"]["mode"]
    cost = cost_metric(spec)
    keys = (model or SpaceModel.from_spec(spec)).searched_paths()
    rows = []
    for res in results:
        cfg = res.config or {}
        name = Path(res.path).name
        trial_id = (res.metrics or {}).get("trial_id") or (name.removeprefix("trial_"))
        df = res.metrics_dataframe
        best_val = best_ssim = best_cost = None
        epochs = 0
        if df is not None and len(df) and metric in df:
            col = df[metric].dropna()
            col = col[col.apply(lambda v: abs(v) != float("inf"))]  # NaN already dropped
            if len(col):
                idx = col.idxmax() if mode == "max" else col.idxmin()
                best_val = float(df.loc[idx, metric])
                best_ssim = float(df.loc[idx, "val_ssim"]) if "val_ssim" in df else None
                best_cost = float(df.loc[idx, cost]) if cost and cost in df else None
        if df is not None and len(df):
            epochs = int(df["epoch"].max()) if "epoch" in df else len(df)
        reason = callback.stop_reasons.get(trial_id)
        if reason is None:
            reason = f"failed (exception): {res.error}" if res.error else "unknown"
        row = {"trial": trial_id, "epochs": epochs, "stop": reason, metric: best_val, "val_ssim": best_ssim,
               "run_id": callback.run_ids.get(trial_id), "result": res}
        if cost:
            row[cost] = best_cost
        if budget is not None and trial_id in budget.trials:
            row["spend_usd"] = budget.trials[trial_id].usd
        for k in keys:
            node: Any = cfg
            for part in k.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            row[k] = node
        rows.append(row)
    rows.sort(key=lambda r: (r[metric] is None, -(r[metric] or 0) if mode == "max" else (r[metric] or 0)))
    return rows


def pareto_front(rows: list[dict], metric: str, mode: str, cost: str) -> list[dict]:
    """Rows not dominated in (metric, lower cost)."""
    pts = [r for r in rows if r.get(metric) is not None and r.get(cost) is not None]
    sign = 1 if mode == "max" else -1
    front = []
    for r in pts:
        q, c = sign * r[metric], r[cost]
        dominated = any((sign * o[metric] >= q and o[cost] <= c) and (sign * o[metric] > q or o[cost] < c)
                        for o in pts if o is not r)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r[cost])


def format_table(rows: list[dict], metric: str) -> str:
    if not rows:
        return "(no trials)"
    extra = [k for k in ("cost_params_m", "cost_latency_ms", "spend_usd") if any(k in r for r in rows)]
    cols = ["trial"] + [k for k in rows[0] if "." in k] + ["epochs", metric, "val_ssim"] + extra + ["stop"]

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    table = [[c for c in cols]] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def best_checkpoint(row: dict, metric: str, mode: str):
    """The best surviving checkpoint of a trial (Tune's own, or the Train run's reported path) as a
    ``ray.train.Checkpoint`` on the experiment's storage (a local folder, or ``bucket/key`` on S3)."""
    from pyarrow.fs import FileType, LocalFileSystem
    from ray.train import Checkpoint

    res = row["result"]
    fs = getattr(res, "filesystem", None) or LocalFileSystem()
    best = None

    def consider(value, path: str, filesystem) -> None:
        nonlocal best
        if value is None or not math.isfinite(value) or (best is not None and not (
                value > best[0] if mode == "max" else value < best[0])):
            return
        if filesystem.get_file_info(path).type != FileType.Directory:
            return  # pruned by the retention policy
        best = (value, Checkpoint(path, filesystem))

    for ckpt, metrics in (res.best_checkpoints or []):
        consider(metrics.get(metric), ckpt.path, ckpt.filesystem or fs)
    df = res.metrics_dataframe
    if df is not None and "checkpoint_path" in df and metric in df:
        for _, r in df.dropna(subset=["checkpoint_path", metric]).iterrows():
            consider(float(r[metric]), str(r["checkpoint_path"]), fs)
    return best[1] if best else None


def checkpoint_uri(ckpt) -> str:
    """A checkpoint's address for humans and tags: the folder, or ``s3://bucket/key``."""
    kind = getattr(ckpt.filesystem, "type_name", "local")
    return ckpt.path if kind == "local" else f"{kind}://{ckpt.path}"


@contextlib.contextmanager
def local_checkpoint(ckpt):
    """The checkpoint as a local folder: itself when local, else downloaded to a temporary one."""
    if getattr(ckpt.filesystem, "type_name", "local") == "local":
        yield ckpt.path
        return
    with tempfile.TemporaryDirectory(prefix="best-ckpt-") as tmp:
        log.info("downloading the best checkpoint %s", checkpoint_uri(ckpt))
        yield ckpt.to_directory(tmp)


# --------------------------------------------------------------------------- main entry
def run_search(opts: SearchOptions) -> SearchOutcome:
    from platform.logs import quiet_third_party

    quiet_third_party()
    started = time.monotonic()
    spec = prepare_spec(opts)  # validate everything cheap before importing the heavy stack
    from platform.search import quality
    from platform.search.conditional import SpaceModel

    check_combination(spec, SpaceModel.from_spec(spec))
    champion = resolve_warm_start(spec, opts)  # earlier searches and champion named before anything long
    task = preflight(spec)
    check_local_ray_fits(spec, opts)
    check_pretrained(spec)
    lpips_reason = check_lpips(spec)
    floors = quality.compute_floors(spec, task)  # before any trial: what no learning gives
    size_to_budget(spec, task, opts, started)  # writes the plan into spec (search.timebox.plan)
    space_model = SpaceModel.from_spec(spec)  # after check_lpips (may pin λ(lpips) to 0) and the time plan

    import mlflow
    import ray
    from ray import tune

    from platform import pyfunc, tracking
    from platform.champion import champion_version, min_gain, register_and_maybe_promote
    from platform.search import resume as resume_lib
    from platform.search.budget import BudgetStopper, BudgetTracker, rung_milestones
    from platform.search.failures import failure_config
    from platform.search.packing import TrialResources
    from platform.search.preflight import check_cluster_fits
    from platform.search.retention import protected_checkpoints, sweep
    from platform.search.space import cost_metric, make_scheduler, make_searcher, num_samples, tuner_param_space
    s = spec["search"]
    metric, mode = s["metric"], s["mode"]
    storage = storage_path(opts)
    client, exp_id = tracking.setup_mlflow(spec.name)
    from platform.search.warmstart import gather

    warm = gather(client, spec, space_model)  # on the final space (after the LPIPS check and the time plan)

    run_ids: dict[str, str] = {}
    logged_steps: dict[str, int] = {}
    if opts.resume:
        exp_path = resume_lib.find_experiment(storage, spec.name, opts.resume if isinstance(opts.resume, str) else None)
        run_name = Path(exp_path).name
        storage = exp_path.rsplit("/", 1)[0] if "://" in exp_path else str(Path(exp_path).parent)
        parent = resume_lib.find_parent_run(client, exp_id, exp_path)
        if parent is not None and parent.info.status == "FINISHED":
            raise ConfigError(f"the search in {exp_path} already finished (MLflow run {parent.info.run_id}); "
                              "start a new search instead of --resume.")
        if parent is None:
            log.warning("no MLflow parent run found for %s; starting a new one", exp_path)
    else:
        run_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        exp_path = f"{storage.rstrip('/')}/{run_name}" if "://" in storage else str(Path(storage) / run_name)
        n = 2
        while "://" not in exp_path and Path(exp_path).exists():
            exp_path = str(Path(storage) / f"{run_name}-{n}")
            n += 1
        run_name = Path(exp_path).name
        parent = None
    if parent is None:
        parent = client.create_run(exp_id, run_name=run_name, tags={
            "search_space": str(spec.source), "quick": str(opts.quick), resume_lib.EXPERIMENT_TAG: exp_path})
        parent_id = parent.info.run_id
        client.log_text(parent_id, spec.source.read_text(), "search_space.yaml")
        client.log_dict(parent_id, spec.config, "resolved_spec.json")
        sch = s["scheduler"]
        for k, v in {"metric": metric, "mode": mode, "num_trials": s["num_trials"], "scheduler": sch["name"],
                     "searcher": s["searcher"]["name"], "epochs": spec["train"]["epochs"],
                     "seed": spec["train"]["seed"], "data": spec["task"]["data"], "grace_period": sch["grace_period"],
                     "reduction_factor": sch["reduction_factor"], "max_t": sch["max_t"],
                     "repeat": f"{s['repeat']['over']} x{s['repeat']['k']}", "cost": s["cost"]["metric"],
                     "budget_usd": s["budget"]["usd"]}.items():
            client.log_param(parent_id, k, str(v))
        record_warm_start(client, parent_id, spec, warm, champion)
    else:
        parent_id = parent.info.run_id
        client.update_run(parent_id, status="RUNNING")
        client.set_tag(parent_id, "resumed", time.strftime("%Y-%m-%d %H:%M:%S"))
        run_ids, logged_steps = resume_lib.reconcile_children(client, exp_id, parent_id, exp_path, metric)
        log.info("resuming %s: MLflow parent run %s, %d trial run(s) to continue", exp_path, parent_id, len(run_ids))
    if lpips_reason:
        client.set_tag(parent_id, "lpips_unavailable", lpips_reason[:5000])
    if floors:
        quality.log_floors(client, parent_id, floors, spec, task)
    champion_at_start = champion_version(client, spec.name)
    tb_dir = Path(os.environ.get("PLATFORM_TENSORBOARD_DIR") or Path("mlruns") / "tensorboard") / run_name

    # Where data and pretrained weights live (never credentials: those come from each node's AWS chain).
    forwarded = ("PLATFORM_DATA_DIR", "PLATFORM_PRETRAINED_DIR", "PLATFORM_PRETRAINED_STORE",
                 "PLATFORM_PRETRAINED_ENDPOINT", "PLATFORM_PRETRAINED_REGION", "PLATFORM_PRETRAINED_CACHE",
                 "PLATFORM_PRETRAINED_HUB", "PLATFORM_TASK_MODULES")
    env_vars = {k: os.environ[k] for k in forwarded if k in os.environ}
    env_vars.setdefault("PLATFORM_DATA_DIR", str(Path(".cache/data").resolve()))
    env_vars.setdefault("PLATFORM_PRETRAINED_DIR", str(Path(".cache/pretrained").resolve()))
    init_ray(opts, env_vars)
    try:
        check_shared_storage(opts, storage)
        check_cluster_fits(spec, address=opts.address or os.environ.get("RAY_ADDRESS"))
    except ConfigError:  # refused before any trial: the parent run ends as failed, not RUNNING
        client.set_terminated(parent_id, status="FAILED")
        raise
    # Save Tune's experiment state (trials, searcher, callbacks) every few seconds rather than Tune's
    # adaptive >= 10 s: after a crash, --resume loses at most that much bookkeeping.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3")

    from platform.train.trainable import get_trainable, uses_torch_trainer

    run_trial = get_trainable(opts.trainable)

    res = spec["resources"]
    keep_best = int(s["checkpoints"]["keep_best"])
    run_info = {"storage_path": storage, "metric": metric, "mode": mode, "keep_checkpoints": keep_best,
                "search": spec.name, "parent_run_id": parent_id, "repeat": dict(s["repeat"]),
                "cost": s["cost"]["metric"], "latency_size": s["cost"]["latency_size"]}
    if champion is not None:
        from platform.search.warminit import stage

        run_info["warm_weights"] = stage(champion, exp_path)
    budget = BudgetTracker.from_spec(exp_path, spec)
    packer = TrialResources(exp_path, dict(res), dict(task.model_kwargs()), torch_trainer=uses_torch_trainer(res))
    sch = s["scheduler"]
    milestones = rung_milestones(sch["grace_period"], sch["reduction_factor"], sch["max_t"]) \
        if sch["name"] in ("asha", "hyperband", "bohb") else []
    protected = protected_checkpoints(client, spec.name)
    callback = tracking.MLflowSearchCallback(
        client, exp_id, parent_id, tb_dir, spec["train"]["epochs"], metric, mode, existing=run_ids,
        search=spec.name, experiment_path=exp_path if "://" not in exp_path else None, budget_key=exp_path,
        packer_key=exp_path, milestones=milestones, keep_best=keep_best, protected=protected,
        logged_steps=logged_steps)
    total = num_samples(spec, space_model)
    progress = ProgressReporter(total, metric, mode, s["max_concurrent"])
    searcher = make_searcher(spec, space_model, budget_key=exp_path, warm=warm)
    scheduler = make_scheduler(spec, space_model)
    b = s["budget"]
    stopper = (BudgetStopper(exp_path, whole_search=sch["name"] == "pbt")
               if (b["usd"] is not None or b["time_s"] is not None) else None)
    stopper = with_trial_time_limit(stopper, spec)
    trainable = tune.with_resources(run_trial, packer)
    callbacks = [callback, progress.callback]
    if opts.resume:
        tuner = resume_lib.restore_tuner(exp_path, trainable, callbacks=callbacks, stopper=stopper,
                                         search_alg=searcher, scheduler=scheduler)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=tuner_param_space(spec, run_info, space_model),
            tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=total, search_alg=searcher,
                                        scheduler=scheduler,
                                        # Searchers come wrapped in a ConcurrencyLimiter already; a second one
                                        # (Tune's) would shadow it in the saved searcher state of --resume.
                                        max_concurrent_trials=s["max_concurrent"] if searcher is None else None,
                                        trial_dirname_creator=trial_dirname, reuse_actors=bool(s["reuse_actors"])),
            run_config=tune.RunConfig(
                name=run_name, storage_path=storage, callbacks=callbacks, stop=stopper, verbose=0,
                failure_config=failure_config(),  # retries lost nodes/workers, never a NaN/OOM/exception
                # On local storage retention is done by the tracking callback (best N + latest,
                # registry-protected); on remote storage (s3://...) Tune keeps the best N itself (plus
                # the latest, which Ray never deletes).
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None if "://" not in storage else keep_best,
                                                        checkpoint_score_attribute=metric,
                                                        checkpoint_score_order=mode)),
        )
    log.info("search %r: %d trials of up to %d epochs, %s + %s, experiment %s, MLflow %s (parent run %s)",
             spec.name, total, spec["train"]["epochs"], sch["name"],
             {"bohb": "tunebohb", "pbt": "random population"}.get(sch["name"], s["searcher"]["name"]), exp_path,
             tracking.tracking_uri(),
             parent_id)
    status = "FAILED"
    try:
        results = tuner.fit()
        budget.pause_all()
        rows = summarise(results, callback, spec, space_model, budget)
        spend = budget.summary()
        outcome = SearchOutcome(spec, parent_id, rows, None, lpips_unavailable=lpips_reason, storage_path=storage,
                                experiment_path=exp_path, spend=spend, floors=floors,
                                timebox=spec["search"]["timebox"].get("plan"))
        log.info("trials of %s:\n%s", spec.name, format_table(rows, metric))
        log.info("spend: $%.4f (%.4f GPU-hours, %.4f CPU-hours, %.0f s)%s", spend["spend_usd"], spend["gpu_hours"],
                 spend["cpu_hours"], spend["search_time_s"],
                 f"; {budget.exhausted_reason}" if budget.exhausted_reason else "")
        client.log_batch(parent_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
                                             for k, v in spend.items()])
        if budget.exhausted_reason:
            client.set_tag(parent_id, "budget_exhausted", budget.exhausted_reason)
        client.set_tag(parent_id, "trials", str(len(rows)))
        cost = cost_metric(spec)
        if cost:
            outcome.pareto = pareto_front(rows, metric, mode, cost)
            client.set_tag(parent_id, "pareto_trials", ",".join(r["trial"] for r in outcome.pareto))
            log.info("Pareto front (%s vs %s): %s", metric, cost,
                     ", ".join(f"{r['trial']} ({r[metric]:.3f}, {r[cost]:.3g})" for r in outcome.pareto))
        ok = [r for r in rows if r[metric] is not None]
        if not ok:
            raise ConfigError(f"no trial of {spec.name} produced {metric}; see the trial errors above and the "
                              f"MLflow runs under parent run {parent_id}.")
        outcome.best = best = ok[0]
        log.info("best trial against the quality floors:\n%s", quality.format_floors(floors, best, metric, mode))
        client.set_tag(parent_id, "best_trial", best["trial"])
        client.log_metric(parent_id, f"best_{metric}", best[metric])
        ckpt = best_checkpoint(best, metric, mode)
        if ckpt is None:
            raise RuntimeError(f"best trial {best['trial']} left no checkpoint")
        source = checkpoint_uri(ckpt)
        with local_checkpoint(ckpt) as ckpt_dir:
            model_uri = pyfunc.log_model(ckpt_dir, best["run_id"] or parent_id, sample=task.example_input())
            reported = json.loads((Path(ckpt_dir) / "metrics.json").read_text()).get(metric, best[metric])
        if opts.promote:
            from platform.floors import best_floor

            outcome.promotion = register_and_maybe_promote(
                client, spec.name, model_uri, best["run_id"] or parent_id, quality.promotion_task(spec, task), metric,
                mode, score=float(reported), origin="quick" if opts.quick else "full",
                floor=best_floor(floors, metric, mode), gain=min_gain(metric, spec["promotion"]["min_gain"]),
                champion_at_start=champion_at_start, source_checkpoint=source)
            client.set_tag(parent_id, "promotion", outcome.promotion.message()[:5000])
            protected.add(str(Path(source).resolve()) if "://" not in source else source)
        if "://" not in exp_path:
            removed = sweep(exp_path, metric, mode, keep_best, protected)
            for train_dir in Path(storage).glob(f"{run_name}-train-*"):
                removed.update(sweep(train_dir, metric, mode, keep_best, protected))
            if removed:
                log.info("retention: removed %d checkpoint(s)", sum(len(v) for v in removed.values()))
        if s["report"]:
            outcome.report_path = write_report(parent_id, client)
        status = "FINISHED"
        return outcome
    except KeyboardInterrupt:
        status = "KILLED"  # resumable with --resume
        raise
    finally:
        budget.pause_all()
        client.set_terminated(parent_id, status=status)
        mlflow.end_run()
        if not opts.address and ray.is_initialized() and not os.environ.get("PLATFORM_KEEP_RAY"):
            ray.shutdown()


def resolve_warm_start(spec: SearchSpec, opts: SearchOptions):
    """Check that the earlier searches exist and fetch the earlier champion's weights (None when
    not asked for), so that bad names stop the search at once. On --resume the weights are
    already staged and named in the restored trials' configs (and the restored searcher state
    replaces a fed study; one killed before Tune saved it starts fed again)."""
    cfg = spec["warm_start"]
    if not cfg["searches"] and not cfg["weights"]:
        return None
    import mlflow
    from mlflow.tracking import MlflowClient

    from platform import tracking
    from platform.search import warminit, warmstart

    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    for ref in cfg["searches"]:
        warmstart.find_search(client, ref)
    return warminit.resolve(cfg["weights"]) if cfg["weights"] and not opts.resume else None


def record_warm_start(client, parent_id: str, spec: SearchSpec, warm, champion) -> None:
    """The show this shot belongs to and where its knowledge came from, on the parent run."""
    from platform.search import warminit, warmstart

    if spec["show"]:
        client.set_tag(parent_id, "show", spec["show"])
    if warm is not None:
        warmstart.record(client, parent_id, warm)
    if champion is not None:
        warminit.record(client, parent_id, champion)


def size_to_budget(spec: SearchSpec, task, opts: SearchOptions, started: float):
    """Trials, epochs and crops sized to ``search.timebox.seconds`` (None when not time-boxed)."""
    seconds = spec["search"]["timebox"]["seconds"]
    if seconds is None or opts.resume:
        return None
    from platform.search.timebox import size_search

    return size_search(spec, task, float(seconds), user_overrides(opts), started)


def with_trial_time_limit(stopper, spec: SearchSpec):
    """Add a per-trial wall-clock limit to ``stopper`` for a time-boxed search."""
    from platform.search.timebox import trial_time_limit

    limit = trial_time_limit(spec)
    if limit is None:
        return stopper
    from ray.tune.stopper import CombinedStopper, FunctionStopper

    over = FunctionStopper(lambda trial_id, result: float(result.get("time_total_s", 0.0)) > limit)
    return over if stopper is None else CombinedStopper(stopper, over)


def write_report(parent_id: str, client) -> str | None:
    """The HTML report of a search, logged to its MLflow parent run (a failure is only logged)."""
    try:
        from platform.report import build_report

        path = build_report(parent_id, client=client)
        client.log_artifact(parent_id, str(path), artifact_path="report")
        log.info("report: %s (also in MLflow run %s under report/)", path, parent_id)
        return str(path)
    except Exception:  # the search's results stand without the report
        log.warning("could not write the search report", exc_info=True)
        return None
