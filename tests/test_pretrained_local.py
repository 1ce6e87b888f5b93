"""The embedded default store (a local folder), key validation and the library-hub fallback."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from platform.errors import ConfigError
from platform.pretrained import (
    ChecksumMismatchError,
    LocalStore,
    WeightsUnavailableError,
    configured_store,
    pull,
    resolve,
    resolver,
    store_root,
)
from platform.pretrained.__main__ import main as cli
from platform.pretrained.meta import make_key, validate_key


@pytest.fixture()
def env(tmp_path, monkeypatch):
    for name in ("PLATFORM_PRETRAINED_STORE", "PLATFORM_PRETRAINED_ENDPOINT", "PLATFORM_PRETRAINED_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLATFORM_PRETRAINED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATFORM_PRETRAINED_HUB", "0")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_default_store_is_dot_cache_pretrained_in_cwd(env):
    assert isinstance(configured_store(), LocalStore)
    assert store_root() == env / ".cache" / "pretrained"
    target = env / ".cache" / "pretrained" / "torchvision" / "alexnet-owt-7be5be79.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"weights")
    assert resolve("torchvision/alexnet-owt-7be5be79.pth") == target  # hand-placed, no metadata needed
    with pytest.raises(WeightsUnavailableError) as err:
        resolve("timm/resnet18.a1_in1k.pth")
    msg = str(err.value)
    assert "timm/resnet18.a1_in1k.pth" in msg and str(env / ".cache" / "pretrained") in msg
    assert "PLATFORM_PRETRAINED_HUB=0" in msg


def test_cli_on_a_local_folder_store_and_corruption_checks(env, capsys, monkeypatch):
    store = env / "store"
    monkeypatch.setenv("PLATFORM_PRETRAINED_DIR", str(store))
    src = env / "w.pth"
    src.write_bytes(b"0123456789" * 1000)
    assert cli(["setup", "--groups", "layer_2", "--arch", "layer_2/nafnet"]) == 0
    assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()) == [
        "README.md", "layer_2/README.md", "layer_2/nafnet/README.md"]
    assert cli(["--progress", "upload", str(src), "--group", "layer_2", "--arch", "nafnet", "--licence", "MIT"]) == 0
    key = "layer_2/nafnet/w.pth"
    meta = json.loads((store / f"{key}.meta.json").read_text())
    assert meta["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() and meta["size"] == 10_000
    capsys.readouterr()
    assert cli(["list", "--json"]) == 0
    assert [r["key"] for r in json.loads(capsys.readouterr().out)] == [key]
    assert resolve(key) == store / key

    (store / key).write_bytes(b"0123456789" * 999)  # truncated: the size check catches it every time
    with pytest.raises(ChecksumMismatchError, match="size"):
        resolve(key)
    (store / key).write_bytes(b"x" * 10_000)  # same size: only a verified pull catches it
    assert resolve(key) == store / key
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        pull(key, verify=True)
    assert cli(["pull", "--verify", key]) == 2


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "a/../b.pth", "a\\b.pth", "layer_2/x.pth.meta.json",
                                 "layer_2/README.md", "/"])
def test_bad_keys_are_config_errors(bad):
    with pytest.raises(ConfigError):
        validate_key(bad)


def test_keys():
    assert validate_key("/layer_2/nafnet/NAFNet-SIDD-width64.pth") == "layer_2/nafnet/NAFNet-SIDD-width64.pth"
    assert make_key("torchvision", None, "/tmp/alexnet-owt-7be5be79.pth") == "torchvision/alexnet-owt-7be5be79.pth"


def test_hub_fallback_when_the_store_lacks_a_third_party_file(env, monkeypatch):
    calls = []

    def fake_fetch(key: str, dest: Path, progress: bool) -> dict:
        calls.append(key)
        dest.write_bytes(b"alexnet trunk")
        return {"source": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "licence": "BSD-3-Clause"}

    monkeypatch.setattr(resolver, "hub_source", lambda key: ("torchvision", fake_fetch, "download.pytorch.org"))
    key = "torchvision/alexnet-owt-7be5be79.pth"
    # no network: an error that says so
    monkeypatch.setattr(resolver, "network_available", lambda host: False)
    with pytest.raises(WeightsUnavailableError, match="cannot be reached from this machine"):
        pull(key, hub=True)
    assert calls == []
    # network: fetched once into the content-addressed cache, then served from it
    monkeypatch.setattr(resolver, "network_available", lambda host: True)
    first = pull(key, hub=True)
    sha = hashlib.sha256(b"alexnet trunk").hexdigest()
    assert first.origin == "hub" and first.downloaded and first.path.name == f"{sha}.pth"
    assert first.meta.licence == "BSD-3-Clause"
    second = pull(key, hub=True)
    assert second.path == first.path and not second.downloaded and calls == [key]
    assert list((env / "cache" / "tmp").iterdir()) == []


def test_real_hub_sources_are_registered():
    from platform.pretrained.hub import HUB_SOURCES, hub_source

    assert set(HUB_SOURCES.available()) >= {"torchvision", "timm"}
    assert hub_source("torchvision/vgg16-397923af.pth")[2] == "download.pytorch.org"
    assert hub_source("layer_2/nafnet/NAFNet-SIDD-width64.pth") is None
