"""`platform` shadows the stdlib module: it must behave exactly like it for everyone else."""

from __future__ import annotations

import inspect
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import platform as ours

REPO = Path(__file__).resolve().parent.parent


def _stdlib():
    import importlib.util

    path = Path(sysconfig.get_paths()["stdlib"]) / "platform.py"
    spec = importlib.util.spec_from_file_location("_reference_platform", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REF = _stdlib()
PUBLIC = sorted(n for n in dir(REF) if not n.startswith("_"))
NO_ARG_FUNCTIONS = [n for n in PUBLIC if inspect.isfunction(getattr(REF, n))
                    and all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                            for p in inspect.signature(getattr(REF, n)).parameters.values())]


def test_we_are_the_package():
    assert Path(ours.__file__).resolve() == REPO / "platform" / "__init__.py"
    assert hasattr(ours, "__path__")  # a package, so platform.<sub> imports work


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_is_exported(name):
    assert hasattr(ours, name), name


@pytest.mark.parametrize("name", NO_ARG_FUNCTIONS)
def test_functions_give_the_stdlib_result(name):
    assert len(NO_ARG_FUNCTIONS) > 10
    assert getattr(ours, name)() == getattr(REF, name)()


def test_functions_with_arguments():
    assert ours.python_version_tuple() == REF.python_version_tuple()
    assert ours.platform(aliased=True, terse=True) == REF.platform(aliased=True, terse=True)
    assert ours.architecture(sys.executable) == REF.architecture(sys.executable)


def test_torch_and_mlflow_work_with_the_package_first_on_the_path(tmp_path):
    code = (
        "import platform, torch, mlflow, numpy;"
        "assert platform.__file__.endswith('platform/__init__.py');"
        f"mlflow.set_tracking_uri('sqlite:///' + r'{tmp_path}/m.db');"
        "r = mlflow.start_run(); mlflow.log_metric('x', 1.0); mlflow.end_run();"
        "print(torch.ones(2).sum().item(), platform.system())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["2.0", REF.system()]


def test_ray_workers_see_our_package_through_working_dir():
    import ray

    ray.init(address="local", num_cpus=2, runtime_env={"working_dir": str(REPO), "excludes": [".git", ".venv", "mlruns", ".cache"]},
             include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote
        def probe():
            import platform
            from platform.registry import Registry

            return platform.system(), platform.python_version(), Registry.__module__

        assert ray.get(probe.remote()) == (REF.system(), REF.python_version(), "platform.registry")
    finally:
        ray.shutdown()
