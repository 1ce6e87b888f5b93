"""Distributed execution on real Ray: DDP correctness, worker loss, multi-node + S3, ``ray job submit``.

Every test starts its own Ray (a local instance, a ``ray.cluster_utils.Cluster`` or a head
started with ``ray start`` under a private ``--temp-dir``) and stops exactly what it started:
other Ray instances may be running on this machine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from netutil import free_ports
from platform.config import load_spec
from platform.errors import ConfigError
from platform.search import SearchOptions, run_search
from platform.search.presets import cpu_nafnet

REPO = Path(__file__).resolve().parent.parent


# The smallest NAFNet trial that still trains on the bundled sample (crops divisible by 8).
TINY = {
    "task": {"crop": 32, "crops_per_epoch": 16, "batch_size": 4, "val_max_side": 64},
    "model": {"options": {"width": 8}},
    "loss": {"l1": 1.0, "lpips": 0.0, "laplacian": 0.5, "ssim": 0.2},
    "optimizer": {"lr": 1.0e-3},
    "train": {"epochs": 2, "image_every": 1},
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _trial_config(**extra) -> dict:
    """A concrete trial config (every searched value pinned) of the quick NAFNet space."""
    from platform.config import _walk_nodes, is_search_node

    spec = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet(_merge(TINY, extra)))
    searched = [p for p, n in _walk_nodes(spec.config) if is_search_node(n)]
    assert not searched, searched
    return spec.config


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray with the repository as working_dir (as the search driver starts it),
    shared by the tests at the end of this module (the ones before it start their own clusters)."""
    import ray

    from platform.search.driver import init_ray

    assert not ray.is_initialized()
    env = {"PLATFORM_DATA_DIR": os.environ["PLATFORM_DATA_DIR"],
           "PLATFORM_PRETRAINED_DIR": str(REPO / ".cache" / "pretrained")}
    init_ray(SearchOptions("nafnet_fewshot", num_cpus=8), env)
    try:
        yield ray
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- 3. shared storage check
def _fake_nodes(monkeypatch, *hosts: str) -> None:
    import ray

    nodes = [{"Alive": True, "NodeManagerAddress": h, "NodeID": f"{i:056x}"} for i, h in enumerate(hosts)]
    nodes.append({"Alive": False, "NodeManagerAddress": "10.0.0.99", "NodeID": "dead"})
    monkeypatch.setattr(ray, "nodes", lambda: nodes)


