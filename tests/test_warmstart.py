"""Warm start without Ray: earlier trials mapped between spaces, tagged in the sampler's study,
champion weights resolved and loaded with their counts, bad input named."""

from __future__ import annotations

import logging

import optuna
import pytest
import torch

from platform.config import load_spec
from platform.errors import ConfigError
from platform.search.conditional import SpaceModel
from platform.search.presets import cpu_nafnet
from platform.search.warmstart import (
    TAG,
    EarlierTrial,
    Outside,
    Source,
    WarmStart,
    best_points,
    gather,
    map_trial,
    parse_value,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

OLD_SPACE = {"model": {"options": {"width": {"choice": [8, 16]}}},
             "optimizer": {"lr": {"loguniform": [1.0e-4, 2.0e-3]}},
             "loss": {"lpips": 0.0}}
# The new shot's space: width 16 vanished, the learning-rate range shrank.
NEW_SPACE = {"model": {"options": {"width": {"choice": [8]}}},
             "optimizer": {"lr": {"loguniform": [1.0e-4, 1.0e-3]}},
             "loss": {"lpips": 0.0}}


def _spec(space: dict, **warm):
    return load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet({**space, "warm_start": warm}))


def _trial(tid: str, value: float, **config) -> EarlierTrial:
    base = {"model.architecture": "nafnet", "loss.l1": 0.8, "loss.laplacian": 0.5, "loss.ssim": 0.2, "loss.lpips": 0.0}
    return EarlierTrial("parent0", tid, f"run{tid}", {**base, **config}, value)


# --------------------------------------------------------------------------- mapping between spaces
def test_trials_map_onto_a_changed_space_and_outsiders_are_dropped():
    model = SpaceModel.from_spec(_spec(NEW_SPACE))
    kept = map_trial(model, _trial("a", 24.0, **{"model.options.width": 8, "optimizer.lr": 5.0e-4}))
    assert kept.params == {"model.options.width": 8, "loss.l1": 0.8, "loss.laplacian": 0.5, "loss.ssim": 0.2,
                           "optimizer.lr": 5.0e-4}
    assert kept.distributions["optimizer.lr"] == optuna.distributions.FloatDistribution(1.0e-4, 1.0e-3, log=True)
    assert kept.distributions["model.options.width"] == optuna.distributions.CategoricalDistribution([8])
    with pytest.raises(Outside, match=r"`model.options.width` is 16, outside its search space here \(8\)"):
        map_trial(model, _trial("b", 25.0, **{"model.options.width": 16, "optimizer.lr": 5.0e-4}))
    with pytest.raises(Outside, match=r"`optimizer.lr` is 0.0015, outside .*\[0.0001, 0.001\]"):
        map_trial(model, _trial("c", 23.0, **{"model.options.width": 8, "optimizer.lr": 1.5e-3}))
    with pytest.raises(Outside, match="architecture` is 'unet'"):
        map_trial(model, _trial("d", 23.0, **{"model.architecture": "unet", "optimizer.lr": 5.0e-4}))


def test_conditional_space_names_and_flags():
    tree = {"model": {"architecture": {"choice": ["nafnet", "convnext_unet"]},
                      "size": {"switch": "model.architecture",
                               "cases": {"nafnet": {"choice": ["small", "base"]},
                                         "convnext_unet": {"choice": ["nano"]}}}},
            "loss": {"l1": 1.0, "lpips": {"optional": {"uniform": [0.05, 0.5]}}}}
    model = SpaceModel(tree)
    on = map_trial(model, EarlierTrial("p", "a", "r", {"model.architecture": "nafnet", "model.size": "base",
                                                       "loss.lpips": 0.1}, 1.0))
    assert on.params == {"model.architecture": "nafnet", "model.size[nafnet]": "base", "loss.lpips?": True,
                         "loss.lpips": 0.1}
    off = map_trial(model, EarlierTrial("p", "b", "r", {"model.architecture": "convnext_unet", "model.size": "nano",
                                                        "loss.lpips": 0.0}, 1.0))
    assert off.params == {"model.architecture": "convnext_unet", "model.size[convnext_unet]": "nano",
                          "loss.lpips?": False}
    with pytest.raises(Outside, match="'tiny'"):  # a case's choice that vanished
        map_trial(model, EarlierTrial("p", "c", "r", {"model.architecture": "convnext_unet", "model.size": "tiny"},
                                      1.0))
    # The mapped trials carry the distributions the define-by-run space asks for: Optuna accepts them
    # and goes on sampling the same names.
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(n_startup_trials=1, seed=0))
    WarmStart([], [], [on, off]).feed(study)
    for _ in range(3):
        trial = study.ask()
        cfg = model(trial)
        sizes = {"nafnet": ("small", "base"), "convnext_unet": ("nano",)}
        assert cfg["model"]["size"] in sizes[cfg["model"]["architecture"]]
        study.tell(trial, 0.5)


