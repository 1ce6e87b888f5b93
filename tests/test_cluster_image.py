"""clusters/Dockerfile and the optional ``docker:`` block of clusters/aws.yaml. No Docker engine runs
on these machines, so the image is checked as text against requirements.txt and setup.sh, and
aws.yaml with the block uncommented goes through Ray's own cluster-config check."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "clusters" / "Dockerfile"
AWS = REPO / "clusters" / "aws.yaml"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def requirement_pins() -> dict[str, str | None]:
    """requirements.txt as {normalised name: pinned version or None}."""
    out = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[_norm(name)] = version or None
    return out


def dockerfile_runs() -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line[4:] for line in text.splitlines() if line.startswith("RUN ")]


def pip_installs() -> list[list[str]]:
    """The arguments of every ``pip install`` in the Dockerfile's RUN steps."""
    out = []
    for run in dockerfile_runs():
        for part in run.split("&&"):
            words = shlex.split(part)
            if len(words) > 2 and words[0].endswith("pip") and words[1] == "install":
                out.append(words[2:])
    return out


def test_image_installs_exactly_requirements_txt():
    installs = pip_installs()
    assert ["-r", "requirements.txt"] in installs
    assert re.search(r"^COPY requirements\.txt ", DOCKERFILE.read_text(), re.MULTILINE)
    pins = requirement_pins()
    named = [w for args in installs for w in args if "==" in w]
    assert named, "the CUDA/CPU torch wheels are named with their versions"
    for word in named:
        name, version = word.split("==")
        assert pins.get(_norm(name)) == version, f"{word} in the Dockerfile, requirements.txt has {pins.get(_norm(name))}"


def test_image_checks_the_same_imports_as_setup_sh():
    check = re.compile(r'python -c "(import [^"]+)"')
    assert check.search(" ".join(dockerfile_runs())).group(1) == check.search((REPO / "setup.sh").read_text()).group(1)


def test_image_holds_every_folder_the_cluster_ships():
    mounts = yaml.safe_load(AWS.read_text())["file_mounts"]
    folders = {Path(src).name for src in mounts.values() if src.startswith("./") and (REPO / src).is_dir()}
    copied = set(re.findall(r"^COPY (\S+) \./", DOCKERFILE.read_text(), re.MULTILINE))
    assert folders and folders <= copied, folders - copied
    assert "PYTHONPATH=/opt/project" in DOCKERFILE.read_text() and "RAY_AUTH_MODE=token" in DOCKERFILE.read_text()


def with_docker_block(text: str) -> dict:
    """aws.yaml with its commented ``docker:`` block switched on."""
    start, end = text.index("# --- docker block ---\n"), text.index("# --- end docker block ---")
    block = "\n".join(line[2:] for line in text[start:end].splitlines()[1:])
    config = yaml.safe_load(text)
    config.update(yaml.safe_load(block))
    return config


def test_aws_yaml_validates_with_the_docker_block():
    config = with_docker_block(AWS.read_text())
    assert config["docker"]["container_name"] and config["docker"]["image"].endswith(":gpu")
    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("broken", [{"pull_before_run": "sometimes"}, {"run_options": "--gpus all"},
                                    {"no_such_option": 1}])
def test_a_broken_docker_block_fails_rays_check(broken):
    config = with_docker_block(AWS.read_text())
    config["docker"].update(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(copy.deepcopy(config)))
