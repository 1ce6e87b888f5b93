"""Search-space YAML: the quick profile, validation messages, and the Tune space it becomes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from platform.config import load_spec
from platform.errors import ConfigError
from platform.search.presets import cpu_nafnet

REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path, text: str) -> Path:
    base = yaml.safe_load((REPO / "search_spaces" / "nafnet_fewshot.yaml").read_text())
    patch = yaml.safe_load(text) or {}

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v
        return a

    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(merge(base, patch)))
    return p


def test_shipped_space_loads_with_and_without_quick():
    full = load_spec("nafnet_fewshot")
    quick = load_spec("nafnet_fewshot", quick=True)
    assert full["train"]["epochs"] > quick["train"]["epochs"]
    assert full["search"]["scheduler"]["max_t"] == full["train"]["epochs"]
    # --quick: two long trials of the lut3d family, sized to about 3 minutes of this machine.
    assert quick["model"]["architecture"] == "lut3d" and quick["search"]["timebox"]["seconds"] == 180
    assert full["search"]["timebox"]["seconds"] is None and full["model"]["architecture"] == "nafnet"
    assert full["promotion"] == {"min_gain": None, "floors": True}
    assert set(full["loss"]) == {"l1", "lpips", "laplacian", "ssim"}
    assert full["search"]["searcher"]["name"] == "optuna" and full["search"]["scheduler"]["name"] == "asha"


@pytest.mark.parametrize("patch, needle", [
    ("model: {architecture: nafnett}", "model.architecture"),
    ("model: {architecture: nafnett}", "Did you mean 'nafnet'"),
    ("loss: {l1: -0.5}", "loss.l1"),
    ("loss: {l1: {uniform: [-1, 1]}}", "must be >= 0"),
    ("loss: {l7: 1.0}", "an unknown loss component"),
    ("optimizer: {lr: {loguniform: [0, 1]}}", "low > 0"),
    ("optimizer: {lrr: 0.1}", "optimizer.lrr` is not a known key"),
    ("train: {epochs: ten}", "train.epochs"),
    ("train: {epochs: {choice: [1, 2]}}", "cannot be searched"),
    ("search: {mode: maximize}", "allowed values: max, min"),
    ("task: {crop: -3}", "must be > 0"),
    ("model: {size: huge}", "has sizes: small, base, large"),
    ("bogus: 1", "`bogus` is not a known key"),
    ("compress: {pareto_frame: 1080i}", "compress.pareto_frame"),
    ("compress: {pareto_frame: '640x0'}", "1080p"),
])
def test_bad_values_are_named(tmp_path, patch, needle):
    with pytest.raises(ConfigError) as e:
        load_spec(_write(tmp_path, patch))
    assert needle in str(e.value)
    assert str(tmp_path / "space.yaml") in str(e.value)


def test_unknown_space_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="nafnet_fewshot"):
        load_spec("no_such_space")


def test_param_space_has_tune_domains():
    from ray.tune.search.sample import Categorical, Float

    from platform.search.space import param_space, searched_keys

    spec = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet())
    space = param_space(spec, {"storage_path": "/x"})
    assert isinstance(space["optimizer"]["lr"], Float)
    assert isinstance(space["model"]["options"]["width"], Categorical)
    assert space["_run"] == {"storage_path": "/x"}
    assert "optimizer.lr" in searched_keys(spec.config) and "loss.l1" in searched_keys(spec.config)


def _clis(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """``python -m platform.search`` with each argument list, run side by side (each one mostly imports)."""
    procs = [subprocess.Popen([sys.executable, "-m", "platform.search", *args], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in commands]
    outs = []
    for args, proc in zip(commands, procs):
        stdout, stderr = proc.communicate(timeout=300)
        outs.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
    return outs


def test_cli_bad_input_is_one_paragraph_without_traceback(tmp_path):
    import numpy as np

    from platform.data.io import write_image

    unmatched, unreadable = tmp_path / "unmatched", tmp_path / "unreadable"
    for folder in ("arch", "lam"):
        (tmp_path / folder).mkdir()
    write_image(unmatched / "input" / "a.png", np.zeros((80, 80, 3)))
    write_image(unmatched / "target" / "b.png", np.zeros((80, 80, 3)))
    write_image(unreadable / "target" / "a.png", np.zeros((80, 80, 3)))
    (unreadable / "input").mkdir()
    (unreadable / "input" / "a.png").write_bytes(b"not an image at all")
    arch, lam, missing, names, image = _clis(
        (str(_write(tmp_path / "arch", "model: {architecture: resnet9000}")),),  # unknown architecture
        (str(_write(tmp_path / "lam", "loss: {ssim: -1}")),),  # negative lambda
        ("nafnet_fewshot", "--quick", "--data", str(tmp_path / "missing")),  # a missing data folder
        ("nafnet_fewshot", "--quick", "--data", str(unmatched)),  # unmatched names
        ("nafnet_fewshot", "--quick", "--data", str(unreadable)))  # an unreadable image
    for out in (arch, lam, missing, names, image):
        assert out.returncode == 2 and "Traceback" not in out.stderr, (out.args, out.stderr[-3000:])
    assert "model.architecture" in arch.stderr and "resnet9000" in arch.stderr
    assert "loss.ssim" in lam.stderr
    assert "does not exist" in missing.stderr
    assert "a.png" in names.stderr and "b.png" in names.stderr
    assert "a.png" in image.stderr and "unreadable" in image.stderr
    assert not (REPO / "mlruns" / "nothing").exists()


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_space_validates_full_and_quick(path):
    from platform import models

    for quick in (False, True):
        spec = load_spec(path.stem, quick=quick)
        assert spec.name == path.stem
        arch = spec["model"]["architecture"]
        for a in (arch["choice"] if isinstance(arch, dict) else [arch]):
            assert a in models.available(), (path.name, a)
        if quick:
            # Small enough for a CPU: a few epochs, or a wall-clock budget the trials are sized to.
            assert spec["resources"]["gpus_per_worker"] == 0
            assert spec["train"]["epochs"] <= 6 or spec["search"]["timebox"]["seconds"] <= 300


def test_set_overrides_are_dotted_yaml_values_applied_after_quick():
    from platform.search.__main__ import parse_overrides

    sets = parse_overrides(["resources.gpus_per_worker=0.25", "search.max_concurrent=4",
                            "optimizer.lr={loguniform: [1.0e-4, 1.0e-3]}", "task.augment.hflip=0"])
    assert sets == {"resources": {"gpus_per_worker": 0.25}, "search": {"max_concurrent": 4},
                    "optimizer": {"lr": {"loguniform": [1.0e-4, 1.0e-3]}}, "task": {"augment": {"hflip": 0}}}
    spec = load_spec("nafnet_fewshot", quick=True, overrides=cpu_nafnet(sets))
    assert spec["resources"]["gpus_per_worker"] == 0.25 and spec["search"]["max_concurrent"] == 4
    for bad in ("resources.gpus_per_worker", "=3", "a..b=1", "x=[1, 2"):
        with pytest.raises(ConfigError, match="--set"):
            parse_overrides([bad])


def test_set_with_an_unknown_key_is_a_clear_cli_error():
    r = subprocess.run([sys.executable, "-m", "platform.search", "nafnet_fewshot", "--quick",
                        "--set", "resources.gpus_per_workr=0.5"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "gpus_per_workr" in r.stderr and "Traceback" not in r.stderr