def test_multi_machine_cluster_needs_shared_storage(monkeypatch, tmp_path):
    from platform.search.driver import check_shared_storage, storage_path

    monkeypatch.delenv("PLATFORM_STORAGE_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    opts = SearchOptions("nafnet_fewshot")
    local = storage_path(opts)
    assert local == str(tmp_path / "mlruns" / "ray_results")

    _fake_nodes(monkeypatch, "10.0.0.1", "10.0.0.2")
    with pytest.raises(ConfigError) as err:
        check_shared_storage(opts, local)
    msg = str(err.value)
    assert local in msg and "--storage s3://" in msg and "2 machines" in msg

    s3 = SearchOptions("nafnet_fewshot", storage="s3://bucket/prefix")
    check_shared_storage(s3, storage_path(s3))  # a URI every node reaches
    # An explicit local path is trusted to be a shared mount (only a warning).
    shared = SearchOptions("nafnet_fewshot", storage=str(tmp_path / "nfs"))
    check_shared_storage(shared, storage_path(shared))

    _fake_nodes(monkeypatch, "10.0.0.1", "10.0.0.1")  # several raylets on one machine share its disk
    check_shared_storage(opts, local)


# --------------------------------------------------------------------------- 4. multi-node + S3
S3_KEY_ID, S3_SECRET = "AKIADISTRIBUTEDTEST1", "distributed-Test-Secret/42"


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A moto S3 server on 127.0.0.1 and the standard AWS variables pointing at it.

    ``AWS_ENDPOINT_URL`` is honoured by boto3 and by pyarrow's S3FileSystem (what Ray Tune/Train
    storage uses), so ``s3://bucket/prefix`` reaches moto from the driver and from every node
    started after this fixture (nodes inherit the environment).
    """
    import logging

    from moto.server import ThreadedMotoServer

    monkeypatch.setattr(logging.getLogger("werkzeug"), "level", logging.WARNING)  # one line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                        "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                        "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
        monkeypatch.setenv(name, value)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.mark.slow
def test_multi_node_search_with_s3_storage(tmp_cwd, s3_endpoint):
    """A search on a head + 2 worker nodes with results on S3: trials run on both workers, the
    experiment (results and checkpoints) lands in the bucket and the best model is registered."""
    import boto3
    import ray
    from mlflow.tracking import MlflowClient
    from ray.cluster_utils import Cluster

    s3 = boto3.client("s3")
    bucket = "hpo-results"
    s3.create_bucket(Bucket=bucket)

    # The head has no CPU and each worker node one: two concurrent 1-CPU trials must use both workers.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    error = None
    try:
        cluster.wait_for_nodes()
        overrides = _merge(TINY, {"optimizer": {"lr": {"loguniform": [1.0e-4, 3.0e-3]}},
                                  "search": {"max_concurrent": 2},
                                  "promotion": {"floors": False}})  # the registry path, not the floors
        try:
            out = run_search(SearchOptions("nafnet_fewshot", quick=True, max_trials=2, address=cluster.address,
                                           storage=f"s3://{bucket}/ray", overrides=cpu_nafnet(overrides)))
        except RuntimeError as exc:  # checked last: what the trials left must hold regardless
            out, error = None, exc
        assert ray.is_initialized()  # the driver does not stop a cluster it only connected to
        # The GCS actor table (live and dead actors, no dashboard needed): which node ran which process.
        actor_nodes = {a["Pid"]: a["Address"]["NodeID"] for a in ray._private.state.actors().values()}
        worker_ids = {n.node_id for n in workers}
        head_id = cluster.head_node.node_id
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    assert len(worker_ids) == 2 and head_id not in worker_ids

    # The experiment is in the bucket: per trial, its results (every epoch) and its checkpoints.
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="ray/")
            for o in page.get("Contents", [])]
    experiments = {k.split("/")[1] for k in keys} - {""}  # "ray/" itself: pyarrow writes folder markers
    assert len(experiments) == 1 and experiments.pop().startswith("nafnet_fewshot-"), experiments
    results = sorted(k for k in keys if k.endswith("/result.json"))
    assert len(results) == 2, keys
    trials = {}
    for key in results:
        lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
        reports = [json.loads(line) for line in lines if line.strip()]
        assert [r["epoch"] for r in reports] == [1, 2], key
        trial_dir = key.rsplit("/", 1)[0]
        trials[reports[-1]["trial_id"]] = reports[-1]["pid"]
        states = [k for k in keys if k.startswith(trial_dir + "/checkpoint_") and k.endswith("/state.pt")]
        assert len(states) == 2, (trial_dir, keys)
    # Both trials ran at once, one on each worker node (none on the CPU-less head).
    assert {actor_nodes.get(pid) for pid in trials.values()} == worker_ids, (trials, actor_nodes, worker_ids)

    if error is not None:
        raise error
    assert len(out.rows) == 2 and all(r["stop"] == "completed" for r in out.rows), out.rows
    assert {r["trial"] for r in out.rows} == set(trials)
    assert out.experiment_path.startswith(f"s3://{bucket}/ray/nafnet_fewshot-")
    # The best trial is registered and, the registry being empty, becomes the champion.
    client = MlflowClient()
    assert out.promotion.promoted and out.promotion.version == "1"
    version = client.get_model_version_by_alias("nafnet_fewshot", "champion")
    assert str(version.version) == "1" and version.run_id == out.best["run_id"]
    assert version.tags["promotion.decision"] == "promoted"
    # The version points at its checkpoint in the bucket (retention never deletes it).
    assert version.tags["source_checkpoint"].startswith(f"s3://{bucket}/ray/nafnet_fewshot-"), version.tags


# --------------------------------------------------------------------------- 5. ray job submit


def _session_pids(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (from /proc; field 6 of /proc/PID/stat)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            if int(fields[3]) == sid and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


def _stop_session(leader: subprocess.Popen, timeout: float = 30) -> list[int]:
    """SIGTERM the ``ray start --block`` session leader (it stops the node it started), then whatever
    is left in its session. Returns the pids that needed the second round."""
    if leader.poll() is None:
        leader.terminate()
        try:
            leader.wait(timeout)
        except subprocess.TimeoutExpired:
            leader.kill()
            leader.wait(10)
    left = _session_pids(leader.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_pids(leader.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while _session_pids(leader.pid) and time.time() < deadline:
            time.sleep(0.3)
    return left


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    """A head started with ``ray start --head --block`` as clusters/local.sh starts its nodes: token
    auth on, the repository on PYTHONPATH and the venv first on PATH (jobs need no working_dir),
    in its own session so that exactly its processes are stopped afterwards."""
    from ray.job_submission import JobSubmissionClient

    work = tmp_path_factory.mktemp("head")
    # Ray's socket paths under the temp dir may not exceed 107 bytes: a short private folder.
    state = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))
    token = secrets.token_hex(32)
    (state / "auth_token").write_text(token)
    (state / "auth_token").chmod(0o600)
    gcs, dash, agent, client_port = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_", "MLFLOW_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(state / "auth_token"),
               PYTHONPATH=str(REPO), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
               PLATFORM_DATA_DIR=os.environ["PLATFORM_DATA_DIR"],
               PLATFORM_PRETRAINED_DIR=str(REPO / ".cache" / "pretrained"))
    log_file = open(state / "head.log", "w")
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={gcs}",
         f"--temp-dir={state / 'ray'}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}",
         f"--ray-client-server-port={client_port}", "--num-cpus=8", "--num-gpus=0", "--min-worker-port=0",
         "--max-worker-port=0", "--disable-usage-stats"],
        env=env, cwd=work, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)  # its own session: stopped by session id, never by a machine-wide `ray stop`
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        client = None
        while client is None:
            assert head.poll() is None, (state / "head.log").read_text()
            try:
                client = JobSubmissionClient(url, headers={"Authorization": f"Bearer {token}"})
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        yield {"client": client, "url": url, "cwd": work}
    finally:
        leftovers = _stop_session(head)
        log_file.close()
    # Nothing of the head is left running.
    assert not _session_pids(head.pid), leftovers
    assert str(state) not in subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    import shutil

    shutil.rmtree(state, ignore_errors=True)


def _tiny_space_file(folder: Path, name: str) -> Path:
    """A tiny copy of the quick NAFNet space (the CLI takes a YAML path); the learning rate stays searched."""
    import yaml

    raw = yaml.safe_load((REPO / "search_spaces" / "nafnet_fewshot.yaml").read_text())
    raw["name"] = name
    # The CPU NAFNet profile (the learning rate stays searched), no floors: the registry path is tested.
    raw["quick"] = cpu_nafnet(_merge({k: v for k, v in TINY.items() if k != "optimizer"},
                                     {"promotion": {"floors": False}}))
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run_job(client, entrypoint: str, runtime_env: dict, timeout: float = 420) -> tuple[object, str]:
    from ray.job_submission import JobStatus

    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    final = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    deadline = time.time() + timeout
    status = client.get_job_status(job_id)
    while status not in final and time.time() < deadline:
        time.sleep(2)
        status = client.get_job_status(job_id)
    if status not in final:
        client.stop_job(job_id)
    return status, client.get_job_logs(job_id)


def _tracking_env(tmp_path: Path) -> tuple[str, dict]:
    tracking = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    return tracking, {"MLFLOW_TRACKING_URI": tracking, "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
                      "PLATFORM_TENSORBOARD_DIR": str(tmp_path / "tensorboard")}


@pytest.mark.slow
def test_ray_job_submit_runs_a_search(token_head, tmp_path):
    """`ray job submit -- python -m platform.search ...` against a token-auth head (the Jobs API that
    the CLI calls): the job succeeds, its log has the trials table and the registry outcome, and
    the champion is in the MLflow registry it was pointed at."""
    import urllib.error
    import urllib.request

    from mlflow.tracking import MlflowClient
    from ray.job_submission import JobStatus

    url = token_head["url"]
    # Token auth is on: the Jobs API refuses a request without the token, and one with another token.
    for headers, code in (({}, 401), ({"Authorization": "Bearer " + "0" * 64}, 403)):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(f"{url}/api/jobs/", headers=headers), timeout=30)
        assert err.value.code == code

    space = _tiny_space_file(tmp_path, "job_tiny")
    tracking, env_vars = _tracking_env(tmp_path)
    storage = tmp_path / "results"
    status, logs = _run_job(token_head["client"],
                            f"python -m platform.search {space} --quick --max-trials 1 --storage {storage}",
                            {"env_vars": env_vars})
    assert status == JobStatus.SUCCEEDED, logs[-5000:]
    assert "trials of job_tiny:" in logs and "completed" in logs, logs[-5000:]
    assert re.search(r"version 1 of `job_tiny` \(val_psnr [\d.]+ dB\) is now `champion`", logs), logs[-5000:]
    # The job wrote to the tracking store and the storage it was given, on this machine.
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    assert str(client.get_model_version_by_alias("job_tiny", "champion").version) == "1"
    assert [p.name for p in storage.iterdir() if p.name.startswith("job_tiny-")]


@pytest.mark.slow
def test_ray_job_submit_with_working_dir_runs_a_search(token_head, tmp_path):
    """The README's `ray job submit --working-dir . -- python -m platform.search ...`."""
    from ray.job_submission import JobStatus

    space = _tiny_space_file(tmp_path, "job_wd_tiny")
    _, env_vars = _tracking_env(tmp_path)
    status, logs = _run_job(token_head["client"],
                            f"python -m platform.search {space} --quick --max-trials 1 --storage {tmp_path / 'r'}",
                            {"working_dir": str(REPO), "excludes": [".git", ".venv", "mlruns", ".cache"],
                             "env_vars": env_vars})
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert re.search(r"version 1 of `job_wd_tiny` \(val_psnr [\d.]+ dB\) is now `champion`", logs), logs[-5000:]


