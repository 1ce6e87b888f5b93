"""The search driver: Ray Tune (ASHA + Optuna TPE by default) over trials of the common trainer.

``run_search(options)`` validates the space and the data before anything starts, connects to
(or starts) Ray with the repository as ``working_dir``, runs the Tune search with MLflow and
TensorBoard tracking from the driver, prints a summary of the trials (with the spend and, for
a multi-objective search, the Pareto front), registers the best model (moving the
``champion`` alias only when it beats the current champion), prunes checkpoints and writes
the HTML report. ``SearchOptions(resume=True)`` (``--resume``) continues a crashed search.

``run_search`` is a sequence of named stages: :func:`prepare`, :func:`open_parent_run`,
:func:`start_ray`, :func:`build_tuner`, the run, :func:`summarise_search`, :func:`pick_best`,
:func:`register_best`, :func:`clean_up` and :func:`close_search`. The Tune callbacks of a search
(:func:`search_callbacks`) are the trial ledger, the bookkeeping of
:mod:`platform.search.bookkeeping` and the MLflow tracking of :mod:`platform.tracking`.
"""

from __future__ import annotations

import json
import logging
import os
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
    teacher_score: float | None = None  # a student search's teacher on the validation frames
    students: list = field(default_factory=list)  # its platform.report.pareto.Point s, teacher first


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
    from platform.compress.points import pruned_student_name

    overrides = user_overrides(opts)
    if opts.time_budget is not None:
        overrides = {**overrides, "search": {**overrides.get("search", {}),
                                             "timebox": {**overrides.get("search", {}).get("timebox", {}),
                                                         "seconds": float(opts.time_budget)}}}
    spec = load_spec(opts.space, quick=opts.quick, overrides=overrides)
    if opts.experiment:
        spec.config["name"] = check_name(opts.experiment, "--experiment")
    elif name := pruned_student_name(spec.config):
        spec.config["name"] = name  # students of models:/NAME@... are registered as NAME_student
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


# --------------------------------------------------------------------------- main entry
def run_search(opts: SearchOptions) -> SearchOutcome:
    """Prepare, open the parent run, start Ray, build the tuner, run it, summarise, register the
    best model and clean up; the parent run ends FINISHED, FAILED or KILLED (resumable)."""
    from platform.logs import quiet_third_party

    quiet_third_party()
    prep = prepare(opts)
    run = open_parent_run(prep, opts)
    parts, status = None, "FAILED"
    try:
        start_ray(prep.spec, run, opts)
        parts = build_tuner(prep, run, opts)
        results = parts.tuner.fit()
        parts.budget.pause_all()
        outcome = summarise_search(results, prep, run, parts)
        pick_best(outcome, prep, run)
        register_best(outcome, prep, run, parts, opts)
        measure_students(outcome, prep, run)
        clean_up(outcome, prep, run, parts)
        status = "FINISHED"
        return outcome
    except KeyboardInterrupt:
        status = "KILLED"  # resumable with --resume
        raise
    finally:
        close_search(run, parts.budget if parts else None, opts, status)


# --------------------------------------------------------------------------- stage 1: prepare
@dataclass
class Prepared:
    """A search checked and sized in the driver, before MLflow or Ray are touched."""

    spec: SearchSpec
    task: Any
    space: Any  # the SpaceModel of the final space
    champion: Any  # the earlier champion whose weights start matching trials (--init-from), or None
    lpips_reason: str | None  # why LPIPS is off, when it was asked for and is unavailable
    floors: dict


def prepare(opts: SearchOptions) -> Prepared:
    """The spec, the combination of settings, the warm-start sources, the data, the pretrained
    weights, the quality floors and (time-boxed) the plan, all checked before anything long."""
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
    space = SpaceModel.from_spec(spec)  # after check_lpips (may pin λ(lpips) to 0) and the time plan
    return Prepared(spec, task, space, champion, lpips_reason, floors)


