"""Issue 15.7: a search SIGKILLed at any moment resumes to every trial exactly once.

Eleven kill points, each chosen by watching the experiment folder (no sleeps): before Tune saved
anything (once more with its ``tuner.pkl`` cut short, as a kill amid that write leaves it),
before the first result, mid-epoch, while a checkpoint is being written, after
retention deleted a checkpoint, when a trial's last epoch is reported, after a finished trial
was saved, and at the start, first and last checkpoint of the second trial. The
driver runs as a subprocess with its own Ray; ``--resume`` runs in this process. After the
resume: two trials, both completed, each once in MLflow under the one parent run with epochs
1..3 logged once; trials that had finished before the kill keep their results and run ids.
The space (``tests/data/search_kills.yaml``) keeps only the best checkpoint and the latest, so
retention deletes checkpoints while Tune's saved state may still name them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platform.search import SearchOptions, run_search
from tests.netutil import keep_local_ray

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SPACE = Path(__file__).parent / "data" / "search_kills.yaml"
EPOCHS = 3


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    yield from keep_local_ray("search_kills", num_cpus=4)


# --------------------------------------------------------------------------- what the folder shows
def _trials(storage: Path) -> list[Path]:
    """Trial folders in the order they ran (by the time of their first result; Tune re-syncs
    the files, so file times say nothing); a trial without a result yet comes last."""
    def first_report(trial: Path) -> float:
        try:
            return float(json.loads((trial / "result.json").read_text().splitlines()[0])["timestamp"])
        except (OSError, ValueError, KeyError, IndexError):
            return float("inf")

    return sorted(storage.glob("*/trial_*"), key=first_report)


def _results(trial: Path) -> int:
    try:
        return len([line for line in (trial / "result.json").read_text().splitlines() if line.strip()])
    except OSError:
        return 0


def _saved(storage: Path) -> dict[str, str]:
    """{trial_id: status} in Tune's newest saved experiment state."""
    files = sorted(storage.glob("*/experiment_state-*.json"), key=lambda p: p.name)
    try:
        state = json.loads(files[-1].read_text()) if files else {"trial_data": []}
        return {json.loads(t)["trial_id"]: json.loads(t)["status"] for t, _ in state["trial_data"]}
    except (OSError, ValueError, KeyError, IndexError):
        return {}


def _nth(storage: Path, n: int) -> Path | None:
    trials = _trials(storage)
    return trials[n] if len(trials) > n else None


def _ckpts(trial: Path | None) -> list[str]:
    return sorted(p.name for p in trial.glob("checkpoint_*")) if trial else []


def _finished(storage: Path, n: int = 1) -> bool:
    return sum(s == "TERMINATED" for s in _saved(storage).values()) >= n


KILL_POINTS = {
    "started-no-trial-yet": lambda s: any(s.glob("*/tuner.pkl")) and not _trials(s),
    "tuner-state-cut-short": lambda s: any(s.glob("*/tuner.pkl")) and not _trials(s),
    "before-first-result": lambda s: _nth(s, 0) is not None and _results(_nth(s, 0)) == 0,
    "mid-epoch-2": lambda s: _nth(s, 0) is not None and _results(_nth(s, 0)) == 1,
    "during-checkpoint": lambda s: "checkpoint_000001" in _ckpts(_nth(s, 0)),
    "after-retention-deleted": lambda s: _results(_nth(s, 0) or s) >= 2 and "checkpoint_000000" not in _ckpts(
        _nth(s, 0)) and bool(_ckpts(_nth(s, 0))),
    "last-epoch-reported": lambda s: _nth(s, 0) is not None and _results(_nth(s, 0)) == EPOCHS,
    "after-trial-finished-and-saved": lambda s: _finished(s),
    "second-trial-started": lambda s: _finished(s) and len(_trials(s)) == 2,
    "second-trial-first-checkpoint": lambda s: sum(bool(_ckpts(t)) for t in _trials(s)) == 2,
    "second-trial-last-checkpoint": lambda s: f"checkpoint_{EPOCHS - 1:06d}" in _ckpts(_nth(s, 1)),
}


# What the kill left half-written at some points (a SIGKILL amid Tune's non-atomic write of tuner.pkl,
# which the watcher cannot catch on purpose): done to the folder after the kill.
CUT_SHORT = {"tuner-state-cut-short": lambda s: [p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
                                                 for p in s.glob("*/tuner.pkl")]}


class _Missed(Exception):
    """The driver went past the kill point between two looks at the folder (a loaded machine can
    stall the watcher longer than an epoch lasts): a miss of the observer, not of the search."""


def _run_until(storage: Path, cwd: Path, point: str, attempts: int = 3) -> None:
    """Start the search and SIGKILL it at ``point``; start afresh when the watcher missed it."""
    for attempt in range(attempts):
        try:
            return _run_once(storage, cwd, point)
        except _Missed:
            if attempt == attempts - 1:
                raise AssertionError(f"the driver ended before {point} in {attempts} tries: "
                                     f"{(cwd / 'driver.log').read_text()[-3000:]}") from None
            shutil.rmtree(storage, ignore_errors=True)
            shutil.rmtree(cwd / "mlruns", ignore_errors=True)


def _run_once(storage: Path, cwd: Path, point: str, timeout: float = 600.0) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PLATFORM_KEEP_RAY": "", "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "platform.search", str(SPACE), "--no-promote", "--storage", str(storage),
           "--num-cpus", "4"]
    predicate = KILL_POINTS[point]
    with open(cwd / "driver.log", "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while not predicate(storage):
                if proc.poll() is not None:
                    raise _Missed(point)
                assert time.monotonic() < deadline, f"never reached {point}"
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_search_killed_at_any_moment_resumes_every_trial_once(tmp_cwd, point):
    from mlflow.tracking import MlflowClient

    from platform.tracking import tracking_uri

    storage = tmp_cwd / "ray"
    _run_until(storage, tmp_cwd, point)
    CUT_SHORT.get(point, lambda s: None)(storage)
    saved = _saved(storage)
    finished_before = {t for t, status in saved.items() if status == "TERMINATED"}
    if finished_before:  # a consistent copy of Tune's state was kept for a repair (tests/test_statefiles.py)
        good = {p.name.split("-")[0] for p in storage.glob("*/.state.good/*")}
        assert {"experiment_state", "searcher", "search_gen_state"} <= good, good
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name("search_kills")
    runs_before = {r.data.tags.get("trial_id"): r.info.run_id for r in client.search_runs([exp.experiment_id])}

    out = run_search(SearchOptions(str(SPACE), resume=True, storage=str(storage), promote=False))

    assert [r["stop"] for r in out.rows] == ["completed"] * 2, [(r["trial"], r["stop"]) for r in out.rows]
    trials = {r["trial"] for r in out.rows}
    assert len(trials) == 2 and finished_before <= trials
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_id == out.parent_run_id
    assert parents[0].info.status == "FINISHED"
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == out.parent_run_id]
    assert sorted(k.data.tags["trial_id"] for k in kids) == sorted(trials)
    for k in kids:
        steps = [m.step for m in client.get_metric_history(k.info.run_id, "val_psnr")]
        assert steps == list(range(1, EPOCHS + 1)), (k.data.tags["trial_id"], steps)
        assert k.info.status == "FINISHED"
    for t in finished_before:  # kept its run and its results; not run again
        assert {k.data.tags["trial_id"]: k.info.run_id for k in kids}[t] == runs_before[t]
        assert _results(Path(out.experiment_path) / f"trial_{t}") == EPOCHS
