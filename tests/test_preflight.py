"""Issue 15.8: a search whose trials need GPUs the cluster does not have stops at once, saying
what to do, instead of waiting for ever ("No trial is running ... 0 GPUs available")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from platform.config import load_spec
from platform.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_trial_asking_for_a_gpu_on_a_cpu_only_ray_is_refused():
    import ray

    from platform.search.preflight import check_cluster_fits

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False)
    try:
        full = load_spec("nafnet_fewshot")
        assert full["resources"]["gpus_per_worker"] > 0
        with pytest.raises(ConfigError) as e:
            check_cluster_fits(full, address=None)
        for hint in ("--quick", "--set resources.gpus_per_worker=0", "--address", "0 GPU(s)"):
            assert hint in str(e.value), str(e.value)
        check_cluster_fits(load_spec("nafnet_fewshot", quick=True), address=None)  # CPU trials fit
        ddp = load_spec("nafnet_fewshot", quick=True, overrides={"resources": {"workers": 2, "cpus_per_worker": 1}})
        check_cluster_fits(ddp, address=None)
        too_wide = load_spec("nafnet_fewshot", quick=True, overrides={"resources": {"cpus_per_worker": 3}})
        with pytest.raises(ConfigError, match="cpus_per_worker=3"):
            check_cluster_fits(too_wide, address=None)
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_main_command_without_quick_on_a_cpu_machine_stops_with_advice(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-m", "platform.search", "nafnet_fewshot", "--num-gpus", "0",
                          "--storage", str(tmp_path / "ray")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "--quick" in out.stderr and "gpus_per_worker=0" in out.stderr and "Traceback" not in out.stderr