# --------------------------------------------------------------------------- stage 2: the parent run
@dataclass
class ParentRun:
    """The MLflow parent run of a search and the experiment folder its trials go to."""

    client: Any
    experiment_id: str
    experiment_path: str
    run_name: str
    storage: str
    run_id: str = ""
    warm: Any = None  # earlier trials handed to the searcher (--warm-start)
    run_ids: dict[str, str] = field(default_factory=dict)  # trial runs a --resume continues
    logged_steps: dict[str, int] = field(default_factory=dict)  # their last logged epoch
    champion_at_start: Any = None

    @property
    def local(self) -> bool:
        return "://" not in self.experiment_path


def open_parent_run(prep: Prepared, opts: SearchOptions) -> ParentRun:
    """Create the parent run (or, on --resume, reopen it and find its trial runs) and log on it
    what the search starts from."""
    from platform import tracking
    from platform.champion import champion_version
    from platform.search import quality
    from platform.search.warmstart import gather

    spec = prep.spec
    storage = storage_path(opts)
    client, exp_id = tracking.setup_mlflow(spec.name)
    warm = gather(client, spec, prep.space)  # on the final space (after the LPIPS check and the time plan)
    run = ParentRun(client, exp_id, *experiment_folder(opts, spec, storage), warm=warm)
    parent = find_resumed_parent(run, opts)
    if parent is None:
        run.run_id = create_parent_run(run, prep, opts)
    else:
        continue_parent_run(run, parent.info.run_id, spec["search"]["metric"])
    if prep.lpips_reason:
        client.set_tag(run.run_id, "lpips_unavailable", prep.lpips_reason[:5000])
    if prep.floors:
        quality.log_floors(client, run.run_id, prep.floors, spec, prep.task)
    run.champion_at_start = champion_version(client, spec.name)
    return run


def experiment_folder(opts: SearchOptions, spec: SearchSpec, storage: str) -> tuple[str, str, str]:
    """(experiment path, run name, storage): the folder to resume, or a new ``<name>-<time>``."""
    if opts.resume:
        from platform.search.resume import find_experiment

        exp_path = find_experiment(storage, spec.name, opts.resume if isinstance(opts.resume, str) else None)
        storage = exp_path.rsplit("/", 1)[0] if "://" in exp_path else str(Path(exp_path).parent)
        return exp_path, Path(exp_path).name, storage
    run_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp_path = f"{storage.rstrip('/')}/{run_name}" if "://" in storage else str(Path(storage) / run_name)
    n = 2
    while "://" not in exp_path and Path(exp_path).exists():
        exp_path = str(Path(storage) / f"{run_name}-{n}")
        n += 1
    return exp_path, Path(exp_path).name, storage


def find_resumed_parent(run: ParentRun, opts: SearchOptions):
    """On --resume, the parent run of the experiment folder (None: a new one is created)."""
    if not opts.resume:
        return None
    from platform.search.resume import find_parent_run

    parent = find_parent_run(run.client, run.experiment_id, run.experiment_path)
    if parent is not None and parent.info.status == "FINISHED":
        raise ConfigError(f"the search in {run.experiment_path} already finished (MLflow run {parent.info.run_id}); "
                          "start a new search instead of --resume.")
    if parent is None:
        log.warning("no MLflow parent run found for %s; starting a new one", run.experiment_path)
    return parent


def create_parent_run(run: ParentRun, prep: Prepared, opts: SearchOptions) -> str:
    """A new parent run carrying the search space, the resolved spec and the main settings."""
    from platform.search.resume import EXPERIMENT_TAG

    spec, client = prep.spec, run.client
    s, sch = spec["search"], spec["search"]["scheduler"]
    parent_id = client.create_run(run.experiment_id, run_name=run.run_name, tags={
        "search_space": str(spec.source), "quick": str(opts.quick), EXPERIMENT_TAG: run.experiment_path}).info.run_id
    client.log_text(parent_id, spec.source.read_text(), "search_space.yaml")
    client.log_dict(parent_id, spec.config, "resolved_spec.json")
    for k, v in {"metric": s["metric"], "mode": s["mode"], "num_trials": s["num_trials"], "scheduler": sch["name"],
                 "searcher": s["searcher"]["name"], "epochs": spec["train"]["epochs"],
                 "seed": spec["train"]["seed"], "data": spec["task"]["data"], "grace_period": sch["grace_period"],
                 "reduction_factor": sch["reduction_factor"], "max_t": sch["max_t"],
                 "repeat": f"{s['repeat']['over']} x{s['repeat']['k']}", "cost": s["cost"]["metric"],
                 "budget_usd": s["budget"]["usd"]}.items():
        client.log_param(parent_id, k, str(v))
    record_warm_start(client, parent_id, spec, run.warm, prep.champion)
    return parent_id


