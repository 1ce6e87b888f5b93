"""Shared fixtures: every test runs from the repository root with private caches/stores."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The bundled sample data is deterministic: build it once per session under the repo cache.
os.environ.setdefault("PLATFORM_DATA_DIR", str(REPO / ".cache" / "data"))


@pytest.fixture(autouse=True)
def _fresh_mlflow_uris():
    """A search run in this process calls ``mlflow.set_tracking_uri``, and MLflow's process-wide
    URI then outranks MLFLOW_TRACKING_URI for every later client: a later test pointing the
    environment at another store (e.g. an MLflow server) would still talk to the old SQLite
    file. Each test starts from the environment alone."""
    yield
    if "mlflow" in sys.modules:
        import mlflow.tracking._model_registry.utils as registry_utils
        import mlflow.tracking._tracking_service.utils as tracking_utils

        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    """Run in a fresh directory (own ./mlruns) with the repo still importable."""
    monkeypatch.chdir(tmp_path)
    # MLflow exports the URIs a search sets into os.environ; setenv first records the variable's
    # state before the test, so that teardown restores it (a bare delenv of an absent one would not).
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
