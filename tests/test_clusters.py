"""Cluster configurations (clusters/aws.yaml, clusters/local.yaml, clusters/local.sh).

The YAML files are checked against Ray's own cluster-config schema the way Ray's test-suite
does it (python/ray/tests/test_autoscaler_yaml.py: ``prepare_config`` merges the provider's
defaults, then ``validate_config`` applies the bundled ``ray-schema.json`` and the
node-type checks), and broken copies must fail that same check. The properties a schema
cannot see (spot GPU workers, scaling from zero, only SSH reachable, no keys, the Ray pin,
token auth, S3 storage) are asserted directly, and the environment file the nodes source is
generated with bash and read back. Nothing here starts a cluster or talks to AWS, except the
opt-in test at the end (PLATFORM_CLUSTER_TESTS=1), which starts clusters/local.sh.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from netutil import free_ports

REPO = Path(__file__).resolve().parent.parent
AWS = REPO / "clusters" / "aws.yaml"
LOCAL = REPO / "clusters" / "local.yaml"
LOCAL_SH = REPO / "clusters" / "local.sh"
README = REPO / "clusters" / "README.md"

# GPUs per instance type (AWS instance specifications); a node type must advertise what
# its instance type really has, or the autoscaler plans with wrong numbers.
GPUS = {"g5.xlarge": 1, "g6.xlarge": 1, "g5.12xlarge": 4, "g6.12xlarge": 4, "m5.xlarge": 0, "m5.large": 0}
CPUS = {"g5.xlarge": 4, "g6.xlarge": 4, "g5.12xlarge": 48, "g6.12xlarge": 48, "m5.xlarge": 4, "m5.large": 2}


def load(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def ray_check(config: dict) -> None:
    """What `ray up` does with a config before using it (defaults merged, then validated)."""
    validate_config(prepare_config(copy.deepcopy(config)))


def ray_check_complete(config: dict) -> None:
    """For local.yaml: Ray's wheel lacks the fake_multinode defaults file that prepare_config
    would merge, so the file is complete and is validated as it is."""
    validate_config(copy.deepcopy(config))


def node_types(config: dict) -> dict:
    return config["available_node_types"]


def worker_types(config: dict) -> dict:
    return {k: v for k, v in node_types(config).items() if k != config["head_node_type"]}


def all_commands(config: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [c for k in keys for c in config.get(k, [])]


def env_file_command(config: dict) -> str:
    [cmd] = [c for c in config["setup_commands"] if c.rstrip().endswith("> ~/.hpo_env")]
    return cmd


def env_exports(config: dict) -> dict[str, str]:
    """The `export NAME=VALUE` lines the setup command writes to ~/.hpo_env (unexpanded)."""
    words = shlex.split(env_file_command(config).rsplit(">", 1)[0])
    assert words[:2] == ["printf", "%s\\n"], words[:2]
    out = {}
    for line in words[2:]:
        m = re.fullmatch(r'(?:\[ -n "\$\{RAY_HEAD_IP:-\}" \] \|\| )?export (\w+)=(.*)', line)
        assert m, f"not an export line: {line!r}"
        out[m.group(1)] = m.group(2)
    return out


def source_env_file(config: dict, tmp_path: Path, head_ip: str | None) -> dict[str, str]:
    """Run the setup command in a scratch HOME, source the file as a start command does, and
    return the resulting environment."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    subprocess.run(["bash", "-c", env_file_command(config)], env=env, check=True)
    prefix = f"export RAY_HEAD_IP={head_ip}; " if head_ip else ""
    out = subprocess.run(["bash", "-c", prefix + ". ~/.hpo_env && env -0"], env=env, check=True,
                         capture_output=True).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


@pytest.fixture(scope="module")
def aws() -> dict:
    return load(AWS)


@pytest.fixture(scope="module")
def local() -> dict:
    return load(LOCAL)


# --------------------------------------------------------------------------- Ray's schema
def test_aws_config_passes_rays_cluster_schema(aws):
    ray_check(aws)
    prepared = prepare_config(copy.deepcopy(aws))
    # The merge keys (<<: *gpu_node) resolved into full node configs.
    assert prepared["available_node_types"]["gpu_1x_g6"]["node_config"]["InstanceType"] == "g6.xlarge"
    assert prepared["available_node_types"]["gpu_1x_g6"]["node_config"]["ImageId"].startswith("resolve:ssm:")