# --------------------------------------------------------------------------- 6. NaN in a DDP trial
@pytest.mark.slow
def test_nan_loss_in_a_ddp_run_ends_it_at_once_without_a_restart(local_ray, tmp_path):
    """Ray Train restarts a worker group after any worker error (FailureConfig); a NaN loss would
    come back the same way. The workers end the run instead and hand the error to the trial:
    the run succeeds on its first attempt (no restart), rank 0 returns the NaN, and the Tune
    trial's code re-raises it as NonFiniteLossError."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from platform.train.loop import NonFiniteLossError
    from trainables.fewshot import train_loop_per_worker

    # 64 crops: 8 steps per worker in epoch 1, enough for lr 1e6 to blow up from the identity start.
    config = _trial_config(optimizer={"lr": 1.0e6}, task={"crops_per_epoch": 64},
                           train={"epochs": 3, "max_failures": 2})
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="nan-ddp", storage_path=str(tmp_path),
                                       failure_config=ray.train.FailureConfig(max_failures=2)))
    result = trainer.fit()
    assert result.error is None
    assert result.return_value["fatal"] == "nan-loss"
    # An identity start makes the first steps finite; lr 1e6 then blows up to inf or nan within epoch 1.
    assert re.search(r"training loss became (nan|-?inf) at epoch 1", result.return_value["message"])
    assert result.checkpoint is None  # stopped in epoch 1: nothing reported, nothing restarted from

    # The trial's side: the same return value becomes the error the driver classifies as nan-loss.
    from trainables import fewshot

    class FakeTrainer:
        def __init__(self, *args, **kwargs):
            pass

        def fit(self):
            return result

    ctx = type("Ctx", (), {"get_experiment_name": lambda self: "x", "get_trial_id": lambda self: "t"})()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ray.train.torch.TorchTrainer", FakeTrainer)
        mp.setattr("ray.tune.get_context", lambda: ctx)
        mp.setattr("ray.tune.integration.ray_train.TuneReportCallback", lambda: ray.train.UserCallback())
        with pytest.raises(NonFiniteLossError, match="at epoch 1"):
            fewshot._run_torch_trainer(config, {"workers": 2}, {})


# --------------------------------------------------------------------------- 1. DDP correctness
def _instrumented_worker(config: dict) -> None:
    """``trainables.fewshot.train_loop_per_worker`` with a record of what this rank did.

    Test-only instrumentation around the real trainer: which dataset indices the rank drew,
    which checkpoints it wrote and what it handed to ``ray.train.report``. Self-contained
    (imports inside) because Ray pickles it by value to the workers.
    """
    import json as _json
    from pathlib import Path as _Path

    import ray.train

    from platform.data import paired
    from platform.train import loop
    from trainables.fewshot import train_loop_per_worker

    rank = ray.train.get_context().get_world_rank()
    record = {"rank": rank, "pid": os.getpid(), "items": [], "saves": [], "reports": []}
    orig_item, orig_save, orig_report = paired.CropDataset.__getitem__, loop._save_checkpoint, ray.train.report

    def item(self, index):
        x, y = orig_item(self, index)
        record["items"].append([self.epoch, int(index), float(x.double().sum()), float(y.double().sum())])
        return x, y

    def save(folder, model, optimizer, scheduler, epoch, *args, **kwargs):
        record["saves"].append(epoch)
        return orig_save(folder, model, optimizer, scheduler, epoch, *args, **kwargs)

    def report(metrics, checkpoint=None, **kwargs):
        record["reports"].append({"epoch": metrics["epoch"], "train_loss": metrics["train_loss"],
                                  "val_psnr": metrics["val_psnr"], "checkpoint": checkpoint is not None})
        return orig_report(metrics, checkpoint=checkpoint, **kwargs)

    paired.CropDataset.__getitem__, loop._save_checkpoint, ray.train.report = item, save, report
    try:
        train_loop_per_worker(config)
    finally:
        paired.CropDataset.__getitem__, loop._save_checkpoint, ray.train.report = orig_item, orig_save, orig_report
        out = _Path(config["_test_record_dir"]) / f"rank{rank}.json"
        out.write_text(_json.dumps(record))


def _fit_torch_trainer(config: dict, workers: int, storage: Path, name: str):
    import ray.cloudpickle
    import ray.train
    from ray.train.torch import TorchTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        trainer = TorchTrainer(
            _instrumented_worker, train_loop_config=config,
            scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=False,
                                                   resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(name=name, storage_path=str(storage)))
        return trainer.fit()
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow
def test_ddp_two_workers_match_one_worker_with_double_batch(local_ray, tmp_path):
    """2 gloo workers x batch b == 1 worker x batch 2b: same shards, same weights, reduced metrics."""
    from platform.train.loop import build_model, load_checkpoint_state

    b = 2
    runs = {}
    for workers, batch in ((2, b), (1, 2 * b)):
        rec = tmp_path / f"records{workers}"
        rec.mkdir()
        config = {**_trial_config(task={"batch_size": batch}), "_test_record_dir": str(rec)}
        result = _fit_torch_trainer(config, workers, tmp_path / "storage", f"ddp{workers}")
        assert result.error is None, result.error
        records = [json.loads((rec / f"rank{r}.json").read_text()) for r in range(workers)]
        runs[workers] = (result, records)

    (res2, rec2), (res1, rec1) = runs[2], runs[1]
    steps = 16 // (2 * b)  # crops_per_epoch / global batch
    # Sharding: DistributedSampler(shuffle=False) gives rank r the indices r, r+2, ...; per step the
    # two ranks' batches together are exactly the single worker's batch.
    for epoch in range(2):
        one = [i for e, i, *_ in rec1[0]["items"] if e == epoch]
        assert one == list(range(16))
        shards = [[i for e, i, *_ in r["items"] if e == epoch] for r in rec2]
        assert shards[0] == list(range(0, 16, 2)) and shards[1] == list(range(1, 16, 2))
        assert not set(shards[0]) & set(shards[1])
        for step in range(steps):
            union = set(shards[0][step * b:(step + 1) * b]) | set(shards[1][step * b:(step + 1) * b])
            assert union == set(one[step * 2 * b:(step + 1) * 2 * b])
    assert rec2[0]["pid"] != rec2[1]["pid"]
    # A crop (position and augmentation) is a pure function of (seed, epoch, index): the crop a
    # rank drew at an index is the very crop the single worker drew there.
    single = {(e, i): (xs, ys) for e, i, xs, ys in rec1[0]["items"]}
    both = {(e, i): (xs, ys) for r in rec2 for e, i, xs, ys in r["items"]}
    assert both == single and len(set(single.values())) == len(single)

    # Only rank 0 writes and hands over checkpoints; every rank reports every epoch.
    assert rec2[0]["saves"] == [1, 2] and rec2[1]["saves"] == []
    assert [r["checkpoint"] for r in rec2[0]["reports"]] == [True, True]
    assert [r["checkpoint"] for r in rec2[1]["reports"]] == [False, False]
    # Metrics are reduced across workers before reporting: both ranks report the same values,
    # which are those of the single worker that saw the whole batch (and both held-out frames).
    for r0, r1, single in zip(rec2[0]["reports"], rec2[1]["reports"], rec1[0]["reports"]):
        assert r0["epoch"] == r1["epoch"] == single["epoch"]
        assert r0["train_loss"] == r1["train_loss"] and r0["val_psnr"] == r1["val_psnr"]
        assert r0["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)
        assert r0["val_psnr"] == pytest.approx(single["val_psnr"], abs=1e-4)
    assert res2.metrics["train_loss"] == pytest.approx(res1.metrics["train_loss"], rel=1e-5)
    assert list(os.listdir(res2.checkpoint.path)) and \
        sorted(os.listdir(res2.checkpoint.path)) == sorted(os.listdir(res1.checkpoint.path))

    # Same weights after the same steps from the same seed.
    s2, s1 = load_checkpoint_state(res2.checkpoint.path), load_checkpoint_state(res1.checkpoint.path)
    assert s2["epoch"] == s1["epoch"] == 2
    assert s2["model"].keys() == s1["model"].keys()
    torch.manual_seed(0)
    init = build_model(s1["config"]).state_dict()
    max_diff = max_update = 0.0
    for k, w1 in s1["model"].items():
        w2 = s2["model"][k]
        assert w2.shape == w1.shape and not k.startswith("module."), k
        if w1.is_floating_point():
            max_diff = max(max_diff, float((w2 - w1).abs().max()))
            max_update = max(max_update, float((w1 - init[k]).abs().max()))
    assert max_update > 1e-3, "training did not move the weights; the comparison would be vacuous"
    assert max_diff < 1e-5 * max(1.0, max(float(w.abs().max()) for w in s1["model"].values()
                                          if w.is_floating_point())), (max_diff, max_update)


# --------------------------------------------------------------------------- 2. a killed Train worker
def _resumable_worker(config: dict) -> None:
    """``trainables.fewshot.train_loop_per_worker`` recording each attempt (pid, epochs, log lines).

    On the first attempt, once epoch 1 is reported (with its checkpoint), the worker writes its
    pid to ``killme`` and waits to be killed by the test: the kill always lands between the
    first and the second report. Self-contained: Ray pickles it by value to the workers.
    """
    import json as _json
    import logging as _logging
    import time as _time
    from pathlib import Path as _Path

    import ray.train

    from platform.data import paired
    from platform.train import loop
    from trainables.fewshot import train_loop_per_worker

    folder = _Path(config["_test_record_dir"])
    attempt = len(list(folder.glob("attempt*.json"))) + 1
    out = folder / f"attempt{attempt}.json"
    record = {"attempt": attempt, "pid": os.getpid(), "epochs_trained": [], "saves": [], "reports": [], "log": []}

    def flush():
        tmp = out.with_suffix(".tmp")
        tmp.write_text(_json.dumps(record))
        tmp.replace(out)

    flush()

    class Capture(_logging.Handler):
        def emit(self, rec):
            record["log"].append(rec.getMessage())

    handler = Capture()
    _logging.getLogger("platform.train.loop").addHandler(handler)
    _logging.getLogger("platform.train.loop").setLevel(_logging.INFO)
    orig_set_epoch, orig_save, orig_report = paired.CropDataset.set_epoch, loop._save_checkpoint, ray.train.report

    def set_epoch(self, epoch):
        record["epochs_trained"].append(epoch + 1)
        return orig_set_epoch(self, epoch)

    def save(folder_, model, optimizer, scheduler, epoch, *args, **kwargs):
        record["saves"].append(epoch)
        return orig_save(folder_, model, optimizer, scheduler, epoch, *args, **kwargs)

    def report(metrics, checkpoint=None, **kwargs):
        orig_report(metrics, checkpoint=checkpoint, **kwargs)
        record["reports"].append({"epoch": metrics["epoch"], "train_loss": metrics["train_loss"],
                                  "checkpoint": checkpoint is not None})
        flush()
        if attempt == 1 and metrics["epoch"] == 1:
            (folder / "killme").write_text(str(os.getpid()))
            deadline = _time.time() + 180
            while _time.time() < deadline:
                _time.sleep(0.5)
            raise RuntimeError("the test did not kill this worker within 180 s")

    paired.CropDataset.set_epoch, loop._save_checkpoint, ray.train.report = set_epoch, save, report
    try:
        train_loop_per_worker(config)
    finally:
        paired.CropDataset.set_epoch, loop._save_checkpoint, ray.train.report = orig_set_epoch, orig_save, orig_report
        _logging.getLogger("platform.train.loop").removeHandler(handler)
        flush()


def _trial_with_resumable_workers(config: dict) -> None:
    """The search's own trainable (``run_trial`` -> ``_run_torch_trainer``), its Train workers instrumented."""
    from trainables import fewshot

    fewshot.train_loop_per_worker = _resumable_worker
    fewshot.run_trial(config)