def continue_parent_run(run: ParentRun, parent_id: str, metric: str) -> None:
    """--resume: mark the parent run running again and find the trial runs to continue."""
    from platform.search.resume import reconcile_children

    run.run_id = parent_id
    run.client.update_run(parent_id, status="RUNNING")
    run.client.set_tag(parent_id, "resumed", time.strftime("%Y-%m-%d %H:%M:%S"))
    run.run_ids, run.logged_steps = reconcile_children(run.client, run.experiment_id, parent_id,
                                                       run.experiment_path, metric)
    log.info("resuming %s: MLflow parent run %s, %d trial run(s) to continue", run.experiment_path, parent_id,
             len(run.run_ids))


# --------------------------------------------------------------------------- stage 3: Ray
# Where data and pretrained weights live (never credentials: those come from each node's AWS chain).
FORWARDED_ENV = ("PLATFORM_DATA_DIR", "PLATFORM_PRETRAINED_DIR", "PLATFORM_PRETRAINED_STORE",
                 "PLATFORM_PRETRAINED_ENDPOINT", "PLATFORM_PRETRAINED_REGION", "PLATFORM_PRETRAINED_CACHE",
                 "PLATFORM_PRETRAINED_HUB", "PLATFORM_TASK_MODULES")


def start_ray(spec: SearchSpec, run: ParentRun, opts: SearchOptions) -> None:
    """Connect to (or start) Ray and check that the cluster can run the trials; a refusal ends
    the parent run as failed (not RUNNING)."""
    from platform.search.preflight import check_cluster_fits

    env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env_vars.setdefault("PLATFORM_DATA_DIR", str(Path(".cache/data").resolve()))
    env_vars.setdefault("PLATFORM_PRETRAINED_DIR", str(Path(".cache/pretrained").resolve()))
    init_ray(opts, env_vars)
    try:
        check_shared_storage(opts, run.storage)
        check_cluster_fits(spec, address=opts.address or os.environ.get("RAY_ADDRESS"))
    except ConfigError:  # refused before any trial
        run.client.set_terminated(run.run_id, status="FAILED")
        raise


# --------------------------------------------------------------------------- stage 4: the tuner
@dataclass
class TunerParts:
    """The tuner of a search and the live objects the later stages read."""

    tuner: Any
    ledger: Any  # TrialLedger: what each trial did
    run_ids: dict[str, str]  # {trial_id: MLflow run id}, filled by the tracking callback
    budget: Any  # BudgetTracker
    protected: set[str]  # checkpoints retention never deletes


