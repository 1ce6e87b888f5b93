"""Search engine pieces without a Ray cluster: conditional spaces, grid, points to evaluate,
budget decisions, retention policy, GPU packing, lockstep repeats, failure reasons."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from platform.config import load_spec
from platform.errors import ConfigError
from platform.search.conditional import SpaceModel, expand_points
from platform.search.presets import cpu_nafnet

DATA = Path(__file__).parent / "data"
SPACE = DATA / "search_conditional.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- conditional spaces
def test_conditional_space_yields_only_valid_configs():
    """The real searcher (Optuna TPE behind Tune's wrappers) over a conditional space: every
    config has a size of its own architecture, options of its own architecture, and λ only for
    enabled components (the disabled ones are not even sampled)."""
    from platform.models import MODELS
    from platform.search.space import make_searcher
    from platform.train.loop import build_model

    spec = load_spec(SPACE, overrides={"search": {"max_concurrent": 1}})
    model = SpaceModel.from_spec(spec)
    searcher = make_searcher(spec, model)
    optuna_search = searcher.searcher
    seen_arch, built = set(), set()
    for i in range(40):
        tid = f"t{i}"
        cfg = searcher.suggest(tid)
        params = optuna_search._ot_trials[tid].params
        arch, size, opts = cfg["model"]["architecture"], cfg["model"]["size"], cfg["model"]["options"]
        seen_arch.add(arch)
        assert size in MODELS.meta(arch)["sizes"], (arch, size)
        assert ("width" in opts) == (arch == "nafnet")
        assert ("drop_path_rate" in opts) == (arch == "convnext_unet")
        if arch == "convnext_unet":
            assert 0.05 <= opts["drop_path_rate"] <= 0.2
        for comp, (lo, hi) in {"ssim": (0.05, 0.5), "laplacian": (0.01, 1.0)}.items():
            on = params[f"loss.{comp}?"]
            assert (cfg["loss"][comp] > 0) == on
            assert (f"loss.{comp}" in params) == on  # a disabled λ is never sampled
            if on:
                assert lo <= cfg["loss"][comp] <= hi
        from platform.tracking import flatten

        assert not any("[" in k or "?" in k for k in flatten(cfg))  # no internal Optuna names leak
        key = (arch, size, json.dumps(opts, sort_keys=True))
        if key not in built:  # the factory accepts the config (built on the meta device: no init cost)
            built.add(key)
            with torch.device("meta"):
                build_model(cfg, {"in_channels": 3, "out_channels": 3})
        searcher.on_trial_complete(tid, {"val_psnr": 20.0 + (i % 7) * 0.1, "training_iteration": 1})
        if i == 0:  # the first two trials are the points to evaluate (a preset, an explicit point)
            assert (arch, size, cfg["optimizer"]["lr"]) == ("nafnet", "small", 5.0e-4)
        if i == 1:
            assert (arch, size, cfg["loss"]["ssim"], cfg["loss"]["laplacian"]) == ("convnext_unet", "nano", 0.0, 0.1)
    assert seen_arch == {"nafnet", "unet", "convnext_unet"}


@pytest.mark.parametrize("bad, message", [
    ("size: {switch: model.architecture, cases: {nafnet: {choice: [small, base]}}}", "no case for model.architecture"),
    ("size: {switch: model.architecture, cases: {nafnet: small, unet: small, convnext_unet: tiny, swinir: small}}",
     "cannot take"),
    ("size: {switch: model.architecture, cases: {nafnet: {choice: [small, tiny]}, unet: small, convnext_unet: nano}}",
     "has sizes"),
    ("size: {switch: model.arch, cases: {nafnet: small}}", "not a key of this file"),
])
def test_conditional_space_errors_name_the_key(tmp_path, bad, message):
    text = SPACE.read_text().replace("  size:\n    switch: model.architecture\n    cases:\n"
                                     "      nafnet: {choice: [small, base]}\n      unet: {choice: [small, base]}\n"
                                     "      convnext_unet: {choice: [nano, tiny]}\n", f"  {bad}\n")
    assert text != SPACE.read_text()
    with pytest.raises(ConfigError) as err:
        load_spec(_write(tmp_path, text))
    assert message in str(err.value) and "model.size" in str(err.value)


def test_points_to_evaluate_are_checked_and_translated():
    spec = load_spec(SPACE)
    model = SpaceModel.from_spec(spec)
    pts = expand_points([{"model": {"architecture": "unet", "size": "base"}, "loss.ssim": 0.2}], model, "p")
    assert pts == [{"model.architecture": "unet", "model.size[unet]": "base", "loss.ssim?": True, "loss.ssim": 0.2}]
    with pytest.raises(ConfigError, match="`optimizer.weight_decay` is not searched"):
        expand_points([{"optimizer.weight_decay": 0.1}], model, "p")
    with pytest.raises(ConfigError, match="outside its search space"):
        expand_points([{"optimizer.lr": 1.0}], model, "p")
    with pytest.raises(ConfigError, match="unknown preset"):
        expand_points([{"preset": "nope"}], model, "p")
    # A preset keeps the keys this space searches; a value the space cannot take is sampled instead.
    assert expand_points([{"preset": "convnext_tiny_8_12"}], model, "p") == [
        {"model.architecture": "convnext_unet", "model.size[convnext_unet]": "tiny",
         "model.options.drop_path_rate[convnext_unet]": 0.10, "optimizer.lr": 1.0e-3}]


def test_grid_searcher_runs_every_lambda_combination_once():
    from platform.search.space import make_searcher, num_samples

    spec = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({
        "model": {"options": {"width": 8}},
        "loss": {"l1": 1.0, "lpips": 0.0, "ssim": {"grid": [0.0, 0.2]}, "laplacian": {"uniform": [0.0, 1.0]}},
        "optimizer": {"lr": 1.0e-3},
        "search": {"num_trials": 50, "searcher": {"name": "grid", "grid_points": 3}, "max_concurrent": 1}}))
    model = SpaceModel.from_spec(spec)
    n = num_samples(spec, model)
    assert n == 6
    searcher = make_searcher(spec, model)
    got = []
    for i in range(n):
        cfg = searcher.suggest(f"g{i}")
        got.append((cfg["loss"]["ssim"], cfg["loss"]["laplacian"]))
        searcher.on_trial_complete(f"g{i}", {"val_psnr": 20.0})
    assert sorted(got) == sorted((s, lap) for s in (0.0, 0.2) for lap in (0.0, 0.5, 1.0))
    with pytest.raises(ConfigError, match="grid searcher needs a space without switch"):
        SpaceModel.from_spec(load_spec(SPACE)).grid(2)


def _bohb_spec():
    return load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({
        "model": {"size": "small", "options": {"width": 8}}, "search": {"scheduler": {"name": "bohb"}}}))


def test_bohb_suggests_inside_the_space():
    for name in ("hpbandster", "ConfigSpace"):
        pytest.importorskip(name, reason="BOHB's optional packages are absent: .venv/bin/pip install "
                                         "hpbandster==0.7.4 ConfigSpace==1.2.2 (requirements-test.txt has them)")
    from ray.tune.schedulers.hb_bohb import HyperBandForBOHB

    from platform.search.space import SpaceModel, make_scheduler, make_searcher, tuner_param_space

    spec = _bohb_spec()
    model = SpaceModel.from_spec(spec)
    searcher = make_searcher(spec, model)
    metric = spec["search"]["metric"]
    assert searcher.set_search_properties(metric, spec["search"]["mode"], tuner_param_space(spec, {}, model))
    low, high = spec["optimizer"]["lr"]["loguniform"]
    for i in range(4):
        cfg = searcher.suggest(f"b{i}")
        assert low <= cfg["optimizer"]["lr"] <= high
        for name, rng in spec["loss"].items():
            if isinstance(rng, dict) and "uniform" in rng:
                assert rng["uniform"][0] <= cfg["loss"][name] <= rng["uniform"][1], name
        searcher.on_trial_complete(f"b{i}", {metric: 20.0 + i, "training_iteration": 1})
    assert isinstance(make_scheduler(spec, model), HyperBandForBOHB)


def test_bohb_without_its_packages_offers_hyperband(monkeypatch):
    import sys

    from platform.search.space import make_searcher

    monkeypatch.setitem(sys.modules, "hpbandster", None)  # import hpbandster -> ImportError
    with pytest.raises(ConfigError, match="hyperband") as err:
        make_searcher(_bohb_spec())
    message = str(err.value)
    assert ".venv/bin/pip install hpbandster==0.7.4 ConfigSpace==1.2.2" in message and "\n" not in message
    # The driver says it before Ray starts, with the other checks of the space.
    from platform.search.driver import check_combination
    from platform.search.space import SpaceModel

    spec = _bohb_spec()
    with pytest.raises(ConfigError, match="pip install hpbandster"):
        check_combination(spec, SpaceModel.from_spec(spec))


def test_schedulers_are_selectable():
    from ray.tune.schedulers import HyperBandScheduler, PopulationBasedTraining

    from platform.search.resume import ResumableASHA
    from platform.search.space import make_scheduler

    base = {"model": {"options": {"width": 8}}}
    for name, cls in (("asha", ResumableASHA), ("hyperband", HyperBandScheduler), ("pbt", PopulationBasedTraining)):
        spec = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({**base, "search": {"scheduler": {"name": name}}}))
        assert isinstance(make_scheduler(spec), cls)
    spec = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({**base, "search": {"scheduler": {"name": "pbt"}}}))
    pbt = make_scheduler(spec)
    assert set(pbt._hyperparam_mutations) == {"loss", "optimizer"}  # the continuous keys: λ and lr
    assert set(pbt._hyperparam_mutations["loss"]) == {"l1", "lpips", "laplacian", "ssim"}


# --------------------------------------------------------------------------- budget
def test_budget_stops_launching_and_stops_running_trials_at_a_rung():
    from platform.search.budget import BudgetLimiter, BudgetTracker, rung_milestones

    assert rung_milestones(1, 2, 8) == [1, 2, 4, 8]
    assert rung_milestones(2, 3, 20) == [2, 6, 18, 20]
    t = BudgetTracker("unit-budget", usd=1.0, price_per_gpu_hour=2.0, price_per_cpu_hour=0.5, milestones=[1, 2, 4])
    t.start("a", gpus=0.25, cpus=2.0)  # $1.5 per hour
    t0 = t.trials["a"].since
    t.tick(now=t0 + 1200)  # 20 minutes: $0.5
    assert math.isclose(t.spent_usd, 0.5) and math.isclose(t.gpu_hours, 0.25 / 3) and math.isclose(t.cpu_hours, 2 / 3)
    t.trials["a"].since = None  # trial a ended at $0.5
    ok, _ = t.may_launch()
    assert ok  # 0.5 spent + 0.5 expected = 1.0, not past the budget
    t.trials["a"].usd = 0.6
    ok, why = t.may_launch()
    assert not ok and "would pass the dollar budget" in why

    class Inner:
        metric, mode = "m", "max"

        def suggest(self, trial_id):
            return {"x": 1}

    assert BudgetLimiter(Inner(), "unit-budget").suggest("b") == "FINISHED"
    t.trials["a"].usd = 1.2  # spent
    # Spent: a running trial stops at the end of this epoch, between rungs too (issue 15: budgets hold).
    assert t.should_stop("c", {"training_iteration": 3, "epoch": 3}) and t.stopped == {"c": 3}
    t2 = BudgetTracker("unit-budget-2", usd=None, time_s=10.0)
    t2.set_state({"elapsed_before": 11.0})
    assert "time budget" in t2.exhausted()
    # The spent budget stops the whole search under PBT (no searcher to stop launching), not otherwise.
    from platform.search.budget import BudgetStopper

    assert BudgetStopper("unit-budget-2", whole_search=True).stop_all()
    assert not BudgetStopper("unit-budget-2").stop_all()
    BudgetTracker("unit-budget-3", usd=None, time_s=1000.0)
    assert not BudgetStopper("unit-budget-3", whole_search=True).stop_all()


# --------------------------------------------------------------------------- retention
def _ckpt(root: Path, i: int, value: float | None) -> Path:
    d = root / f"checkpoint_{i:06d}"
    d.mkdir(parents=True)
    (d / "state.pt").write_bytes(b"x")
    if value is not None:
        (d / "metrics.json").write_text(json.dumps({"val_psnr": value}))
    return d


def test_retention_keeps_best_n_latest_and_registry_checkpoints(tmp_path):
    from platform.search.retention import prune_trial, sweep

    trial = tmp_path / "exp" / "trial_a"
    values = [20.0, 25.0, 22.0, 24.0, 21.0, 23.0]
    dirs = [_ckpt(trial, i, v) for i, v in enumerate(values)]
    protected = {str(dirs[0])}  # a registered model was made from the worst one
    deleted = prune_trial(trial, "val_psnr", "max", keep_best=2, protected=protected)
    left = sorted(p.name for p in trial.iterdir())
    # best two (25, 24), the latest (23) and the protected one (20)
    assert left == ["checkpoint_000000", "checkpoint_000001", "checkpoint_000003", "checkpoint_000005"]
    assert sorted(Path(d).name for d in deleted) == ["checkpoint_000002", "checkpoint_000004"]
    other = tmp_path / "exp" / "trial_b"
    for i, v in enumerate([5.0, 3.0, 4.0]):  # mode min: the lowest are best
        _ckpt(other, i, v)
    removed = sweep(other, "val_psnr", "min", keep_best=1)
    assert sorted(p.name for p in other.iterdir()) == ["checkpoint_000001", "checkpoint_000002"]
    assert list(removed) == [str(other)]


# --------------------------------------------------------------------------- packing
NAF = {"architecture": "nafnet", "size": "small",
       "options": {"width": 8, "enc_blk_nums": [1, 1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1]}}


def _cfg(batch: int, crop: int = 64) -> dict:
    return {"model": NAF, "task": {"crop": crop, "batch_size": batch}, "loss": {"l1": 1.0}, "train": {}}


def test_memory_estimate_is_parameters_plus_activations_linear_in_batch():
    from platform.search.packing import CUDA_CONTEXT_BYTES, estimate_peak_bytes
    from platform.train.loop import build_model

    kw = {"in_channels": 3, "out_channels": 3}
    e2, e4, e8 = (estimate_peak_bytes(_cfg(b), kw, device="cpu").bytes for b in (2, 4, 8))
    assert abs((e8 - e4) - 2 * (e4 - e2)) <= 8  # activations scale with the batch
    n_params = sum(p.numel() for p in build_model(_cfg(1), kw).parameters())
    act_per_image = (e4 - e2) / 2
    # weights + gradients + two AdamW moments in fp32 = 16 bytes per parameter, plus the CUDA context
    assert abs((e2 - 2 * act_per_image) - (16 * n_params + CUDA_CONTEXT_BYTES)) <= 16
    e_big = estimate_peak_bytes(_cfg(2, crop=128), kw, device="cpu").bytes
    assert abs((e_big - e2) - 3 * 2 * act_per_image) <= 16  # 4x the pixels: 4x the activations


def test_packing_sizes_gpu_share_from_the_estimate_and_after_an_oom():
    from platform.search.packing import TrialResources, memory_signature

    res = {"gpus_per_worker": 0.25, "cpus_per_worker": 1, "pack": True, "memory_headroom": 1.25,
           "gpu_memory_gb": 40}
    packer = TrialResources("unit-pack", res, {"in_channels": 3, "out_channels": 3})
    small = _cfg(4)
    pgf = packer(small)
    assert pgf.required_resources == {"CPU": 1.0, "GPU": 0.25}  # fits in a quarter: the requested share
    est = packer.estimates[memory_signature(small)].bytes
    packer.gpu_memory = 3 * est  # a GPU only 3x the trial's peak
    frac = packer(small).required_resources["GPU"]
    assert frac == pytest.approx(math.ceil(1.25 / 3 * 20 - 1e-9) / 20)
    assert frac * 3 > 1  # three of these are never placed on one GPU
    # search.repeat runs k trainers at once in the trial: k times the memory on its share.
    repeated = {**small, "_run": {"repeat": {"over": "seed", "k": 2}}}
    assert packer(repeated).required_resources["GPU"] == pytest.approx(math.ceil(2 * 1.25 / 3 * 20 - 1e-9) / 20)
    from platform.search.packing import gpu_memory_bytes

    assert gpu_memory_bytes({"gpu_memory_gb": 40}) == 40 * 2**30
    with pytest.MonkeyPatch.context() as mp:  # a CPU head: the nodes' environment names the GPU's memory
        mp.setenv("PLATFORM_GPU_MEMORY_GB", "24")
        assert gpu_memory_bytes({}) == 24 * 2**30
        mp.setenv("PLATFORM_GPU_MEMORY_GB", "lots")
        with pytest.raises(ConfigError, match="PLATFORM_GPU_MEMORY_GB"):
            gpu_memory_bytes({})
    packer.record_oom(small)
    assert packer(small).required_resources["GPU"] == 1.0
    assert TrialResources("unit-pack-ddp", {**res, "workers": 2}, {}, torch_trainer=True)(small).required_resources \
        == {"CPU": 0.1}


# --------------------------------------------------------------------------- repeats
def test_lockstep_repeats_report_per_epoch_means():
    from platform.train.session import Session
    from trainables.repeats import mean_metrics, run_lockstep

    order = []

    def fake_trainer(config, session):
        fold = config["task"].get("fold")
        for epoch in range(1, 4):
            order.append((epoch, fold))
            session.report({"epoch": epoch, "val_psnr": 10.0 * epoch + fold, "note": "x"}, None)

    class Recorder(Session):
        pass

    rec = Recorder()
    cfg = {"train": {"seed": 0}, "task": {}}
    last = run_lockstep(cfg, 3, "fold", rec, train_fn=fake_trainer)
    assert [r["epoch"] for r in rec.reports] == [1, 2, 3]
    assert [r["val_psnr"] for r in rec.reports] == [11.0, 21.0, 31.0]  # mean over folds 0, 1, 2
    assert rec.reports[0]["val_psnr_std"] == pytest.approx(math.sqrt(2 / 3)) and last["repeats"] == 3
    # lockstep: no replica starts epoch e+1 before every replica has reported epoch e
    epochs = [e for e, _ in order]
    assert all(epochs[i] <= epochs[i + 1] for i in range(len(epochs) - 1))
    assert mean_metrics([{"a": 1, "s": "x"}, {"a": 3, "s": "y"}]) == {"a": 2.0, "s": "x", "repeats": 2}

    def failing(config, session):
        session.report({"epoch": 1, "val_psnr": 1.0}, None)
        if config["train"]["seed"] == 1000:
            raise FloatingPointError("replica 1 diverged")
        session.report({"epoch": 2, "val_psnr": 1.0}, None)

    with pytest.raises(FloatingPointError, match="replica 1 diverged"):
        run_lockstep(cfg, 2, "seed", Recorder(), train_fn=failing)


def test_lockstep_repeats_with_the_real_trainer_over_folds(tmp_path):
    from platform.data.samples import resolve_data
    from platform.train.session import Session
    from trainables.repeats import run_lockstep

    spec = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({
        "task": {"crop": 48, "crops_per_epoch": 8, "batch_size": 4, "val_max_side": 96},
        "model": {"options": {"width": 8}}, "loss": {"l1": 1.0, "lpips": 0.0, "ssim": 0.0, "laplacian": 0.0},
        "optimizer": {"lr": 1.0e-3}, "train": {"epochs": 1, "image_every": 1}}))
    import optuna

    cfg = SpaceModel.from_spec(spec)(optuna.create_study().ask())
    cfg["task"]["data"] = str(resolve_data(cfg["task"]["data"]))
    session = Session(checkpoint_root=tmp_path)
    run_lockstep(cfg, 2, "fold", session)
    ckpt = session.checkpoints[-1]
    reps = [json.loads((ckpt / f"rep{i}" / "metrics.json").read_text())["val_psnr"] for i in range(2)]
    assert reps[0] != reps[1]  # two different validation folds
    assert session.reports[-1]["val_psnr"] == pytest.approx(sum(reps) / 2)
    assert (ckpt / "state.pt").is_file() and (ckpt / "rep1" / "state.pt").is_file()


# --------------------------------------------------------------------------- failure reasons
def test_failure_reasons_are_classified():
    from platform.search.failures import classify_failure

    nan = ("Traceback...\nray.exceptions.RayTaskError(NonFiniteLossError): ray::ImplicitFunc.train()\n"
           "platform.train.loop.NonFiniteLossError: training loss became nan at epoch 1; stopping this trial")
    assert classify_failure(nan) == "failed (nan-loss): training loss became nan at epoch 1; stopping this trial"
    oom = "trainables.fewshot.TrialOutOfMemoryError: CUDA out of memory: Tried to allocate 2.00 GiB"
    assert classify_failure(oom).startswith("failed (cuda-oom)")
    exc = "Traceback\n  File x\nValueError: task.crops_per_epoch (32) is smaller than batch_size x workers"
    assert classify_failure(exc) == ("failed (exception): ValueError: task.crops_per_epoch (32) is smaller than "
                                     "batch_size x workers")


# --------------------------------------------------------------------------- dashboards
def test_grafana_dashboard_plots_the_metrics_the_driver_exports():
    import re

    from platform.search import metrics as m

    dash = json.loads((Path(__file__).resolve().parent.parent / "dashboards" / "grafana_search.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {x for e in exprs for x in re.findall(r"ray_platform_\w+", e)}
    exported = {"ray_" + n for n in re.findall(r'Gauge\("(platform_\w+)"', Path(m.__file__).read_text())}
    assert used and used <= exported and exported <= used | {"ray_platform_search_gpu_hours"}
    assert any("ray_node_gpus_utilization" in e for e in exprs)  # Ray's own metrics beside ours
    assert {v["name"] for v in dash["templating"]["list"]} >= {"search", "DS_PROMETHEUS"}


# --------------------------------------------------------------------------- progress and summary
def test_progress_reports_running_finished_best_and_eta(caplog, monkeypatch):
    import logging
    from types import SimpleNamespace

    from platform.search import progress

    clock = iter([0.0, 30.0, 30.0, 60.0, 60.0])  # start, result, its log line, done, its log line
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    caplog.set_level(logging.INFO, logger="platform.search")
    p = progress.ProgressReporter(total=4, metric="val_psnr", mode="max", concurrency=2, min_interval_s=0)
    a, b = SimpleNamespace(trial_id="a", status="RUNNING"), SimpleNamespace(trial_id="b", status="RUNNING")
    p.result([a, b], a, {"epoch": 1, "val_psnr": 20.5})          # t = 30 s
    b.status = "TERMINATED"
    p.done([a, b], b, "finished")                                # t = 60 s: 1 of 4 done
    lines = [r.getMessage() for r in caplog.records]
    assert "[trial a epoch 1: val_psnr=20.500] trials: 2 running, 0/4 finished, best val_psnr 20.500 (trial a)" \
        in lines[0] and "elapsed 0m30s" in lines[0]
    assert "[trial b finished] trials: 1 running, 1/4 finished" in lines[1]
    assert lines[1].endswith("elapsed 1m00s, ETA ~3m00s")  # 60 s per finished trial x 3 left


def test_summary_table_has_the_searched_values_epochs_metrics_and_stop_reason():
    from platform.search.summary import format_table

    rows = [{"trial": "t1", "optimizer.lr": 0.001, "loss.l1": 0.75, "epochs": 6, "val_psnr": 22.41234,
             "val_ssim": 0.7412, "stop": "completed"},
            {"trial": "t2", "optimizer.lr": 0.01, "loss.l1": 0.5, "epochs": 2, "val_psnr": None,
             "val_ssim": None, "stop": "failed (nan-loss): training loss became nan at epoch 2"}]
    lines = format_table(rows, "val_psnr").splitlines()
    assert lines[0].split() == ["trial", "optimizer.lr", "loss.l1", "epochs", "val_psnr", "val_ssim", "stop"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split()[:7] == ["t1", "0.001", "0.75", "6", "22.41", "0.7412", "completed"]
    assert lines[3].split()[:6] == ["t2", "0.01", "0.5", "2", "-", "-"] and "failed (nan-loss)" in lines[3]
    assert format_table([], "val_psnr") == "(no trials)"
