"""Acceptance tests of the pretrained weight store against a real S3 endpoint on 127.0.0.1.

The endpoint is moto's ThreadedMotoServer (boto3 talks HTTP to it, as to MinIO); its WSGI app
is wrapped to record every request, so the tests can count the GETs of a weight object.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import boto3
import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from platform.errors import ConfigError
from platform.pretrained import (
    ChecksumMismatchError,
    WeightsUnavailableError,
    public_config,
    pull,
    resolve,
    resolver,
)
from platform.pretrained.__main__ import main as cli
from platform.pretrained._scrub import register_secrets, scrub, scrub_url
from platform.pretrained.backends import S3Store

REPO = Path(__file__).resolve().parents[1]
KEY_ID = "AKIAPRETRAINEDTEST01"
SECRET = "pretrained-Test-Secret-Xy12/zz"
PREFIX = "pretrained_models"


class CountingMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer that records (method, path) of every request it serves."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.requests: list[tuple[str, str]] = []

    def _server_entry(self) -> None:  # same as moto's, with a recording WSGI wrapper
        app = DomainDispatcherApplication(create_backend_app)

        def recording(environ, start_response):
            self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
            return app(environ, start_response)

        self._server = make_server(self._ip_address, self._port, recording, True,
                                   request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p == path)


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """Dummy credentials in the standard chain, private cache/local folders, no hub."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "PLATFORM_PRETRAINED_STORE",
                 "PLATFORM_PRETRAINED_ENDPOINT", "PLATFORM_PRETRAINED_REGION"):
        monkeypatch.delenv(name, raising=False)
    values = {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "PLATFORM_PRETRAINED_CACHE": str(tmp_path / "cache"),
        "PLATFORM_PRETRAINED_DIR": str(tmp_path / "local"),
        "PLATFORM_PRETRAINED_HUB": "0",
        "PLATFORM_PRETRAINED_RETRIES": "1",
        "PLATFORM_PRETRAINED_CONNECT_TIMEOUT": "2",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(resolver, "_stores", {})  # no boto3 client shared between tests
    return tmp_path


@pytest.fixture()
def server(env):
    srv = CountingMotoServer()
    srv.start()
    yield srv
    if srv._server_ready_event.is_set():
        srv.stop()


@pytest.fixture()
def s3(server):
    """A fresh bucket (moto's state is process-wide) and the CLI's global options for it."""
    bucket = f"models-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/{PREFIX}"
    return {"bucket": bucket, "client": client, "url": url, "server": server,
            "opts": ["--store", url, "--endpoint", server.endpoint, "--no-progress"]}


def _weights(path: Path, n: int = 50_000, seed: int = 0) -> Path:
    data = hashlib.sha256(str(seed).encode()).digest() * (n // 32 + 1)
    path.write_bytes(data[:n])
    return path


def _upload(s3, path: Path, group: str = "layer_2", arch: str | None = "nafnet", extra=()) -> str:
    argv = [*s3["opts"], "upload", str(path), "--group", group, *(["--arch", arch] if arch else []), *extra]
    assert cli(argv) == 0
    return f"{group}/{arch}/{path.name}" if arch else f"{group}/{path.name}"


def _store(s3) -> S3Store:
    return S3Store(s3["url"], endpoint_url=s3["server"].endpoint)


def _cache_files(env: Path) -> list[Path]:
    return sorted(p for p in (env / "cache" / "objects").rglob("*") if p.is_file())


def test_setup_creates_group_folders_with_readmes(s3, capsys):
    assert cli([*s3["opts"], "setup"]) == 0
    keys = {o["Key"] for o in s3["client"].list_objects_v2(Bucket=s3["bucket"])["Contents"]}
    expected = {f"{PREFIX}/README.md"} | {
        f"{PREFIX}/{g}/README.md" for g in ("layer_1", "layer_2", "general", "torchvision", "timm")
    } | {f"{PREFIX}/layer_2/nafnet/README.md", f"{PREFIX}/layer_2/docunet/README.md"}
    assert keys == expected
    body = s3["client"].get_object(Bucket=s3["bucket"], Key=f"{PREFIX}/layer_2/README.md")["Body"].read().decode()
    assert body.startswith("# layer_2")
    # idempotent: a second run writes nothing
    assert cli([*s3["opts"], "setup"]) == 0
    assert "0 README object(s) written, 8 already there" in capsys.readouterr().out


def test_upload_list_pull_info(s3, env, capsys):
    src = _weights(env / "NAFNet-test-width8.pth")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    key = _upload(s3, src, extra=["--source", "https://example.org/nafnet", "--licence", "MIT",
                                  "--config", '{"width": 8, "enc_blk_nums": [1, 1]}', "--state-dict-key", "params"])
    assert key == "layer_2/nafnet/NAFNet-test-width8.pth"
    meta = json.loads(s3["client"].get_object(Bucket=s3["bucket"], Key=f"{PREFIX}/{key}.meta.json")["Body"].read())
    assert meta["sha256"] == sha and meta["size"] == src.stat().st_size
    assert meta["licence"] == "MIT" and meta["architecture"] == "nafnet" and meta["state_dict_key"] == "params"
    assert meta["config"] == {"width": 8, "enc_blk_nums": [1, 1]} and meta["date"].endswith("Z")
    # uploading the same file again is a no-op; a different file under the same key is refused
    assert cli([*s3["opts"], "upload", str(src), "--group", "layer_2", "--arch", "nafnet"]) == 0
    (env / "other").mkdir()
    other = _weights(env / "other" / "NAFNet-test-width8.pth", seed=1)
    assert cli([*s3["opts"], "upload", str(other), "--group", "layer_2", "--arch", "nafnet"]) == 2
    assert "--force" in capsys.readouterr().err

    assert cli([*s3["opts"], "list"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(key))
    assert sha[:12] in line and "MIT" in line and line.split()[-1] == "no"  # not cached yet

    assert cli([*s3["opts"], "pull", key]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == env / "cache" / "objects" / sha[:2] / f"{sha}.pth"
    assert path.read_bytes() == src.read_bytes()

    assert cli([*s3["opts"], "list", "layer_2/", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["key"], r["cached"], r["sha256"]) for r in rows] == [(key, True, sha)]

    assert cli([*s3["opts"], "info", key]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sha256"] == sha and info["cached_at"] == str(path) and info["source"] == "https://example.org/nafnet"

    # the library API gives the same file without a second GET of the weights
    gets = s3["server"].count("GET", f"/{s3['bucket']}/{PREFIX}/{key}")
    assert resolve(key, store=s3["url"], endpoint_url=s3["server"].endpoint) == path
    assert s3["server"].count("GET", f"/{s3['bucket']}/{PREFIX}/{key}") == gets == 1


def test_checksum_mismatch_is_refused_and_not_cached(s3, env):
    src = _weights(env / "w.pth")
    key = _upload(s3, src)
    # same size, different bytes: only the sha256 can tell
    tampered = bytearray(src.read_bytes())
    tampered[100] ^= 0xFF
    s3["client"].put_object(Bucket=s3["bucket"], Key=f"{PREFIX}/{key}", Body=bytes(tampered))
    with pytest.raises(ChecksumMismatchError) as err:
        pull(key, store=_store(s3))
    msg = str(err.value)
    assert key in msg and s3["url"] in msg and hashlib.sha256(src.read_bytes()).hexdigest() in msg
    assert _cache_files(env) == []
    assert list((env / "cache" / "tmp").iterdir()) == []
    # different size
    s3["client"].put_object(Bucket=s3["bucket"], Key=f"{PREFIX}/{key}", Body=bytes(tampered[:-1]))
    with pytest.raises(ChecksumMismatchError, match="size"):
        pull(key, store=_store(s3))
    assert _cache_files(env) == []


def test_interrupted_download_leaves_no_complete_looking_file(s3, env, monkeypatch):
    from botocore.exceptions import ConnectionClosedError

    src = _weights(env / "w.pth")
    key = _upload(s3, src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    # a process killed earlier left a partial download behind
    stale = env / "cache" / "tmp" / f"sha-{sha}.4242.deadbeef.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(src.read_bytes()[:1000])

    original = S3Store.download

    def dies_midway(self, k, dest, progress=None):
        with self._translate("downloading", k):
            Path(dest).write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])
            raise ConnectionClosedError(endpoint_url=self.endpoint_url)

    monkeypatch.setattr(S3Store, "download", dies_midway)
    with pytest.raises(WeightsUnavailableError, match="unreachable"):
        pull(key, store=_store(s3))
    assert _cache_files(env) == []
    assert list((env / "cache" / "tmp").iterdir()) == []  # neither the stale nor the new partial file

    monkeypatch.setattr(S3Store, "download", original)
    result = pull(key, store=_store(s3))
    assert result.downloaded and result.path.read_bytes() == src.read_bytes()


_PULL_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, time
    from pathlib import Path
    from platform.pretrained import pull
    from platform.pretrained.backends import S3Store

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    original = S3Store.download
    def slow_download(self, *args, **kwargs):  # hold the lock long enough for the others to queue
        original(self, *args, **kwargs)
        time.sleep(1.5)
    S3Store.download = slow_download
    key, url, endpoint, ready, go = sys.argv[1:6]
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.01)
    result = pull(key, store=url, endpoint_url=endpoint, progress=False)
    print(json.dumps({"path": str(result.path), "downloaded": result.downloaded}))
    """
)


def test_concurrent_pulls_download_once(s3, env):
    src = _weights(env / "big.pth", n=2_000_000)
    key = _upload(s3, src)
    go = env / "go"
    procs, ready = [], []
    for i in range(4):
        ready.append(env / f"ready{i}")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _PULL_SCRIPT, key, s3["url"], s3["server"].endpoint, str(ready[-1]), str(go)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        ))
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):  # a child died before the barrier
            break
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    results = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert sum(r["downloaded"] for r in results) == 1
    assert len({r["path"] for r in results}) == 1
    assert Path(results[0]["path"]).read_bytes() == src.read_bytes()
    assert s3["server"].count("GET", f"/{s3['bucket']}/{PREFIX}/{key}") == 1
    assert any("waiting for another process" in o[1] for o in outs)  # the lock was contended


def test_endpoint_stopped_midway_falls_back_to_cache(s3, env, caplog, capsys):
    src = _weights(env / "w.pth")
    key = _upload(s3, src)
    first = pull(key, store=s3["url"], endpoint_url=s3["server"].endpoint)
    assert first.downloaded and first.origin == "store"

    s3["server"].stop()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="platform.pretrained"):
        again = pull(key, store=s3["url"], endpoint_url=s3["server"].endpoint)
    assert again.path == first.path and again.origin == "cache" and not again.downloaded
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "unreachable" in warning and "offline mode" in warning and key in warning and s3["url"] in warning

    with pytest.raises(WeightsUnavailableError) as err:
        resolve("layer_2/nafnet/never-uploaded.pth", store=s3["url"], endpoint_url=s3["server"].endpoint)
    msg = str(err.value)
    assert "layer_2/nafnet/never-uploaded.pth" in msg and s3["url"] in msg and "unreachable" in msg
    assert "python -m platform.pretrained upload" in msg

    assert cli([*s3["opts"], "list"]) == 2
    assert "cannot be reached" in capsys.readouterr().err


def test_object_without_metadata_is_downloaded_once_with_a_warning(s3, env, caplog):
    src = _weights(env / "legacy.pth")
    key = "layer_2/nafnet/legacy.pth"
    s3["client"].put_object(Bucket=s3["bucket"], Key=f"{PREFIX}/{key}", Body=src.read_bytes())
    with caplog.at_level(logging.WARNING, logger="platform.pretrained"):
        first = pull(key, store=_store(s3))
    assert first.downloaded and first.path.read_bytes() == src.read_bytes()
    assert any("could not be verified" in r.getMessage() for r in caplog.records)
    second = pull(key, store=_store(s3))  # same ETag: no new download
    assert not second.downloaded and second.path == first.path
    assert s3["server"].count("GET", f"/{s3['bucket']}/{PREFIX}/{key}") == 1


def test_credentials_never_logged_printed_or_in_errors(s3, env, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # botocore's DEBUG log prints the signed Authorization header
    # ... and Ray's AWS autoscaler module sets the botocore logger to WARNING when imported.
    caplog.set_level(logging.DEBUG, logger="botocore")
    src = _weights(env / "w.pth")
    key = _upload(s3, src)
    assert cli([*s3["opts"], "-vv", "list"]) == 0
    assert cli([*s3["opts"], "pull", key]) == 0
    s3["client"].put_object(Bucket=s3["bucket"], Key=f"{PREFIX}/{key}", Body=b"tampered")
    errors = []
    with pytest.raises(ChecksumMismatchError) as err:
        pull(key, store=_store(s3), cache=env / "cache2")
    errors.append(str(err.value))

    # an endpoint URL carrying the credentials is refused, without echoing them
    with pytest.raises(ConfigError, match="standard AWS chain") as err:
        S3Store(s3["url"], endpoint_url=f"http://{KEY_ID}:{SECRET}@127.0.0.1:9000")
    errors.append(str(err.value))
    assert cli(["--store", s3["url"], "--endpoint", f"http://{KEY_ID}:{SECRET}@127.0.0.1:9000", "list"]) == 2
    # an endpoint where nothing listens: the error names the store, not the credentials
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WeightsUnavailableError) as err:
        pull("layer_2/nafnet/other.pth", store=S3Store(s3["url"], endpoint_url=f"http://127.0.0.1:{port}"))
    errors.append(str(err.value))
    assert f"127.0.0.1:{port}" in errors[-1]

    out = capsys.readouterr()
    texts = [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    texts += errors + [out.out, out.err]
    assert any("Credential=***" in t for t in texts), "botocore's signed-request log was not captured"
    for text in texts:
        assert KEY_ID not in text and SECRET not in text, text


def test_public_config_is_safe_for_mlflow(env):
    store = S3Store("s3://models/pretrained_models", endpoint_url="http://minio:9000", region="eu-west-1")
    assert public_config(store) == {"pretrained_store": "s3://models/pretrained_models",
                                    "pretrained_endpoint": "http://minio:9000", "pretrained_region": "eu-west-1"}
    assert scrub_url(f"http://{KEY_ID}:{SECRET}@minio:9000/x") == "http://minio:9000/x"
    register_secrets([KEY_ID, SECRET])
    assert scrub(f"key {KEY_ID} secret={SECRET} X-Amz-Signature=abc123&x=1") == "key *** secret=*** X-Amz-Signature=***&x=1"


def test_official_nafnet_release_uploaded_as_documented_loads_strictly_by_preset(s3, env, monkeypatch):
    """A release in the official format (`{"params": ...}`), uploaded with the command of docs/pretrained.md
    (`--group layer_2 --arch nafnet --state-dict-key params`) to the S3 store, is what
    `create(preset, pretrained=True)` pulls and loads strictly: every tensor, bit for bit."""
    import torch

    from platform.models import MODELS, create

    torch.manual_seed(3)
    release = create("nafnet-gopro-width32")
    for p in release.parameters():
        p.data.normal_()
    path = env / "NAFNet-GoPro-width32.pth"
    torch.save({"params": release.state_dict()}, path)
    key = _upload(s3, path, extra=["--state-dict-key", "params", "--licence", "MIT"])
    assert key == MODELS.meta("nafnet-gopro-width32")["pretrained_key"]
    monkeypatch.setenv("PLATFORM_PRETRAINED_STORE", s3["url"])
    monkeypatch.setenv("PLATFORM_PRETRAINED_ENDPOINT", s3["server"].endpoint)
    model = create("nafnet-gopro-width32", pretrained=True, tlc=False)
    state = model.state_dict()
    assert state.keys() == release.state_dict().keys() and len(state) > 300
    assert all(torch.equal(state[k], v) for k, v in release.state_dict().items())


def test_upload_without_force_repairs_a_damaged_object(s3, env, capsys, tmp_path):
    """Issue 15.8: the metadata says the file is there, but the object is truncated: a plain
    upload puts it back instead of saying "nothing to do" (S3 by size, a local store by sha256)."""
    src = _weights(env / "NAFNet-damaged-width8.pth")
    key = _upload(s3, src)
    s3["client"].put_object(Bucket=s3["bucket"], Key=f"{PREFIX}/{key}", Body=src.read_bytes()[:1000])
    assert cli([*s3["opts"], "upload", str(src), "--group", "layer_2", "--arch", "nafnet"]) == 0
    assert "nothing to do" not in capsys.readouterr().out
    body = s3["client"].get_object(Bucket=s3["bucket"], Key=f"{PREFIX}/{key}")["Body"].read()
    assert body == src.read_bytes()
    assert cli([*s3["opts"], "upload", str(src), "--group", "layer_2", "--arch", "nafnet"]) == 0
    assert "nothing to do" in capsys.readouterr().out  # intact now

    local = ["--store", str(tmp_path / "store"), "--no-progress"]
    assert cli([*local, "upload", str(src), "--group", "layer_2", "--arch", "nafnet"]) == 0
    stored = tmp_path / "store" / key
    stored.write_bytes(bytes(len(src.read_bytes())))  # same size, other bytes
    capsys.readouterr()
    assert cli([*local, "upload", str(src), "--group", "layer_2", "--arch", "nafnet"]) == 0
    assert "nothing to do" not in capsys.readouterr().out and stored.read_bytes() == src.read_bytes()


def test_cache_verifies_a_blob_once_per_process_without_verify(s3, env, monkeypatch):
    """Issue 15.8: a cached file damaged on disk (same size) is caught by the first use in a
    process, without --verify, and downloaded again; later uses in the process do not re-hash."""
    import platform.pretrained.cache as cache_mod
    from platform.pretrained import pull

    src = _weights(env / "NAFNet-cached-width8.pth")
    key = _upload(s3, src)
    first = pull(key, store=s3["url"], endpoint_url=s3["server"].endpoint).path
    first.chmod(0o644)
    first.write_bytes(bytes(len(src.read_bytes())))  # bit rot: same size, other bytes
    monkeypatch.setattr(cache_mod, "_VERIFIED", set())  # a new process
    again = pull(key, store=s3["url"], endpoint_url=s3["server"].endpoint).path
    assert again.read_bytes() == src.read_bytes()
    hashes = []
    real = cache_mod.sha256_file
    monkeypatch.setattr(cache_mod, "sha256_file", lambda *a, **k: hashes.append(a) or real(*a, **k))
    pull(key, store=s3["url"], endpoint_url=s3["server"].endpoint)
    assert hashes == []  # verified once in this process already