def build_tuner(prep: Prepared, run: ParentRun, opts: SearchOptions) -> TunerParts:
    """A new Tuner, or on --resume the restored one with this driver's live callbacks, stopper,
    searcher and scheduler."""
    from ray import tune

    from platform import tracking
    from platform.search.budget import BudgetTracker
    from platform.search.packing import TrialResources
    from platform.search.progress import ProgressReporter
    from platform.search.resume import restore_tuner, tuner_saved
    from platform.search.retention import protected_checkpoints
    from platform.search.space import make_scheduler, make_searcher, num_samples, tuner_param_space
    from platform.train.trainable import get_trainable, uses_torch_trainer

    # Save Tune's experiment state (trials, searcher, callbacks) every few seconds rather than Tune's
    # adaptive >= 10 s: after a crash, --resume loses at most that much bookkeeping.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3")
    spec, key = prep.spec, run.experiment_path
    s, res = spec["search"], spec["resources"]
    run_trial = get_trainable(opts.trainable)
    run_info = trial_run_info(prep, run)
    budget = BudgetTracker.from_spec(key, spec)
    packer = TrialResources(key, dict(res), dict(prep.task.model_kwargs()), torch_trainer=uses_torch_trainer(res))
    protected = protected_checkpoints(run.client, spec.name)
    callbacks, ledger, run_ids = search_callbacks(spec, run, protected)
    total = num_samples(spec, prep.space)
    progress = ProgressReporter(total, s["metric"], s["mode"], s["max_concurrent"])
    searcher = make_searcher(spec, prep.space, budget_key=key, warm=run.warm)
    scheduler = make_scheduler(spec, prep.space)
    stopper = make_stopper(spec, key)
    trainable = tune.with_resources(run_trial, packer)
    callbacks.append(progress.callback)
    if opts.resume and tuner_saved(key):
        tuner = restore_tuner(key, trainable, callbacks=callbacks, stopper=stopper, search_alg=searcher,
                              scheduler=scheduler)
    else:
        if opts.resume:
            log.warning("Tune's tuner.pkl in %s is incomplete (the search was killed as it started, before any "
                        "trial): its trials start afresh in the same folder", key)
        tuner = tune.Tuner(trainable, param_space=tuner_param_space(spec, run_info, prep.space),
                           tune_config=tune_config(spec, total, searcher, scheduler),
                           run_config=run_config(spec, run, callbacks, stopper))
    log.info("search %r: %d trials of up to %d epochs, %s + %s, experiment %s, MLflow %s (parent run %s)",
             spec.name, total, spec["train"]["epochs"], s["scheduler"]["name"],
             {"bohb": "tunebohb", "pbt": "random population"}.get(s["scheduler"]["name"], s["searcher"]["name"]),
             key, tracking.tracking_uri(), run.run_id)
    return TunerParts(tuner, ledger, run_ids, budget, protected)


def trial_run_info(prep: Prepared, run: ParentRun) -> dict:
    """What every trial is told of its search (``_run`` in its config)."""
    spec = prep.spec
    s = spec["search"]
    info = {"storage_path": run.storage, "metric": s["metric"], "mode": s["mode"],
            "keep_checkpoints": int(s["checkpoints"]["keep_best"]), "search": spec.name, "parent_run_id": run.run_id,
            "repeat": dict(s["repeat"]), "cost": s["cost"]["metric"], "latency_size": s["cost"]["latency_size"]}
    if prep.champion is not None:
        from platform.search.warminit import stage

        info["warm_weights"] = stage(prep.champion, run.experiment_path)
    return info


def search_callbacks(spec: SearchSpec, run: ParentRun, protected: set[str]) -> tuple[list, Any, dict[str, str]]:
    """The search's Tune callbacks, in the order Tune must call them (the trial ledger first: the
    others read what it recorded; the budget's clock before the MLflow run logs a trial's spend;
    the state file's copy of Tune's saved state before retention acts on that state), with the
    ledger and the live {trial_id: MLflow run id} of the tracking callback."""
    from platform import tracking
    from platform.search import bookkeeping
    from platform.search.budget import rung_milestones
    from platform.search.ledger import TrialLedger

    s, sch, key = spec["search"], spec["search"]["scheduler"], run.experiment_path
    milestones = rung_milestones(sch["grace_period"], sch["reduction_factor"], sch["max_t"]) \
        if sch["name"] in ("asha", "hyperband", "bohb") else []
    ledger = TrialLedger(s["metric"], s["mode"], spec["train"]["epochs"], milestones, budget_key=key)
    tb_dir = Path(os.environ.get("PLATFORM_TENSORBOARD_DIR") or Path("mlruns") / "tensorboard") / run.run_name
    mlflow_runs = tracking.MLflowSearchCallback(run.client, run.experiment_id, run.run_id, tb_dir, ledger,
                                                existing=run.run_ids, logged_steps=run.logged_steps, budget_key=key)
    callbacks = [ledger, bookkeeping.BudgetCallback(key), bookkeeping.PackingCallback(key, ledger), mlflow_runs,
                 bookkeeping.GaugesCallback(spec.name or run.run_id, ledger, budget_key=key, packer_key=key)]
    if run.local:
        callbacks.append(bookkeeping.StateFileCallback(key, spec.name, run.run_id, ledger, mlflow_runs.run_ids,
                                                       budget_key=key))
    callbacks.append(bookkeeping.RetentionCallback(s["metric"], s["mode"], int(s["checkpoints"]["keep_best"]),
                                                   protected, experiment_path=key if run.local else None))
    return callbacks, ledger, mlflow_runs.run_ids


