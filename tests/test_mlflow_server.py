"""The production MLflow topology of clusters/aws.yaml, run: a real ``mlflow server`` on 127.0.0.1
with basic authentication and its artifacts proxied to S3 (moto's S3 server on 127.0.0.1), and
quick searches that report to it over HTTP with credentials only (no bucket access on the
client side, as on the workers).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netutil import free_ports

REPO = Path(__file__).resolve().parent.parent
ENGINE_SPACE = str(Path(__file__).resolve().parent / "data" / "engine_quick.yaml")  # fast, fixed, no floors
USER, PASSWORD = "hpo-admin", "correct-horse-battery-staple-42"
S3_KEY_ID, S3_SECRET = "AKIAMLFLOWSERVERTEST", "mlflow-server-Test-Secret/7"
BUCKET = "hpo-mlflow"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 with one bucket; the environment a server process needs for it."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "MLFLOW_S3_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=S3_KEY_ID,
                          aws_secret_access_key=S3_SECRET, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client, env
    finally:
        server.stop()


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=5).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow server did not answer {url} in {timeout} s:\n{log.read_text()[-3000:]}")


def _cheap_password_hash(auth_db: Path) -> None:
    """Store the admin's password as a 1000-round PBKDF2 hash instead of werkzeug's default scrypt.

    The basic-auth server checks the hash on every request (0.2 s of CPU each on a loaded 2-core
    machine: a search's few hundred requests took minutes); what is under test here is that the
    password is checked, not the cost of the hash. A wrong password is still refused.
    """
    import sqlite3

    from werkzeug.security import generate_password_hash

    with sqlite3.connect(auth_db) as db:
        changed = db.execute("UPDATE users SET password_hash = ? WHERE username = ?",
                             (generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000"), USER)).rowcount
    assert changed == 1, "the basic-auth store has no admin user to update"


@pytest.fixture(scope="module")
def mlflow_server(s3, tmp_path_factory):
    """``mlflow server --app-name basic-auth`` with artifacts proxied to s3://BUCKET/mlflow-artifacts."""
    tmp = tmp_path_factory.mktemp("mlflow_server")
    ini = tmp / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp}/auth.db\n"
                   f"admin_username = {USER}\nadmin_password = {PASSWORD}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    [port] = free_ports(1, "127.0.0.1")
    env = {**os.environ, **s3[1], "MLFLOW_AUTH_CONFIG_PATH": str(ini),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}
    log = tmp / "server.log"
    cmd = [str(REPO / ".venv" / "bin" / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
           "--artifacts-destination", f"s3://{BUCKET}/mlflow-artifacts"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health", proc, log)
        _cheap_password_hash(tmp / "auth.db")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def as_client(mlflow_server, monkeypatch):
    """This process as a client of the server: its URL and credentials, no AWS access at all."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name in ("MLFLOW_S3_ENDPOINT_URL", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    return mlflow_server


def search(tmp: Path, *args: str, password: str = PASSWORD, timeout: float = 1200) -> subprocess.CompletedProcess:
    """``python -m platform.search ARGS`` as a user runs it, reporting to the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"MLFLOW_TRACKING_PASSWORD": password, "PYTHONPATH": str(REPO),
                "PLATFORM_TENSORBOARD_DIR": str(tmp / "tensorboard"), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    return subprocess.run([sys.executable, "-m", "platform.search", *args, "--storage", str(tmp / "ray_results")],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)


def test_searches_report_over_http_and_the_champion_moves(as_client, s3, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    # A poor first model (one epoch at lr ~ 0) becomes champion, then a real quick search beats it.
    first = search(tmp_path, ENGINE_SPACE, "--quick", "--experiment", "served", "--max-trials", "1",
                   "--set", "optimizer.lr=1.0e-9", "--set", "train.epochs=1")
    assert first.returncode == 0, first.stderr[-4000:]
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("served", "champion").version) == "1"
    second = search(tmp_path, ENGINE_SPACE, "--quick", "--experiment", "served", "--max-trials", "2")
    assert second.returncode == 0, second.stderr[-4000:]
    champion = client.get_model_version_by_alias("served", "champion")
    assert str(champion.version) == "2" and champion.tags["promotion.decision"] == "promoted"

    # Runs and metrics arrived over HTTP: one parent per search, its trials nested under it.
    exp = client.get_experiment_by_name("served")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2 and len(children) == 3
    best = client.get_run(champion.run_id)
    assert len(client.get_metric_history(best.info.run_id, "val_psnr")) >= 2
    # Images: downloaded through the server, and stored in the bucket (the server's proxy wrote them).
    grids = [a.path for a in client.list_artifacts(best.info.run_id, "validation")]
    assert grids and all(p.endswith(".png") for p in grids)
    local = client.download_artifacts(best.info.run_id, grids[-1], str(tmp_path / "dl"))
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keys = [o["Key"] for page in s3[0].get_paginator("list_objects_v2").paginate(Bucket=BUCKET) for o in
            page.get("Contents", [])]
    assert any(k.startswith("mlflow-artifacts/") and k.endswith(grids[-1]) for k in keys), keys[:20]
    assert any(k.endswith("MLmodel") for k in keys)

    # The champion loads and predicts through the server, with no AWS credentials here.
    model = mlflow.pyfunc.load_model("models:/served@champion")
    x = np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)
    pred = model.predict(x)
    assert pred.shape == x.shape and np.isfinite(pred).all()


def test_a_wrong_password_is_refused_with_a_clear_error(as_client, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with pytest.raises(MlflowException, match="401|Unauthorized|credentials"):
        MlflowClient().search_experiments()
    out = search(tmp_path, ENGINE_SPACE, "--quick", "--experiment", "refused", password="not-the-password",
                 timeout=600)
    # One paragraph naming the server and the user, exit status 2, no traceback.
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"error: the MLflow server at {as_client} refused the credentials of user '{USER}'" in out.stderr
    assert "Traceback" not in out.stderr