def test_local_config_passes_rays_cluster_schema(local):
    ray_check_complete(local)


def _rename(d: dict, old: str, new: str) -> None:
    d[new] = d.pop(old)


BROKEN = {
    "misspelled top-level key": (lambda c: _rename(c, "max_workers", "max_worker"), "max_worker"),
    "misspelled node-type key": (
        lambda c: _rename(c["available_node_types"]["gpu_1x_g5"], "min_workers", "min_worker"), "min_worker"),
    "max_workers is a string": (lambda c: c.update(max_workers="six"), "six"),
    "fractional GPU count": (lambda c: c["available_node_types"]["gpu_1x_g5"]["resources"].update(GPU=0.5), "0.5"),
    "start commands not a list": (lambda c: c.update(head_start_ray_commands="ray start --head"), "ray start"),
    "idle timeout negative": (lambda c: c.update(idle_timeout_minutes=-1), "-1"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_aws_copy_fails_rays_check(aws, name):
    mutate, shown = BROKEN[name]
    broken = copy.deepcopy(aws)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError) as exc:
        ray_check(broken)
    assert shown in str(exc.value)


def test_head_type_must_exist_and_sum_of_min_workers_fits(aws, local):
    broken = copy.deepcopy(aws)
    broken["head_node_type"] = "ray.head.misspelled"
    with pytest.raises((ValueError, KeyError)):
        ray_check(broken)
    broken = copy.deepcopy(local)
    broken["max_workers"] = 1  # local.yaml pins 3 workers (min_workers sum)
    with pytest.raises(ValueError, match="max_workers"):
        ray_check_complete(broken)
    broken = copy.deepcopy(local)
    broken["available_node_types"]["cpu_worker"]["resources"]["CPU"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        ray_check_complete(broken)


# --------------------------------------------------------------------------- node types
def test_cpu_head_on_demand_and_gpu_workers_on_spot_from_zero(aws):
    head = node_types(aws)[aws["head_node_type"]]
    assert head["node_config"]["InstanceType"] in GPUS and GPUS[head["node_config"]["InstanceType"]] == 0
    assert "InstanceMarketOptions" not in head["node_config"], "the head must not be a spot instance"
    assert head["resources"].get("GPU", 0) == 0

    workers = worker_types(aws)
    assert workers
    for name, t in workers.items():
        cfg = t["node_config"]
        itype = cfg["InstanceType"]
        assert t["resources"]["GPU"] == GPUS[itype] >= 1, name
        assert t["resources"]["CPU"] == CPUS[itype], name
        assert cfg["InstanceMarketOptions"]["MarketType"] == "spot", name
        assert t["min_workers"] == 0, name
        assert 1 <= t["max_workers"] <= aws["max_workers"], name
    gpus = {t["resources"]["GPU"] for t in workers.values()}
    assert {1, 4} <= gpus, "need a 1-GPU type (packed trials) and a 4-GPU type (DDP)"
    one_gpu = {t["node_config"]["InstanceType"] for t in workers.values() if t["resources"]["GPU"] == 1}
    assert one_gpu & {"g5.xlarge", "g6.xlarge"}
    assert sum(t.get("min_workers", 0) for t in node_types(aws).values()) == 0
    assert aws["idle_timeout_minutes"] <= 10


def test_every_node_uses_the_same_ami_disk_and_imdsv2(aws):
    images = {t["node_config"]["ImageId"] for t in node_types(aws).values()}
    assert len(images) == 1
    for name, t in node_types(aws).items():
        cfg = t["node_config"]
        assert cfg["MetadataOptions"]["HttpTokens"] == "required", name
        [root] = cfg["BlockDeviceMappings"]
        assert root["Ebs"]["Encrypted"] is True and root["Ebs"]["VolumeSize"] >= 100, name


# --------------------------------------------------------------------------- network
def test_only_ssh_is_reachable_from_outside(aws):
    # Ray creates its own security group, with 22 open to 0.0.0.0/0, for any node type
    # without SecurityGroupIds; every type must name the restricted group instead.
    groups = [t["node_config"].get("SecurityGroupIds") for t in node_types(aws).values()]
    assert all(groups), "a node type without SecurityGroupIds gets Ray's world-open SSH group"
    assert all(g == groups[0] for g in groups)
    assert all(re.fullmatch(r"sg-[0-9a-f]{8,17}", sg) for sg in groups[0])
    # Extra inbound rules through the provider, if any, may only be SSH and never world-open.
    for rule in aws["provider"].get("security_group", {}).get("IpPermissions", []):
        assert rule["FromPort"] == rule["ToPort"] == 22
        assert all(r["CidrIp"] != "0.0.0.0/0" for r in rule.get("IpRanges", []))
    assert aws["provider"].get("use_internal_ips", False) is False

    text = " ".join(all_commands(aws))
    # Dashboard and TensorBoard listen on localhost (reached through SSH port-forwarding).
    assert "--dashboard-host=127.0.0.1" in text
    [tensorboard] = [c for c in all_commands(aws) if "bin/tensorboard" in c]
    assert "--host 127.0.0.1" in tensorboard
    assert "--dashboard-host=0.0.0.0" not in text


def test_rays_aws_bootstrap_keeps_our_group_and_profiles_and_launches_spot_workers(aws, tmp_path, monkeypatch):
    """Ray's own AWS bootstrap and node provider against moto's EC2/IAM: with the documented
    security group and profiles in place, `ray up` creates no security group (Ray's default
    one opens SSH to 0.0.0.0/0) and no IAM role, adds no inbound rule, and launches the head
    on demand and the GPU workers as spot, with IMDSv2, the restricted group and their role."""
    from moto import mock_aws

    monkeypatch.setenv("HOME", str(tmp_path))  # Ray writes its new SSH key under ~/.ssh
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                 "AWS_DEFAULT_REGION": aws["provider"]["region"]}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler.tags import TAG_RAY_LAUNCH_CONFIG, TAG_RAY_NODE_KIND, TAG_RAY_NODE_NAME, TAG_RAY_USER_NODE_TYPE

    region = aws["provider"]["region"]
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=region)
        vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        sg = ec2.create_security_group(GroupName="fewshot-hpo", Description="ssh + self", VpcId=vpc)["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "203.0.113.7/32"}]},
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg}]}])
        iam = boto3.client("iam")
        trust = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
        for role in ("ray-hpo-head", "ray-hpo-worker"):
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
            iam.create_instance_profile(InstanceProfileName=role)
            iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
        config = copy.deepcopy(aws)
        for t in node_types(config).values():  # what the user does in step 5 of clusters/README.md
            t["node_config"]["SecurityGroupIds"] = [sg]

        out = bootstrap_aws(prepare_config(config))

        groups = ec2.describe_security_groups()["SecurityGroups"]
        assert sorted(g["GroupName"] for g in groups) == ["default", "fewshot-hpo"]
        [ours] = [g for g in groups if g["GroupId"] == sg]
        assert len(ours["IpPermissions"]) == 2
        assert "0.0.0.0/0" not in json.dumps([g["IpPermissions"] for g in groups])  # inbound rules
        assert sorted(r["RoleName"] for r in iam.list_roles()["Roles"]) == ["ray-hpo-head", "ray-hpo-worker"]
        subnets = {s["SubnetId"]: s["VpcId"] for s in ec2.describe_subnets()["Subnets"]}

        provider = AWSNodeProvider(out["provider"], out["cluster_name"])
        for name, t in node_types(out).items():
            cfg = copy.deepcopy(t["node_config"])
            assert cfg["KeyName"] and all(subnets[s] == vpc for s in cfg["SubnetIds"]), name
            provider.create_node(cfg, {TAG_RAY_NODE_KIND: "worker", TAG_RAY_USER_NODE_TYPE: name,
                                       TAG_RAY_NODE_NAME: name, TAG_RAY_LAUNCH_CONFIG: "test"}, 1)
        launched = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
        assert len(launched) == len(node_types(aws))
        for inst in launched:
            tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
            name = tags[TAG_RAY_USER_NODE_TYPE]
            is_head = name == aws["head_node_type"]
            assert inst["InstanceType"] == node_types(aws)[name]["node_config"]["InstanceType"]
            assert inst.get("InstanceLifecycle") == (None if is_head else "spot"), name
            assert [g["GroupId"] for g in inst["SecurityGroups"]] == [sg]
            assert inst["MetadataOptions"]["HttpTokens"] == "required"
            profile = "ray-hpo-head" if is_head else "ray-hpo-worker"
            assert inst["IamInstanceProfile"]["Arn"].endswith(":instance-profile/" + profile), name
            assert tags["project"] == "fewshot-hpo"