def make_stopper(spec: SearchSpec, budget_key: str):
    """The budget's stopper (when a budget is set) and a time-boxed search's per-trial limit."""
    from platform.search.budget import BudgetStopper

    b, sch = spec["search"]["budget"], spec["search"]["scheduler"]
    stopper = (BudgetStopper(budget_key, whole_search=sch["name"] == "pbt")
               if (b["usd"] is not None or b["time_s"] is not None) else None)
    return with_trial_time_limit(stopper, spec)


def tune_config(spec: SearchSpec, total: int, searcher, scheduler):
    from ray import tune

    s = spec["search"]
    return tune.TuneConfig(metric=s["metric"], mode=s["mode"], num_samples=total, search_alg=searcher,
                           scheduler=scheduler,
                           # Searchers come wrapped in a ConcurrencyLimiter already; a second one (Tune's)
                           # would shadow it in the saved searcher state of --resume.
                           max_concurrent_trials=s["max_concurrent"] if searcher is None else None,
                           trial_dirname_creator=trial_dirname, reuse_actors=bool(s["reuse_actors"]))


def run_config(spec: SearchSpec, run: ParentRun, callbacks: list, stopper):
    from ray import tune

    from platform.search.failures import failure_config

    s = spec["search"]
    return tune.RunConfig(
        name=run.run_name, storage_path=run.storage, callbacks=callbacks, stop=stopper, verbose=0,
        failure_config=failure_config(),  # retries lost nodes/workers, never a NaN/OOM/exception
        # On local storage retention is done by the retention callback (best N + latest,
        # registry-protected); on remote storage (s3://...) Tune keeps the best N itself (plus
        # the latest, which Ray never deletes).
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=None if "://" not in run.storage else int(s["checkpoints"]["keep_best"]),
            checkpoint_score_attribute=s["metric"], checkpoint_score_order=s["mode"]))


# --------------------------------------------------------------------------- stages 5-7: after the trials
def summarise_search(results, prep: Prepared, run: ParentRun, parts: TunerParts) -> SearchOutcome:
    """The trials' table, the spend and (multi-objective) the Pareto front: logged and on the parent run."""
    import mlflow

    from platform.search.space import cost_metric
    from platform.search.summary import format_table, pareto_front, summarise

    spec, client, budget = prep.spec, run.client, parts.budget
    metric, mode = spec["search"]["metric"], spec["search"]["mode"]
    rows = summarise(results, parts.ledger.stop_reasons, parts.run_ids, spec, prep.space, budget)
    spend = budget.summary()
    outcome = SearchOutcome(spec, run.run_id, rows, None, lpips_unavailable=prep.lpips_reason,
                            storage_path=run.storage, experiment_path=run.experiment_path, spend=spend,
                            floors=prep.floors, timebox=spec["search"]["timebox"].get("plan"))
    log.info("trials of %s:\n%s", spec.name, format_table(rows, metric))
    log.info("spend: $%.4f (%.4f GPU-hours, %.4f CPU-hours, %.0f s)%s", spend["spend_usd"], spend["gpu_hours"],
             spend["cpu_hours"], spend["search_time_s"],
             f"; {budget.exhausted_reason}" if budget.exhausted_reason else "")
    client.log_batch(run.run_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
                                          for k, v in spend.items()])
    if budget.exhausted_reason:
        client.set_tag(run.run_id, "budget_exhausted", budget.exhausted_reason)
    client.set_tag(run.run_id, "trials", str(len(rows)))
    cost = cost_metric(spec)
    if cost:
        outcome.pareto = pareto_front(rows, metric, mode, cost)
        client.set_tag(run.run_id, "pareto_trials", ",".join(r["trial"] for r in outcome.pareto))
        log.info("Pareto front (%s vs %s): %s", metric, cost,
                 ", ".join(f"{r['trial']} ({r[metric]:.3f}, {r[cost]:.3g})" for r in outcome.pareto))
    return outcome