def test_best_points_keep_only_values_valid_in_the_new_space_deduplicated(caplog):
    model = SpaceModel.from_spec(_spec(NEW_SPACE))
    trials = [_trial("b", 26.0, **{"model.options.width": 16, "optimizer.lr": 5.0e-4}),
              _trial("b2", 25.5, **{"model.options.width": 16, "optimizer.lr": 5.0e-4}),
              _trial("a", 25.0, **{"model.options.width": 8, "optimizer.lr": 3.0e-3})]
    source = Source("shot_a", "parent0", "shot_a", "run", "val_psnr", "max", trials)
    with caplog.at_level(logging.INFO):
        points = best_points(model, source, 3)
    # width 16 is left to the sampler, and b and b2 then give the same point: kept once.
    assert points == [{"loss.l1": 0.8, "loss.laplacian": 0.5, "loss.ssim": 0.2, "optimizer.lr": 5.0e-4},
                      {"model.options.width": 8, "loss.l1": 0.8, "loss.laplacian": 0.5, "loss.ssim": 0.2}]
    assert "model.options.width=16 is outside this space" in caplog.text


def test_param_text_comes_back_as_the_value():
    assert [parse_value(t) for t in ("8", "1e-05", "0.5", "None", "True", "small", "[1, 1, 1]", "{}")] == \
        [8, 1e-05, 0.5, None, True, "small", [1, 1, 1], {}]


# --------------------------------------------------------------------------- from MLflow
def _earlier_search(client, name: str, trials: list[tuple[dict, list[float] | None]], metric: str = "val_psnr"):
    exp = client.create_experiment(name)
    parent = client.create_run(exp, run_name=f"{name}-1", tags={"search_space": f"/x/search_spaces/{name}.yaml"})
    pid = parent.info.run_id
    client.log_param(pid, "metric", metric)
    client.log_param(pid, "mode", "max")
    for i, (params, curve) in enumerate(trials):
        run = client.create_run(exp, tags={"mlflow.parentRunId": pid, "trial_id": f"t{i}"})
        for k, v in params.items():
            client.log_param(run.info.run_id, k, str(v))
        for epoch, value in enumerate(curve or [], 1):
            client.log_metric(run.info.run_id, metric, value, step=epoch)
        client.set_terminated(run.info.run_id)
    client.set_terminated(pid)
    return pid


@pytest.fixture
def store(tmp_cwd):
    import mlflow
    from mlflow.tracking import MlflowClient

    from platform.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient()


def test_gather_reads_earlier_searches_feeds_the_study_and_tags_its_trials(store, caplog):
    full = {"model.architecture": "nafnet", "loss.l1": 0.9, "loss.laplacian": 0.1, "loss.ssim": 0.1,
            "loss.lpips": 0.0, "task.crop": 64}
    pid = _earlier_search(store, "shot_a", [
        ({**full, "model.options.width": 8, "optimizer.lr": 5.0e-4}, [20.0, 23.0, 22.5]),   # kept, best 23
        ({**full, "model.options.width": 16, "optimizer.lr": 4.0e-4}, [21.0, 24.0]),        # width vanished
        ({**full, "model.options.width": 8, "optimizer.lr": 1.8e-3}, [19.0]),               # lr range shrank
        ({**full, "model.options.width": 8, "optimizer.lr": 2.0e-4}, None),                 # failed: no value
    ])
    spec = _spec(NEW_SPACE, searches=["shot_a"], points=1)
    model = SpaceModel.from_spec(spec)
    with caplog.at_level(logging.INFO):
        warm = gather(store, spec, model)
    assert [s.run_id for s in warm.sources] == [pid]
    source = warm.sources[0]
    assert [t.value for t in source.trials] == [24.0, 23.0, 19.0] and source.fed == 1 and len(source.dropped) == 2
    assert "Dropped from the sampler's history" in caplog.text and "is 16, outside" in caplog.text
    # The best earlier configuration, less the width this space lost, is evaluated first.
    assert warm.points == [{"loss.l1": 0.9, "loss.laplacian": 0.1, "loss.ssim": 0.1, "optimizer.lr": 4.0e-4}]

    from platform.search.space import make_searcher

    searcher = make_searcher(spec, model, warm=warm)
    study = searcher.searcher._ot_study
    fed = [t for t in study.trials if TAG in t.user_attrs]
    assert len(fed) == 1 and fed[0].value == 23.0 and fed[0].user_attrs[TAG] == pid
    assert fed[0].params["optimizer.lr"] == 5.0e-4
    config = searcher.suggest("new-1")  # the new search's first trial is the earlier best point
    assert config["optimizer"]["lr"] == 4.0e-4 and config["loss"]["l1"] == 0.9
    searcher.on_trial_complete("new-1", {"val_psnr": 21.0, "training_iteration": 1})
    # The study holds one trial of this search (the earlier one only informs the sampler).
    own = [t for t in study.trials if TAG not in t.user_attrs and t.state == optuna.trial.TrialState.COMPLETE]
    assert len(own) == 1 and own[0].value == 21.0
    assert warm.feed(study) == 1  # a restored study is not fed twice


