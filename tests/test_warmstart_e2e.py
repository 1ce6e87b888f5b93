"""End to end: a shot's search warm-started from another shot's search and champion, its report
and the show's page (real Ray Tune searches of a width-8 NAFNet, one trial each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from platform.search import SearchOptions, run_search
from platform.search.presets import cpu_nafnet
from tests.netutil import keep_local_ray

pytestmark = pytest.mark.slow

SHOT = {
    "task": {"crop": 48, "crops_per_epoch": 32, "batch_size": 4, "val_max_side": 192},
    "model": {"options": {"width": 8}},
    "loss": {"lpips": 0.0},
    "train": {"epochs": 2, "image_every": 2},
    "show": "demo_show",
}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    yield from keep_local_ray("nafnet_fewshot")


def _children(client, parent_id: str) -> list:
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def test_warm_started_shot_learns_from_the_earlier_search_and_champion(tmp_cwd):
    from mlflow.tracking import MlflowClient

    from platform.tracking import tracking_uri

    # Shot A: a cold search whose trial becomes the champion (floors off: a 2-epoch model need not beat them).
    a = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=1, experiment="shot_a",
                                 overrides=cpu_nafnet({**SHOT, "promotion": {"floors": False}})))
    assert a.promotion.promoted
    # Shot B (another sample set, the same grade): warm-started from A's search and champion.
    b = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=1, experiment="shot_b",
                                 overrides=cpu_nafnet({**SHOT, "task": {**SHOT["task"], "data": "sample:vfx_grade_b"},
                                                       "train": {"epochs": 1, "image_every": 1}}),
                                 warm_start=["shot_a"], init_from="models:/shot_a@champion"))
    client = MlflowClient(tracking_uri())
    a_trial = client.get_run(a.best["run_id"])
    kids = _children(client, b.parent_run_id)
    # The earlier trial informed the sampler but is no trial of B: one row, one run, the promoted one B's own.
    assert len(b.rows) == 1 and len(kids) == 1 and kids[0].info.run_id == b.best["run_id"]
    parent = client.get_run(b.parent_run_id)
    assert parent.data.tags["trials"] == "1" and parent.data.tags["warm_start.trials_fed"] == "1"
    assert parent.data.tags["warm_start.searches"] == f"shot_a ({a.parent_run_id})"
    assert parent.data.tags["warm_start.weights_version"] == "1" and parent.data.tags["show"] == "demo_show"
    assert b.promotion.version == "1" and client.get_model_version("shot_b", "1").run_id == kids[0].info.run_id
    # A's best configuration ran first, from A's champion: every tensor transferred.
    trial = kids[0]
    for key in ("optimizer.lr", "loss.l1", "loss.laplacian", "loss.ssim"):
        assert trial.data.params[key] == a_trial.data.params[key], key
    m = trial.data.metrics
    assert m["warm_init_transferred"] == m["warm_init_target_tensors"] > 0
    assert m["warm_init_missing"] == m["warm_init_unexpected"] == m["warm_init_shape_mismatched"] == 0
    assert trial.data.params["warm_start.init"] == "champion"
    assert Path(b.experiment_path, "warm_start", "weights.pt").is_file()

    page = Path(b.report_path).read_text()
    assert "Warm start: where this search" in page and "models:/shot_a@champion" in page
    assert f"{a.parent_run_id}" in page and "1 of 1 trial(s) started from them" in page

    from platform.report.show import build_show

    show = build_show(["demo_show"], client=client).read_text()
    assert show.count("<tr><td>shot_") == 2 and 'href="shot_a-' in show and 'href="shot_b-' in show
    assert "v1 " in show and "shot_a + weights models:/shot_a@champion (v1)" in show  # where B learnt from