@pytest.mark.slow
def test_killed_train_worker_resumes_from_its_checkpoint(local_ray, tmp_path):
    """SIGKILL of the Train worker after epoch 1: Train restarts it from the epoch-1 checkpoint, the
    trial finishes, Tune sees every epoch once and the weights equal those of an uninterrupted run."""
    import ray.cloudpickle
    from ray import tune

    from platform.train.loop import load_checkpoint_state, train_loop
    from platform.train.session import Session

    rec = tmp_path / "records"
    rec.mkdir()
    storage = tmp_path / "storage"
    base = _trial_config(resources={"workers": 1, "mode": "train"}, train={"epochs": 4, "max_failures": 2})
    config = {**base, "_test_record_dir": str(rec),
              "_run": {"storage_path": str(storage), "metric": "val_psnr", "mode": "max", "keep_checkpoints": 2}}

    seen_file = tmp_path / "tune_epochs.txt"  # what Tune's driver received (the Tuner pickles callbacks)

    class Seen(tune.Callback):
        def __init__(self, path: str):
            self.path = path

        def on_trial_result(self, iteration, trials, trial, result, **info):
            with open(self.path, "a") as f:
                f.write(f"{int(result['epoch'])}\n")

    def seen() -> list[int]:
        return [int(x) for x in seen_file.read_text().split()] if seen_file.exists() else []

    killed: list[int] = []
    done = threading.Event()

    def watcher():
        # Tune gets epoch 1 only after Train registered its checkpoint; the worker, having written
        # `killme`, is waiting to be killed (so the kill lands between the first and second report).
        while not done.is_set():
            if 1 in seen() and (rec / "killme").exists():
                pid = int((rec / "killme").read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        tuner = tune.Tuner(
            tune.with_resources(_trial_with_resumable_workers, {"cpu": 1}),
            param_space=config,
            run_config=tune.RunConfig(name="killed", storage_path=str(storage), callbacks=[Seen(str(seen_file))],
                                      verbose=0, failure_config=tune.FailureConfig(max_failures=0)))
        results = tuner.fit()
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        done.set()
    thread.join(timeout=10)

    assert len(results) == 1
    res = results[0]
    assert res.error is None, res.error
    assert len(killed) == 1, "the watcher never killed the worker"
    # Tune saw every epoch exactly once: none lost, none repeated.
    assert seen() == [1, 2, 3, 4]
    assert list(res.metrics_dataframe["epoch"]) == [1, 2, 3, 4] and res.metrics["epoch"] == 4

    attempts = sorted((json.loads(p.read_text()) for p in rec.glob("attempt*.json")), key=lambda a: a["attempt"])
    assert [a["attempt"] for a in attempts] == [1, 2]
    first, second = attempts
    assert first["pid"] == killed[0] != second["pid"]
    assert first["epochs_trained"] == [1] and first["saves"] == [1]
    assert [r["epoch"] for r in first["reports"]] == [1] and first["reports"][0]["checkpoint"]
    assert not any("resumed" in line for line in first["log"])
    # The restarted worker continues after the checkpoint epoch and says so.
    assert "resumed from checkpoint at epoch 1" in second["log"], second["log"]
    assert second["epochs_trained"] == [2, 3, 4] and second["saves"] == [2, 3, 4]
    assert [r["epoch"] for r in second["reports"]] == [2, 3, 4]
    assert all(r["checkpoint"] for r in second["reports"])

    # Resuming restored model, optimiser, schedule and RNG: an uninterrupted run of the same
    # trial in a plain process ends with the same weights and the same per-epoch losses.
    final = load_checkpoint_state(res.metrics["checkpoint_path"])
    assert final["epoch"] == 4
    plain = Session(tmp_path / "plain")
    train_loop(base, plain)
    reference = load_checkpoint_state(plain.checkpoints[-1])
    losses = [r["train_loss"] for a in attempts for r in a["reports"]]
    assert losses == pytest.approx([r["train_loss"] for r in plain.reports], rel=1e-5)
    assert final["model"].keys() == reference["model"].keys()
    for k, w in reference["model"].items():
        torch.testing.assert_close(final["model"][k], w, rtol=1e-5, atol=1e-6, msg=k)