def test_unknown_search_and_other_metric_are_named(store):
    with pytest.raises(ConfigError, match=r"--warm-start shot_x: no search .shot_x. .*experiments there: none"):
        gather(store, _spec(NEW_SPACE, searches=["shot_x"]), SpaceModel.from_spec(_spec(NEW_SPACE)))
    with pytest.raises(ConfigError, match="no MLflow run with that id"):
        gather(store, _spec(NEW_SPACE, searches=["0" * 32]), SpaceModel.from_spec(_spec(NEW_SPACE)))
    _earlier_search(store, "seg_shot", [({"model.architecture": "nafnet"}, [0.5])], metric="val_miou")
    with pytest.raises(ConfigError, match="optimised val_miou"):
        gather(store, _spec(NEW_SPACE, searches=["seg_shot"]), SpaceModel.from_spec(_spec(NEW_SPACE)))


# --------------------------------------------------------------------------- champion weights
def _champion_file(path, width: int = 8, architecture: str = "nafnet"):
    from platform.models import create
    from platform.safeio import save_atomic, to_json_text

    options = {"width": width, "enc_blk_nums": [1, 1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1]}
    torch.manual_seed(1)
    model = create(architecture, size="small", **(options if architecture == "nafnet" else {}))
    config = {"model": {"architecture": architecture, "size": "small", "options": options}}
    save_atomic({"model": model.state_dict(), "config": to_json_text(config)}, path)
    return model


def _trial_config(path, width: int, architecture: str = "nafnet", init: str = "champion") -> dict:
    return {"model": {"architecture": architecture, "size": "small",
                      "options": {"width": width, "enc_blk_nums": [1, 1, 1], "middle_blk_num": 1,
                                  "dec_blk_nums": [1, 1, 1]}},
            "warm_start": {"init": init, "weights": "models:/shot_a@champion"}, "_run": {"warm_weights": str(path)}}


def test_trials_start_from_the_champion_with_load_counts(tmp_path, caplog):
    from platform.models import create
    from platform.train.warm import init_from_champion

    champion = _champion_file(tmp_path / "weights.pt")
    opts = {"enc_blk_nums": [1, 1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1]}
    same = create("nafnet", size="small", width=8, **opts)
    with caplog.at_level(logging.INFO):
        counts = init_from_champion(same, _trial_config(tmp_path / "weights.pt", 8))
    total = len(same.state_dict())
    assert counts["warm_init_transferred"] == total == counts["warm_init_target_tensors"]
    assert counts["warm_init_missing"] == counts["warm_init_unexpected"] == counts["warm_init_shape_mismatched"] == 0
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), champion.state_dict().values()))
    assert f"{total}/{total} model tensors transferred" in caplog.text
    assert "the champion models:/shot_a@champion" in caplog.text

    wider = create("nafnet", size="small", width=16, **opts)  # the same architecture at another width: partial
    counts = init_from_champion(wider, _trial_config(tmp_path / "weights.pt", 16))
    assert counts["warm_init_shape_mismatched"] > 0
    assert counts["warm_init_transferred"] < counts["warm_init_target_tensors"]
    assert (counts["warm_init_transferred"] + counts["warm_init_shape_mismatched"] + counts["warm_init_missing"]
            == counts["warm_init_target_tensors"] == len(wider.state_dict()))

    other = create("unet", size="small")  # another architecture starts from scratch
    assert init_from_champion(other, _trial_config(tmp_path / "weights.pt", 8, "unet")) == {
        "warm_init_transferred": 0.0, "warm_init_fraction": 0.0}
    assert init_from_champion(same, _trial_config(tmp_path / "weights.pt", 8, init="scratch")) is None


def test_init_from_resolves_the_champion_or_says_what_to_do(store, tmp_path):
    from platform.search.warminit import resolve, stage

    with pytest.raises(ConfigError, match=r"--init-from models:/shot_a@champion: no such model version .*no model is "
                                          r"registered there"):
        resolve("models:/shot_a@champion")
    with pytest.raises(ConfigError, match="neither a model URI nor an existing file"):
        resolve("shot_a-champion")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="--init-from .*junk.pt"):
        resolve(str(tmp_path / "junk.pt"))
    _champion_file(tmp_path / "weights.pt")
    weights = resolve(str(tmp_path / "weights.pt"))
    assert weights.architecture == "nafnet"
    staged = stage(weights, str(tmp_path / "exp"))
    assert staged == str(tmp_path / "exp" / "warm_start" / "weights.pt") and (tmp_path / "exp" / "warm_start").is_dir()


def test_trial_config_carries_the_init_choice_only_when_weights_are_given():
    cold = SpaceModel.from_spec(_spec(NEW_SPACE))
    assert "warm_start" not in cold.tree
    searched = SpaceModel.from_spec(_spec(NEW_SPACE, weights="models:/shot_a@champion",
                                          init={"choice": ["scratch", "champion"]}))
    assert "warm_start.init" in searched.searched_paths()
    cfg = searched.resolve(lambda p: p.options[0])
    assert cfg["warm_start"] == {"init": "scratch", "weights": "models:/shot_a@champion"}
    with pytest.raises(ConfigError, match="warm_start.init"):
        _spec(NEW_SPACE, init="pretrained")