def test_documented_security_group_opens_only_ssh_to_one_cidr():
    text = README.read_text()
    rules = re.findall(r"authorize-security-group-ingress[^\n]*", text)
    assert len(rules) == 2, rules
    ssh = [r for r in rules if "--cidr" in r]
    self_rule = [r for r in rules if "--source-group" in r]
    assert len(ssh) == 1 and "--protocol tcp" in ssh[0] and "--port 22 " in ssh[0] + " "
    assert "0.0.0.0/0" not in ssh[0]
    assert len(self_rule) == 1


IAM = REPO / "clusters" / "iam"


def _policy(name: str, bucket: str) -> dict:
    return json.loads((IAM / name).read_text().replace("your-hpo-bucket", bucket).replace("ACCOUNT_ID", "123456789012"))


def test_iam_policies_are_the_files_the_readme_installs_and_name_only_the_bucket(aws):
    bucket = env_exports(aws)["PLATFORM_S3_BUCKET"]
    text = README.read_text()
    for name in ("trust.json", "s3-head.json", "s3-worker.json", "autoscaler.json"):
        assert f"/tmp/{name}" in text, name  # installed by the README's commands
        doc = _policy(name, bucket)
        assert doc["Version"] == "2012-10-17"
        for st in doc["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st.get("Resource", [])
            resources = resources if isinstance(resources, list) else [resources]
            if any(a.startswith("s3:") for a in actions):
                assert all(r == f"arn:aws:s3:::{bucket}" or r.startswith(f"arn:aws:s3:::{bucket}/") for r in resources)
                assert not any(r == f"arn:aws:s3:::{bucket}/*" for r in resources), "a prefix, never the whole bucket"
            if "iam:PassRole" in actions:
                assert st["Resource"].endswith(":role/ray-hpo-worker")


@pytest.fixture
def enforcing_s3():
    """A moto S3 + IAM endpoint on 127.0.0.1 that enforces IAM policies once set up."""
    import boto3
    from moto import settings
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    root = {"endpoint_url": url, "region_name": "us-west-2", "aws_access_key_id": "AKIAROOTSETUP",
            "aws_secret_access_key": "setup"}
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    try:
        yield url, boto3.client("s3", **root), boto3.client("iam", **root), settings
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        server.stop()


def test_iam_roles_allow_each_node_only_its_own_prefixes(aws, enforcing_s3):
    """The policy files, attached to principals of an S3 endpoint that enforces IAM: the
    workers' role cannot write MLflow's artifacts or the pretrained store, nor touch another
    bucket; the head's role can do what the head does and nothing outside the bucket."""
    import boto3
    from botocore.exceptions import ClientError

    url, s3, iam, settings = enforcing_s3
    bucket = env_exports(aws)["PLATFORM_S3_BUCKET"]
    for b in (bucket, "someone-elses-bucket"):
        s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        for key in ("ray-results/s/trial/ckpt", "mlflow-artifacts/1/model/MLmodel", "pretrained/w.pt", "other/x"):
            s3.put_object(Bucket=b, Key=key, Body=b"x")
    clients = {}
    for role, policy in (("worker", "s3-worker.json"), ("head", "s3-head.json")):
        iam.create_user(UserName=role)
        iam.put_user_policy(UserName=role, PolicyName="s3", PolicyDocument=json.dumps(_policy(policy, bucket)))
        key = iam.create_access_key(UserName=role)["AccessKey"]
        clients[role] = boto3.client("s3", endpoint_url=url, region_name="us-west-2",
                                     aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request is checked against its policy

    def allowed(role: str, op: str, key: str, b: str = bucket) -> bool:
        c = clients[role]
        call = {"get": lambda: c.get_object(Bucket=b, Key=key), "put": lambda: c.put_object(Bucket=b, Key=key, Body=b"y"),
                "delete": lambda: c.delete_object(Bucket=b, Key=key)}[op]
        try:
            call()
            return True
        except ClientError as e:
            assert e.response["Error"]["Code"] == "AccessDenied", e
            return False

    expect = {  # (role, operation, key): allowed
        ("worker", "put", "ray-results/s/trial/ckpt2"): True, ("worker", "get", "ray-results/s/trial/ckpt"): True,
        ("worker", "delete", "ray-results/s/trial/ckpt2"): True,
        ("worker", "get", "mlflow-artifacts/1/model/MLmodel"): True, ("worker", "get", "pretrained/w.pt"): True,
        ("worker", "put", "mlflow-artifacts/1/model/MLmodel"): False,
        ("worker", "delete", "mlflow-artifacts/1/model/MLmodel"): False,
        ("worker", "put", "pretrained/w.pt"): False, ("worker", "delete", "pretrained/w.pt"): False,
        ("worker", "get", "other/x"): False, ("worker", "put", "other/y"): False,
        ("head", "put", "mlflow-artifacts/2/model/MLmodel"): True, ("head", "delete", "ray-results/s/trial/ckpt"): True,
        ("head", "put", "pretrained/v.pt"): True, ("head", "get", "other/x"): False,
    }
    got = {k: allowed(*k) for k in expect}
    assert got == expect, {k: v for k, v in got.items() if v != expect[k]}
    for role in ("worker", "head"):  # another bucket: nothing
        assert not allowed(role, "get", "ray-results/s/trial/ckpt", "someone-elses-bucket")
        assert not allowed(role, "put", "ray-results/s/trial/x", "someone-elses-bucket")


# --------------------------------------------------------------------------- secrets, auth
SECRET_PATTERNS = [
    r"AKIA[0-9A-Z]{16}", r"ASIA[0-9A-Z]{16}", r"(?i)aws_secret_access_key", r"(?i)aws_access_key_id",
    r"(?i)aws_session_token", r"(?i)secret_key\s*[:=]", r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
]


@pytest.mark.parametrize("path", [AWS, LOCAL, LOCAL_SH, README], ids=lambda p: p.name)
def test_no_credentials_in_cluster_files(path):
    text = path.read_text()
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text), f"{path.name} matches {pattern}"


def test_nodes_get_s3_access_from_instance_profiles(aws):
    for name, t in node_types(aws).items():
        assert t["node_config"]["IamInstanceProfile"]["Name"], name
    head = node_types(aws)[aws["head_node_type"]]["node_config"]["IamInstanceProfile"]
    workers = {t["node_config"]["IamInstanceProfile"]["Name"] for t in worker_types(aws).values()}
    assert workers == {"ray-hpo-worker"} and head["Name"] == "ray-hpo-head"


def test_token_auth_stays_on(aws, local, tmp_path):
    for path in (AWS, LOCAL, LOCAL_SH):
        text = path.read_text()
        assert not re.search(r"RAY_AUTH_MODE\s*=\s*['\"]?(disabled|off|none)", text, flags=re.IGNORECASE), path.name
    # Every node exports RAY_AUTH_MODE=token before `ray start` and has the token file.
    assert env_exports(aws)["RAY_AUTH_MODE"] == "token"
    assert source_env_file(aws, tmp_path, None)["RAY_AUTH_MODE"] == "token"
    starts = [c for c in aws["head_start_ray_commands"] + aws["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2
    for cmd in starts:
        assert cmd.startswith(". ~/.hpo_env && "), cmd
    assert aws["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # local.sh exports it for every node it starts.
    assert re.search(r"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=", LOCAL_SH.read_text())


# --------------------------------------------------------------------------- software
def test_ray_pinned_to_2_60_0_and_project_installed_like_locally(aws):
    import ray

    assert ray.__version__ == "2.60.0"  # the laptop side that runs `ray up`
    req = (REPO / "requirements.txt").read_text()
    assert re.search(r"^ray\[[^\]]*\]==2\.60\.0$", req, flags=re.MULTILINE)
    setup = aws["setup_commands"]
    assert any(re.search(r"cd ~/project && (\w+=\S+ )*bash setup\.sh$", c) for c in setup)
    # The version check the nodes run, run here with this venv's Python: it passes on 2.60.0.
    [check] = [c for c in setup if "ray.__version__" in c]
    assert "ray.__version__ == '2.60.0'" in check
    assert check.startswith("~/project/.venv/bin/python ")
    local_check = sys.executable + check[len("~/project/.venv/bin/python"):]
    assert subprocess.run(["bash", "-c", local_check], cwd=REPO).returncode == 0
    for cmd in aws["head_start_ray_commands"] + aws["worker_start_ray_commands"]:
        for m in re.finditer(r"(\S+) (start|stop)\b", cmd):
            if m.group(1).endswith("ray"):
                assert m.group(1) == "~/project/.venv/bin/ray", cmd
    assert "mlflow" in " ".join(aws["head_start_ray_commands"])
    assert ".venv/bin/mlflow" in " ".join(aws["head_start_ray_commands"])


def test_file_mounts_ship_the_project_but_not_local_state(aws):
    mounts = {remote: local for remote, local in aws["file_mounts"].items() if remote != "~/.ray/auth_token"}
    for remote, local_path in mounts.items():
        assert remote.startswith("~/project/")
        assert (REPO / local_path).exists(), f"file_mounts source {local_path} does not exist"
        assert remote == "~/project/" + os.path.normpath(local_path)
    needed = {"platform", "search_spaces", "trainables", "requirements.txt", "setup.sh"}
    assert needed <= {os.path.normpath(p) for p in mounts.values()}
    # No mount of the whole checkout: Ray would hash .venv and mlruns on every `ray up`.
    assert not any(os.path.normpath(p) == "." for p in mounts.values())


def test_node_environment_points_at_s3_and_the_heads_mlflow(aws, tmp_path):
    exports = env_exports(aws)
    assert exports["AWS_DEFAULT_REGION"] == aws["provider"]["region"]
    zones = aws["provider"]["availability_zone"].split(",")
    assert all(z.startswith(aws["provider"]["region"]) for z in zones)

    on_head = source_env_file(aws, tmp_path, None)
    on_worker = source_env_file(aws, tmp_path, "10.0.3.17")
    bucket = on_head["PLATFORM_S3_BUCKET"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket), "not a valid S3 bucket name"
    assert on_head["PLATFORM_STORAGE_PATH"] == f"s3://{bucket}/ray-results"
    assert on_head["PLATFORM_MLFLOW_ARTIFACTS"] == f"s3://{bucket}/mlflow-artifacts"
    assert on_head["PLATFORM_PRETRAINED_STORE"] == on_worker["PLATFORM_PRETRAINED_STORE"] == f"s3://{bucket}/pretrained"
    # The driver on the head reaches MLflow on localhost; trials on workers have no MLflow at all.
    assert on_head["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert "MLFLOW_TRACKING_URI" not in on_worker
    home = str(tmp_path / "home")
    assert on_head["PYTHONPATH"] == f"{home}/project"
    assert on_head["PATH"].split(":")[0] == f"{home}/project/.venv/bin"
    assert on_head["PLATFORM_TENSORBOARD_DIR"] == f"{home}/tensorboard"
    assert on_head["PLATFORM_GPU_MEMORY_GB"] == on_worker["PLATFORM_GPU_MEMORY_GB"] == "24"  # A10G / L4

    mlflow = next(c for c in aws["head_start_ray_commands"] if " server " in c)
    args = shlex.split(mlflow.split("mlflow\" server", 1)[1])
    opts = dict(zip(args[::2], args[1::2]))
    assert opts["--artifacts-destination"] == "$PLATFORM_MLFLOW_ARTIFACTS"
    assert opts["--backend-store-uri"] == "sqlite:///$HOME/mlflow/mlflow.db"
    assert opts["--port"] == "5000"
    assert opts["--host"] == "127.0.0.1"  # reached through SSH (`ray attach -p 5000`), never on the network
    # The head is stopped, not terminated, by `ray down`: the SQLite store survives.
    assert aws["provider"]["cache_stopped_nodes"] is True


# --------------------------------------------------------------------------- local cluster
def test_local_layout_is_multi_node_and_fixed(local):
    head = node_types(local)[local["head_node_type"]]
    assert head["max_workers"] == 0
    workers = worker_types(local)
    assert sum(t["min_workers"] for t in workers.values()) >= 2
    for name, t in workers.items():
        assert t["min_workers"] == t["max_workers"], f"{name}: local.sh starts min_workers, no autoscaling"
    assert local["max_workers"] == sum(t["max_workers"] for t in workers.values())
    assert any(t["resources"].get("GPU", 0) >= 1 for t in workers.values())


def _run_local_sh(*args: str, state: Path, timeout: int = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOCAL_RAY_DIR": str(state)}
    return subprocess.run(["bash", str(LOCAL_SH), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_local_sh_syntax_usage_and_not_running_messages(tmp_path):
    assert subprocess.run(["bash", "-n", str(LOCAL_SH)]).returncode == 0
    r = _run_local_sh("bogus", state=tmp_path)
    assert r.returncode != 0 and "usage: bash clusters/local.sh {up|down|status|env}" in r.stderr
    r = _run_local_sh("env", state=tmp_path)
    assert r.returncode != 0 and "no local cluster is running" in r.stderr and "local.sh up" in r.stderr
    r = _run_local_sh("down", state=tmp_path)
    assert r.returncode == 0 and "not running" in r.stdout


def test_local_sh_refuses_a_busy_port(tmp_path):
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        env_extra = {"LOCAL_RAY_PORT": str(port)}
        r = subprocess.run(["bash", str(LOCAL_SH), "up"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "LOCAL_RAY_DIR": str(tmp_path), **env_extra})
    assert r.returncode != 0
    assert f"port {port} is in use; set LOCAL_RAY_PORT" in r.stderr
    assert not (tmp_path / "pids").exists() or not (tmp_path / "pids").read_text().strip()


def test_local_sh_refuses_a_state_folder_too_long_for_rays_sockets(tmp_path):
    deep = tmp_path / ("x" * 60)
    r = _run_local_sh("up", state=deep)
    assert r.returncode != 0
    assert "too long for Ray's socket paths" in r.stderr and "LOCAL_RAY_DIR" in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PLATFORM_CLUSTER_TESTS") != "1",
                    reason="starts a 4-node Ray cluster (about a minute); set PLATFORM_CLUSTER_TESTS=1")
def test_local_cluster_up_auth_and_down():
    # A short state folder: Ray's socket paths under it may not exceed 107 bytes.
    tmp_path = Path(tempfile.mkdtemp(prefix="hpo", dir="/tmp"))
    gcs, dash, client = free_ports(3)
    env = {**os.environ, "LOCAL_RAY_DIR": str(tmp_path / "state"), "LOCAL_RAY_PORT": str(gcs),
           "LOCAL_RAY_DASHBOARD_PORT": str(dash), "LOCAL_RAY_CLIENT_PORT": str(client)}
    for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_API_SERVER_ADDRESS"):
        env.pop(k, None)
    sh = ["bash", str(LOCAL_SH)]
    up = subprocess.run(sh + ["up"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "4 nodes alive" in up.stdout
        exports = subprocess.run(sh + ["env"], env=env, capture_output=True, text=True, check=True).stdout
        client_env = dict(re.findall(r"export (\w+)=(\S+)", exports))
        assert client_env["RAY_AUTH_MODE"] == "token"
        probe = ("import ray, sys; ray.init(log_to_driver=False); "
                 "n = [x for x in ray.nodes() if x['Alive']]; "
                 "print(len(n), sum(x['Resources'].get('GPU', 0) for x in n))")
        ok = subprocess.run([sys.executable, "-c", probe], env={**env, **client_env}, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
        assert ok.stdout.split() == ["4", "1.0"], ok.stdout + ok.stderr
        # Without the token the cluster refuses the connection.
        no_token = {k: v for k, v in {**env, **client_env}.items() if not k.startswith("RAY_AUTH")}
        bad = subprocess.run([sys.executable, "-c", probe], env={**no_token, "RAY_AUTH_MODE": "disabled"},
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "Authentication" in bad.stderr
    finally:
        down = subprocess.run(sh + ["down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    pids_file = tmp_path / "state" / "pids"
    assert not pids_file.exists()
    leftover = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    assert str(tmp_path / "state" / "ray") not in leftover
    shutil.rmtree(tmp_path, ignore_errors=True)
