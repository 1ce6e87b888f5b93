"""The search engine on a local Ray: failures, budget, GPU packing, crash + resume.

One Ray instance serves the module (with a fake GPU: Ray accepts ``num_gpus=1`` on a machine
without one; the trials never touch CUDA), so each search pays Ray's start-up once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platform.search import SearchOptions, run_search
from platform.search.presets import cpu_nafnet
from tests.netutil import keep_local_ray

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"

TINY = {
    "task": {"crop": 48, "crops_per_epoch": 32, "batch_size": 4, "val_max_side": 192},
    "model": {"options": {"width": 8}},
    "loss": {"l1": 1.0, "lpips": 0.0, "laplacian": 0.0, "ssim": 0.0},
    "optimizer": {"lr": {"loguniform": [3.0e-4, 3.0e-3]}},
}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    yield from keep_local_ray("nafnet_fewshot", num_gpus=1)


def _client():
    from mlflow.tracking import MlflowClient

    from platform.tracking import tracking_uri

    return MlflowClient(tracking_uri())


def _children(client, parent_id: str) -> list:
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def test_failures_stay_in_their_trial_retention_and_report(tmp_cwd):
    """A NaN-producing config and an exception fail only their own trial, with their reasons;
    the good trial keeps at most best-1 + latest checkpoints; the report is written and logged."""
    overrides = {
        **TINY,
        "task": {**TINY["task"], "batch_size": {"choice": [4, 64]}},  # 64 > 32 crops: the trainer raises
        "optimizer": {"lr": {"choice": [1.0e-3, 1.0e6]}},  # 1e6 diverges to NaN in the first epoch
        "train": {"epochs": 3, "image_every": 1},
        "search": {"max_concurrent": 1, "scheduler": {"name": "fifo"}, "checkpoints": {"keep_best": 1},
                   "cost": {"metric": "params"},
                   "points_to_evaluate": [{"optimizer.lr": 1.0e6, "task.batch_size": 4},
                                          {"optimizer.lr": 1.0e-3, "task.batch_size": 64},
                                          {"optimizer.lr": 1.0e-3, "task.batch_size": 4}]},
    }
    out = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=3, overrides=cpu_nafnet(overrides), promote=False))
    by_stop = {r["stop"].split(":")[0]: r for r in out.rows}
    assert set(by_stop) == {"completed", "failed (nan-loss)", "failed (exception)"}, [r["stop"] for r in out.rows]
    assert "training loss became nan at epoch 1" in by_stop["failed (nan-loss)"]["stop"]
    assert "ValueError" in by_stop["failed (exception)"]["stop"] and "crops_per_epoch" in by_stop[
        "failed (exception)"]["stop"]
    good = by_stop["completed"]
    assert good["epochs"] == 3 and good["val_psnr"] > 15 and good["cost_params_m"] > 0

    # Retention: best 1 + the latest, on disk.
    trial_dir = Path(out.experiment_path) / f"trial_{good['trial']}"
    ckpts = sorted(p.name for p in trial_dir.glob("checkpoint_*"))
    df = good["result"].metrics_dataframe
    best_idx = int(df["val_psnr"].idxmax())
    assert 1 <= len(ckpts) <= 2 and f"checkpoint_{len(df) - 1:06d}" in ckpts and f"checkpoint_{best_idx:06d}" in ckpts

    client = _client()
    kids = _children(client, out.parent_run_id)
    assert sorted(k.data.tags["stop_reason"].split(":")[0] for k in kids) == sorted(by_stop)
    assert {k.info.status for k in kids} == {"FINISHED", "FAILED"}
    parent = client.get_run(out.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["cpu_hours"] > 0

    # The report: written, self-contained, logged to the parent run.
    page = Path(out.report_path).read_text()
    assert page.count("data:image/png;base64,") >= 4  # history, curves, Pareto, validation grid (+ more)
    assert "failed (nan-loss)" in page and "Pareto front" in page and "http" not in page.split("<body>")[1]
    assert [a.path for a in client.list_artifacts(out.parent_run_id, "report")]


def test_dollar_budget_stops_new_trials_at_the_limit(tmp_cwd):
    """$36 per CPU-hour and a $0.01 budget: one CPU-second. The first trial passes the budget,
    no further trial is launched, and the running one stops at the end of the epoch that crossed
    it (epoch 1), not at its first rung (epoch 2)."""
    overrides = {**TINY, "train": {"epochs": 3, "image_every": 3},
                 "search": {"max_concurrent": 1, "scheduler": {"name": "asha", "grace_period": 2,
                                                               "reduction_factor": 2},
                            "budget": {"usd": 0.01, "price_per_cpu_hour": 36.0}, "report": False}}
    out = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=4, overrides=cpu_nafnet(overrides), promote=False))
    assert len(out.rows) == 1
    row = out.rows[0]
    assert row["stop"].startswith("stopped by budget at epoch 1 (rung 0)"), row["stop"]
    assert row["epochs"] == 1
    assert out.spend["spend_usd"] >= 0.01
    parent = _client().get_run(out.parent_run_id)
    assert parent.data.metrics["spend_usd"] == pytest.approx(out.spend["spend_usd"])
    assert "dollar budget spent" in parent.data.tags["budget_exhausted"]


def test_four_trials_share_one_fake_gpu(tmp_cwd):
    """gpus_per_worker 0.25 on one (fake) GPU: four trials run at the same time."""
    overrides = {**TINY, "train": {"epochs": 1, "image_every": 1},
                 "resources": {"gpus_per_worker": 0.25, "cpus_per_worker": 1, "gpu_memory_gb": 16},
                 "search": {"max_concurrent": 4, "scheduler": {"name": "fifo"}, "report": False}}
    out = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=4, overrides=cpu_nafnet(overrides), promote=False))
    assert len(out.rows) == 4 and all(r["stop"] == "completed" for r in out.rows)
    kids = _children(_client(), out.parent_run_id)
    assert len(kids) == 4 and {k.data.tags["resources.gpu"] for k in kids} == {"0.25"}
    # every trial started before any trial ended: all four held their quarter GPU at once
    assert max(k.info.start_time for k in kids) < min(k.info.end_time for k in kids)


def _tune_state(storage: Path) -> dict[str, tuple[str, int]]:
    """{trial_id: (status, checkpointed epochs)} in Tune's newest saved experiment state (what a
    resume sees). Tune records a reported epoch before the checkpoint that came with it (saved a
    moment later), so the epochs counted are those whose checkpoint the state names; the trial's
    checkpoint manager is a pickle, read here as bytes and never loaded."""
    files = sorted(storage.glob("*/experiment_state-*.json"), key=lambda f: f.stat().st_mtime)
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text())
        out = {}
        for trial_json, meta_json in state["trial_data"]:
            trial, meta = json.loads(trial_json), json.loads(meta_json)
            blob = bytes.fromhex((meta.get("checkpoint_manager") or {}).get("value", ""))
            named = [int(n) for n in re.findall(rb"checkpoint_(\d{6})", blob)]
            out[trial["trial_id"]] = (trial["status"], max(named) + 1 if named else 0)
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # caught mid-write


def _kill_when_saved_mid_trial(storage: Path, proc: subprocess.Popen, epochs: int, timeout: float = 420.0):
    """SIGKILL the driver as soon as Tune's saved state holds a finished trial and a running one
    with at least one checkpointed epoch; returns that state."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the driver exited before it could be killed (rc {proc.returncode})")
            state = _tune_state(storage)
            done = [t for t, (st, _) in state.items() if st == "TERMINATED"]
            running = [t for t, (st, ep) in state.items() if st == "RUNNING" and 1 <= ep < epochs]
            if done and running:
                os.killpg(proc.pid, signal.SIGKILL)
                return state
            time.sleep(0.2)
        raise AssertionError("the search never reached a finished + a running trial")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_resume_after_the_driver_is_killed(tmp_cwd):
    """SIGKILL the driver mid-search, then --resume: every trial exactly once, one parent run,
    the finished trial not re-run, the running one resumed from its checkpoint."""
    from mlflow.tracking import MlflowClient

    storage = tmp_cwd / "ray"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PLATFORM_KEEP_RAY": ""}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "platform.search", str(DATA / "search_resume.yaml"), "--no-promote",
           "--storage", str(storage), "--num-cpus", "4"]
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "1"  # save Tune's state often: the kill below waits for a save mid-trial
    with open(tmp_cwd / "driver.log", "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=tmp_cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        state = _kill_when_saved_mid_trial(storage, proc, epochs=4)
    finished_before = {t for t, (st, _) in state.items() if st == "TERMINATED"}
    running_before = {t for t, (st, ep) in state.items() if st == "RUNNING" and ep >= 1}

    from platform.tracking import tracking_uri

    client = MlflowClient(tracking_uri())  # the subprocess's store (this test's directory)
    exp = client.get_experiment_by_name("search_resume")
    parents = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"  # killed: never closed
    before = {k.data.tags["trial_id"]: k.info.run_id for k in _children(client, parents[0].info.run_id)}
    first_run_ids = {t: before[t] for t in finished_before}

    out = run_search(SearchOptions(str(DATA / "search_resume.yaml"), resume=True, storage=str(storage),
                                   promote=False))
    assert out.parent_run_id == parents[0].info.run_id
    trials = [r["trial"] for r in out.rows]
    assert len(trials) == 3 == len(set(trials)) and all(r["stop"] == "completed" for r in out.rows)
    assert finished_before <= set(trials)

    parents = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    kids = _children(client, out.parent_run_id)
    assert sorted(k.data.tags["trial_id"] for k in kids) == sorted(trials)
    for k in kids:  # each epoch logged once, whatever was re-run after the resume
        assert [m.step for m in client.get_metric_history(k.info.run_id, "val_psnr")] == [1, 2, 3, 4]
    for t, rid in first_run_ids.items():  # the finished trial kept its run and was not run again
        assert {k.data.tags["trial_id"]: k.info.run_id for k in kids}[t] == rid
        lines = (Path(out.experiment_path) / f"trial_{t}" / "result.json").read_text().splitlines()
        assert len(lines) == 4
    # the trial that was running resumed from its checkpoint instead of starting over
    assert running_before and running_before <= set(trials)
    for t in running_before:
        results = [json.loads(x) for x in (Path(out.experiment_path) / f"trial_{t}" / "result.json")
                   .read_text().splitlines()]
        assert any(r["iterations_since_restore"] < r["training_iteration"] for r in results), results


# --------------------------------------------------------------------------- issue 15.4: secrets
PASSWORD = "Pw-7f3c9a1e5b"
KEY_ID = "AKIAZZTESTKEY7F3C9A1"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYTESTSECRET"


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server on 127.0.0.1 (its own SQLite store and artifact folder)."""
    import urllib.request

    from netutil import free_ports

    port = free_ports(1, "127.0.0.1")[0]
    srv = tmp_path / "server"
    srv.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{srv / 'mlflow.db'}", "--serve-artifacts",
                             "--artifacts-destination", str(srv / "artifacts"), "--workers", "1"],
                            cwd=srv, stdout=open(srv / "server.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((srv / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _leaks(text: str) -> list[str]:
    return [s for s in (PASSWORD, KEY_ID, SECRET) if s in text]


def test_no_secret_leaves_the_process(tmp_cwd, mlflow_server, monkeypatch, caplog, capfd):
    """Credentials in the tracking URI and the AWS variables appear in no log line, MLflow
    param or tag, report, or file of the Ray experiment folder (Tune's pickled state included)."""
    import logging

    from mlflow.tracking import MlflowClient

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{PASSWORD}@127.0.0.1:{mlflow_server}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    caplog.set_level(logging.DEBUG, logger="platform")
    overrides = {**TINY, "train": {"epochs": 2, "image_every": 1},
                 "search": {"max_concurrent": 1, "scheduler": {"name": "fifo"}, "report": True}}
    out = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=1, overrides=cpu_nafnet(overrides),
                                   storage=str(tmp_cwd / "ray"), experiment="secrets-test", promote=False))
    logging.getLogger("platform.test").info("the URI was %s", os.environ["MLFLOW_TRACKING_URI"])  # scrubbed too

    client = MlflowClient(f"http://127.0.0.1:{mlflow_server}")
    exp = client.get_experiment_by_name("secrets-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and runs[0].info.status == "FINISHED"
    texts = {"logs": caplog.text, "stdio": "".join(capfd.readouterr())}
    for run in runs:
        texts[f"run {run.info.run_id}"] = json.dumps([run.data.params, run.data.tags])
    texts["report"] = Path(out.report_path).read_text()
    assert "127.0.0.1" in texts["report"] and "alice" not in texts["report"]
    for f in [*tmp_cwd.rglob("*")]:
        if f.is_file() and "server" not in f.parts:
            texts[str(f)] = f.read_bytes().decode("latin-1")
    assert any("tuner.pkl" in k for k in texts) and any("experiment_state" in k for k in texts)
    leaked = {where: _leaks(text) for where, text in texts.items() if _leaks(text)}
    assert not leaked, leaked


def test_ray_nodes_get_only_the_code_folders():
    """The working_dir a search ships holds the code folders, not the repository (no .env,
    tests, docs, clusters, caches)."""
    import ray

    from platform.search.shipping import SHIPPED

    @ray.remote(num_cpus=0)
    def listing():
        import os

        return sorted(os.listdir("."))

    shipped = ray.get(listing.remote())
    assert "platform" in shipped and "trainables" in shipped
    assert set(shipped) <= set(SHIPPED), shipped