def pick_best(outcome: SearchOutcome, prep: Prepared, run: ParentRun) -> None:
    """The best trial (a ConfigError when no trial produced the metric), set on the outcome and
    shown against the quality floors."""
    from platform.search import quality

    spec = prep.spec
    metric, mode = spec["search"]["metric"], spec["search"]["mode"]
    ok = [r for r in outcome.rows if r[metric] is not None]
    if not ok:
        raise ConfigError(f"no trial of {spec.name} produced {metric}; see the trial errors above and the "
                          f"MLflow runs under parent run {run.run_id}.")
    outcome.best = best = ok[0]
    log.info("best trial against the quality floors:\n%s", quality.format_floors(prep.floors, best, metric, mode))
    run.client.set_tag(run.run_id, "best_trial", best["trial"])
    run.client.log_metric(run.run_id, f"best_{metric}", best[metric])


def register_best(outcome: SearchOutcome, prep: Prepared, run: ParentRun, parts: TunerParts,
                  opts: SearchOptions) -> None:
    """Log the best checkpoint as an MLflow model and (with --promote) register it, moving the
    ``champion`` alias only when it beats the current champion."""
    from platform import pyfunc
    from platform.champion import min_gain, register_and_maybe_promote
    from platform.search import quality
    from platform.search.summary import best_checkpoint, checkpoint_uri, local_checkpoint

    spec, client, best = prep.spec, run.client, outcome.best
    metric, mode = spec["search"]["metric"], spec["search"]["mode"]
    ckpt = best_checkpoint(best, metric, mode)
    if ckpt is None:
        raise RuntimeError(f"best trial {best['trial']} left no checkpoint")
    source = checkpoint_uri(ckpt)
    with local_checkpoint(ckpt) as ckpt_dir:
        model_uri = pyfunc.log_model(ckpt_dir, best["run_id"] or run.run_id, sample=prep.task.example_input())
        reported = json.loads((Path(ckpt_dir) / "metrics.json").read_text()).get(metric, best[metric])
    if not opts.promote:
        return
    from platform.floors import best_floor

    outcome.promotion = register_and_maybe_promote(
        client, spec.name, model_uri, best["run_id"] or run.run_id, quality.promotion_task(spec, prep.task), metric,
        mode, score=float(reported), origin="quick" if opts.quick else "full",
        floor=best_floor(prep.floors, metric, mode), gain=min_gain(metric, spec["promotion"]["min_gain"]),
        champion_at_start=run.champion_at_start, source_checkpoint=source)
    client.set_tag(run.run_id, "promotion", outcome.promotion.message()[:5000])
    parts.protected.add(str(Path(source).resolve()) if "://" not in source else source)


def measure_students(outcome: SearchOutcome, prep: Prepared, run: ParentRun) -> None:
    """A student search (distillation, pruning): the teacher's score and the quality-vs-cost points
    of the teacher and every student on the parent run, before the report draws them."""
    from platform.compress.points import record

    outcome.teacher_score, outcome.students = record(run.client, run.run_id, prep.spec, prep.task, outcome.rows)


def clean_up(outcome: SearchOutcome, prep: Prepared, run: ParentRun, parts: TunerParts) -> None:
    """Prune every trial's checkpoints (local storage) and write the HTML report."""
    from platform.search.retention import sweep

    s = prep.spec["search"]
    metric, mode, keep_best = s["metric"], s["mode"], int(s["checkpoints"]["keep_best"])
    if run.local:
        removed = sweep(run.experiment_path, metric, mode, keep_best, parts.protected)
        for train_dir in Path(run.storage).glob(f"{run.run_name}-train-*"):
            removed.update(sweep(train_dir, metric, mode, keep_best, parts.protected))
        if removed:
            log.info("retention: removed %d checkpoint(s)", sum(len(v) for v in removed.values()))
    if s["report"]:
        outcome.report_path = write_report(run.run_id, run.client)


def close_search(run: ParentRun, budget, opts: SearchOptions, status: str) -> None:
    """Stop the spend clocks, end the parent run with ``status`` and shut down a Ray this driver started."""
    import mlflow
    import ray

    if budget is not None:  # None: Ray or the tuner failed to start
        budget.pause_all()
    run.client.set_terminated(run.run_id, status=status)
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
