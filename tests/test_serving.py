"""The registered pyfunc model: in-process and served by ``mlflow models serve``, it answers
exactly what ``python -m platform.predict`` writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from platform.predict import main as predict_main
from platform.tasks import predictor as task_predictor
from test_inference_helpers import astronaut, register, save_checkpoint, tiny_config, tiny_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A registered tiny NAFNet (``models:/tiny@champion``) in a private SQLite store."""
    import mlflow

    tmp = tmp_path_factory.mktemp("store")
    config = tiny_config(crop=64)
    save_checkpoint(tmp / "ckpt", tiny_model(config), config)
    previous = mlflow.get_tracking_uri()
    uri = register(tmp, tmp / "ckpt")
    yield uri, tmp
    mlflow.set_tracking_uri(previous)


def _predict_cli(tmp: Path, img: np.ndarray, name: str, *extra: str) -> np.ndarray:
    """predict's output for ``img`` (a float TIFF in and out, so nothing is quantised)."""
    src = tmp / f"{name}.tif"
    iio.imwrite(src, img)
    out = tmp / f"{name}.out.tif"
    assert predict_main(["--model", "models:/tiny@champion", "--input", str(src), "--output", str(out), "--quiet",
                         "--overwrite", *extra]) == 0
    return iio.imread(out)


def test_pyfunc_in_process_equals_predict(store, monkeypatch):
    import mlflow

    uri, tmp = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model("models:/tiny@champion")
    sig = model.metadata.signature
    assert tuple(sig.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, -1, -1, -1)
    assert {p.name for p in sig.params} >= {"tile", "overlap", "precision", "tta", "tlc"}
    img = astronaut((70, 90))
    got = model.predict(img[None])
    assert got.shape == (1, 70, 90, 3) and got.dtype == np.float32
    assert np.allclose(got[0], _predict_cli(tmp, img, "inproc"), atol=1e-6)
    tta = model.predict(img[None], params={"tta": True})
    assert np.allclose(tta[0], _predict_cli(tmp, img, "inproc_tta", "--tta"), atol=1e-6)
    assert not np.allclose(tta, got, atol=1e-4)


def test_pyfunc_segmentation_returns_index_masks(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from platform.pyfunc import log_model
    from platform.tasks import TASKS

    TASKS.register("t_pyfunc_seg", kind="segmentation")(type("Seg", (), {"kind": "segmentation"}))
    previous = mlflow.get_tracking_uri()
    try:
        config = tiny_config(crop=64)
        config["task"]["name"] = "t_pyfunc_seg"
        config["_model_kwargs"] = {"in_channels": 3, "out_channels": 5}
        model = tiny_model(config)
        save_checkpoint(tmp_path / "ckpt", model, config)
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
        client = MlflowClient()
        run_id = client.create_run(client.create_experiment("seg", (tmp_path / "a").as_uri())).info.run_id
        uri = log_model(tmp_path / "ckpt", run_id)
        pyfunc = mlflow.pyfunc.load_model(uri)
        assert pyfunc.metadata.signature.outputs.to_dict()[0]["tensor-spec"]["dtype"] == "int64"
        img = astronaut((48, 64))
        masks = pyfunc.predict(np.stack([img, img[::-1].copy()]))
        assert masks.shape == (2, 48, 64) and masks.dtype == np.int64
        want = task_predictor(model, config).run(img)["mask"]
        assert np.array_equal(masks[0], want) and masks.max() < 5
    finally:
        mlflow.set_tracking_uri(previous)
        TASKS._items.pop("t_pyfunc_seg", None)
        TASKS._meta.pop("t_pyfunc_seg", None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, payload: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def test_mlflow_models_serve_answers_like_predict(store):
    uri, tmp = store
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log_file = open(tmp / "serve.log", "w")
    proc = subprocess.Popen(["mlflow", "models", "serve", "-m", "models:/tiny@champion", "--env-manager", "local",
                             "-p", str(port), "-h", "127.0.0.1"], cwd=REPO, env=env, stdout=log_file,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{(tmp / 'serve.log').read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.time() > deadline:
                pytest.fail(f"the server did not answer /ping in 240 s:\n{(tmp / 'serve.log').read_text()}")
            time.sleep(1)
        img = astronaut((52, 76))
        served = np.asarray(_post(port, {"inputs": img[None].tolist()})["predictions"], dtype=np.float32)
        assert served.shape == (1, 52, 76, 3)
        assert np.allclose(served[0], _predict_cli(tmp, img, "served"), atol=1e-6)
        tiled = np.asarray(_post(port, {"inputs": img[None].tolist(), "params": {"tile": 32, "overlap": 8}})[
            "predictions"], dtype=np.float32)
        assert np.allclose(tiled[0], _predict_cli(tmp, img, "served_tiled", "--tile", "32", "--overlap", "8"),
                           atol=1e-6)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker (own process group)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log_file.close()
