"""clusters/slurm.sbatch on a real one-node SLURM cluster (slurmctld + slurmd + munged on 127.0.0.1).

The fixture generates a munge key and a ``slurm.conf`` in a temporary folder, starts ``munged``,
``slurmctld`` and ``slurmd`` (the Debian packages ``munge`` and ``slurm-wlm``, installed by
``.ci/run``), and points the SLURM commands at them through ``SLURM_CONF``. The tests submit the
batch script with ``sbatch`` exactly as a user does, wait for SLURM to report the job finished,
and check what it left: the champion in MLflow, no Ray process, an empty ``squeue``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from netutil import free_ports
from tests.netutil import wait_for

REPO = Path(__file__).resolve().parent.parent
ENGINE_SPACE = str(Path(__file__).resolve().parent / "data" / "engine_quick.yaml")  # fast, fixed, no floors
SBATCH = REPO / "clusters" / "slurm.sbatch"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sacct")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(shutil.which(d, path=os.environ.get("PATH", "") + ":/usr/sbin") is None
                           for d in DAEMONS),
                       reason="SLURM is not installed: `apt-get install slurm-wlm munge` (.ci/run does it as root)"),
]

SLURM_CONF = """\
ClusterName=hpotest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={dir}/munge.socket
CredType=cred/munge
StateSaveLocation={dir}/ctld
SlurmdSpoolDir={dir}/slurmd
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=30
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=60
SlurmdTimeout=60
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _mem_mb() -> int:
    total_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return max(1024, total_kb // 1024 - 1024)


def _wait(predicate, timeout: float, what: str, log: Path | None = None):
    return wait_for(predicate, timeout, what, log=log, every=0.5)


class Slurm:
    """A one-node SLURM cluster of this machine, private to the test session."""

    def __init__(self, root: Path):
        self.dir = root
        self.host = socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf"),
                    "PATH": os.environ.get("PATH", "") + ":/usr/sbin"}
        self.procs: list[subprocess.Popen] = []

    def run(self, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=kw.pop("env", self.env), capture_output=True, text=True, check=check,
                              timeout=kw.pop("timeout", 60), **kw)

    def write_config(self) -> None:
        for sub in ("ctld", "slurmd"):
            (self.dir / sub).mkdir(parents=True)
        ctld_port, slurmd_port = free_ports(2, "127.0.0.1")
        (self.dir / "slurm.conf").write_text(SLURM_CONF.format(
            host=self.host, dir=self.dir, ctld_port=ctld_port, slurmd_port=slurmd_port,
            cpus=os.cpu_count() or 1, mem_mb=_mem_mb()))
        key = self.dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)

    def start(self) -> None:
        self.write_config()
        d = self.dir
        self.run("munged", "--force", f"--key-file={d}/munge.key", f"--socket={d}/munge.socket",
                 f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log", f"--seed-file={d}/munged.seed")
        for cmd in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", self.host]):
            log = open(d / f"{cmd[0]}.out", "w")
            self.procs.append(subprocess.Popen(cmd + ["-f", str(d / "slurm.conf")], env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        _wait(self.node_idle, 120, "the SLURM node to become idle", d / "slurmd.log")

    def node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.split()
        return out == ["idle"]

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        pid = self.dir / "munged.pid"
        if pid.exists():
            os.kill(int(pid.read_text()), signal.SIGTERM)

    def job_state(self, job_id: str) -> str:
        out = self.run("scontrol", "show", "job", job_id, "-o", check=False).stdout
        m = re.search(r"JobState=(\S+)", out)
        return m.group(1) if m else ""

    def squeue(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%i %T").stdout.split("\n")[:-1]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    # Short path: slurmd's spool and munge's socket live here.
    cluster = Slurm(Path(tmp_path_factory.mktemp("slurm")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def job_processes(job_id: str) -> list[int]:
    """Live processes of this machine whose environment says they belong to SLURM job ``job_id``."""
    mark = f"SLURM_JOB_ID={job_id}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def submit(slurm: Slurm, tmp: Path, *args: str, cpus: int = 2) -> str:
    """``sbatch clusters/slurm.sbatch ARGS`` from the repository root, as a user does; the job id."""
    env = {**slurm.env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
           "MLFLOW_ARTIFACT_ROOT": str(tmp / "artifacts"), "PLATFORM_STORAGE_PATH": str(tmp / "ray_results"),
           "PLATFORM_TENSORBOARD_DIR": str(tmp / "tensorboard"), "PLATFORM_SLURM_STATE": str(tmp / "state"),
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_REGISTRY_URI"):
        env.pop(name, None)
    out = slurm.run("sbatch", "--parsable", f"--cpus-per-task={min(cpus, os.cpu_count() or 1)}",
                    f"--output={tmp}/job.out", str(SBATCH), *args, env=env, cwd=REPO).stdout
    return out.strip().split(";")[0]


def wait_finished(slurm: Slurm, job_id: str, tmp: Path, timeout: float) -> str:
    """Wait until SLURM reports the job finished; its final state."""
    done = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    return _wait(lambda: next((s for s in [slurm.job_state(job_id)] if s in done), None), timeout,
                 f"SLURM job {job_id} to finish", tmp / "job.out")


def test_srun_runs_a_task_on_the_test_cluster(slurm, tmp_path):
    out = slurm.run("srun", "--nodes=1", "--ntasks=1", "printenv", "SLURM_JOB_NODELIST", timeout=120).stdout
    assert out.strip() == slurm.host


def test_sbatch_runs_a_quick_search_on_ray_and_stops_everything(slurm, tmp_path):
    from mlflow.tracking import MlflowClient

    job = submit(slurm, tmp_path, ENGINE_SPACE, "--quick", "--experiment", "slurm_quick")
    state = wait_finished(slurm, job, tmp_path, timeout=1500)
    log = (tmp_path / "job.out").read_text()
    assert state == "COMPLETED", log[-4000:]
    # The search ran against the job's own Ray cluster, with token authentication.
    assert f"Ray cluster up: 1 node(s), token in {tmp_path}/state/auth_token" in log
    assert "connecting to the Ray cluster at 127.0.0.1:" in log, log[-4000:]
    assert (tmp_path / "state" / "auth_token").stat().st_mode & 0o077 == 0
    assert "Ray stopped on" in log
    # The champion is in MLflow; nothing of the job is left running; the queue is empty.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    version = client.get_model_version_by_alias("slurm_quick", "champion")
    assert str(version.version) == "1" and version.tags["promotion.decision"] == "promoted"
    runs = client.search_runs([client.get_experiment_by_name("slurm_quick").experiment_id])
    assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId")]) == 4
    assert job_processes(job) == []
    assert slurm.squeue() == []


def test_scancel_stops_the_search_and_ray(slurm, tmp_path):
    job = submit(slurm, tmp_path, ENGINE_SPACE, "--quick", "--experiment", "slurm_cancel",
                 "--set", "train.epochs=200", "--set", "search.scheduler.max_t=200")
    _wait(lambda: "search: python -m platform.search" in (tmp_path / "job.out").read_text()
          if (tmp_path / "job.out").exists() else False, 600, "the search to start", tmp_path / "job.out")
    assert len(job_processes(job)) > 3  # the batch script, srun steps, Ray's head processes, the driver
    slurm.run("scancel", job)
    state = wait_finished(slurm, job, tmp_path, timeout=300)
    assert state == "CANCELLED"
    _wait(lambda: job_processes(job) == [], 120, f"the processes of job {job} to end", tmp_path / "job.out")
    log = (tmp_path / "job.out").read_text()
    assert "cancelled: stopping the search and Ray" in log and "Ray stopped on" in log, log[-3000:]
    assert slurm.squeue() == []
