"""``python -m platform.bench gpu``: every GPU figure of docs/benchmarks.md, from one command.

::

    python -m platform.bench gpu --minutes 7 --out bench-gpu     # on a GPU machine
    python -m platform.bench gpu --device cpu --tiny             # dry run of every code path (< 2 min)

Runs, within ``--minutes`` of wall time and in order of importance: the training step
(platform / bare loop / NAFNet reference recipe, with and without ``torch.compile``, MFU),
tiled 4K inference (frames/s, seam error), packed trials (trials/hour with 1, 2, 4, 8 trials
sharing the GPU), forward+backward of every zoo model, and a 2-process DDP step on the one GPU
(NCCL, else gloo). Each benchmark runs in its own process with a share of the remaining time
and is stopped at the end of it; one that fails, needs a package that is not installed or runs
out of time is recorded as such and the rest go on. A markdown table is printed as each one
ends, then a summary of the targets (met / missed); a missed target gets a profiler trace.

Written to ``--out``: ``results.json`` (every raw figure and the environment), ``tables.md``,
``env.json`` and, for missed targets, ``trace_*.json.gz`` (Chrome traces: chrome://tracing or
https://ui.perfetto.dev).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from platform.bench import _suite
from platform.bench._measure import md_table
from platform.errors import ConfigError, cli_main

log = logging.getLogger(__name__)

# name, share of the time box, least seconds worth starting on a GPU (on --tiny: a fifth)
BENCHMARKS = (("train", 0.40, 60), ("tiled", 0.15, 30), ("packed", 0.25, 45), ("zoo", 0.10, 20), ("ddp", 0.10, 25))
GRACE_S = 10  # a benchmark past its share gets this long to save its figures before it is killed
OPTIONAL = ("albumentations", "segmentation_models_pytorch", "lpips", "ray", "mlflow", "optuna", "triton")


def collect_env(device: str) -> dict:
    """Versions and the GPU, without creating a CUDA context in this (forking) process."""
    # Not torch.backends.cudnn.version(): it queries the GPUs' capabilities, creating a context
    # (the train benchmark records cuDNN and the capability from its own process).
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": device, "cpu_count": os.cpu_count(),
           "installed": {m: importlib.util.find_spec(m) is not None for m in OPTIONAL}}
    if device == "cuda" and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
            name, driver, memory = [c.strip() for c in out.splitlines()[0].split(",")]
            env.update(gpu=name, driver=driver, gpu_memory=memory)
        except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
            env["gpu_error"] = str(exc)
    return env


def _status_of(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"skipped: {exc.name.split('.')[0]} not installed"
    return f"failed: {_suite.error_text(exc)}"


def _child(name: str, ctx: _suite.Ctx, record: Path) -> None:
    """The benchmark's own process: run it, saving figures as they come, and exit."""
    os.setpgrp()  # its own process group: the parent stops it with everything it started
    _die_with_parent()
    state = {"status": "running", "data": {}}

    def save(data: dict) -> None:
        state["data"] = data
        _write_json(record, state)

    ctx.save = save
    if ctx.tiny:  # see _suite._threads
        torch.set_num_threads(1)
    try:
        _suite.RUNS[name](ctx)
        state["status"] = "ok"
    except BaseException as exc:  # recorded; the suite goes on
        state["status"] = _status_of(exc)
        state["traceback"] = traceback.format_exc()
        if not state["status"].startswith("skipped"):
            log.warning("%s %s", name, state["traceback"])
    _write_json(record, state)
    sys.stdout.flush()
    os._exit(0)


def _die_with_parent() -> None:
    """Linux: be killed when the suite's process dies (its own process group would outlive it)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def run_isolated(name: str, ctx: _suite.Ctx, kill_at: float) -> dict:
    """Run benchmark ``name`` in a forked process; kill it (and its children) at ``kill_at``."""
    import multiprocessing as mp

    record = ctx.work / f"{name}.json"
    proc = mp.get_context("fork").Process(target=_child, args=(name, ctx, record))
    proc.start()
    proc.join(timeout=max(1.0, kill_at - time.time()))
    killed = proc.is_alive()
    if killed:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.join()
    try:
        state = json.loads(record.read_text())
    except (OSError, ValueError):
        state = {"status": "running", "data": {}}
    if killed or state["status"] == "running":
        state["status"] = ("out of time" if killed else f"failed: exit code {proc.exitcode}") + (
            " (partial figures)" if state["data"] else "")
    return state


def render(name: str, state: dict) -> str:
    table = _suite.TABLES[name](state["data"]) if state["data"] else ""
    status = "" if state["status"] == "ok" else f"**{name}: {state['status']}**"
    return "\n\n".join(x for x in (f"## {name}", status, table) if x)


def summary(states: dict[str, dict]) -> tuple[list[dict], str]:
    rows = []
    for name, state in states.items():
        found = _suite.TARGETS[name](state["data"]) if state["data"] else []
        rows += found
        if not found and name in ("train", "tiled", "packed"):
            rows.append(_suite.target(name, None, "-", None, state["status"]))
    verdict = {True: "met", False: "**missed**", None: "not measured"}
    table = md_table(["target", "figure", "goal", "verdict", "note"],
                     [[r["target"], r["figure"], r["goal"], verdict[r["met"]], r["note"]] for r in rows])
    return rows, "## summary\n\n" + table


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.bench gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=8.0, help="wall-time budget of the whole suite (default 8)")
    p.add_argument("--out", default=None, help="folder for the figures (default: bench-gpu-<time>)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda if available")
    p.add_argument("--tiny", action="store_true", help="toy sizes: a dry run of every code path (CPU, < 2 min)")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(b[0] for b in BENCHMARKS)}")
    return p


def check_args(args) -> list[str]:
    names = [b[0] for b in BENCHMARKS]
    wanted = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ConfigError(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}.")
    if not args.minutes > 0:
        raise ConfigError(f"--minutes is {args.minutes}; give a positive wall-time budget, e.g. --minutes 7.")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu.")
    return wanted


class Output:
    """``--out``: results.json, tables.md and env.json, rewritten as each benchmark ends."""

    def __init__(self, folder: Path, env: dict, args):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.results = {"env": env, "args": vars(args), "benchmarks": {}, "summary": []}
        self.sections = [f"# platform.bench gpu\n\n{_env_line(env)}"]
        _write_json(folder / "env.json", env)

    def add(self, name: str, state: dict, text: str) -> None:
        self.results["benchmarks"][name] = state
        if state["data"].get("device_env"):  # cuDNN and the GPU's capability, from the train benchmark
            self.results["env"].update(state["data"]["device_env"])
            _write_json(self.folder / "env.json", self.results["env"])
        self.sections.append(text)
        self.write()

    def write(self, final: str = "") -> None:
        _write_json(self.folder / "results.json", self.results)
        (self.folder / "tables.md").write_text("\n\n".join(self.sections + ([final] if final else [])) + "\n")


def _env_line(env: dict) -> str:
    gpu = f"{env.get('gpu')} (driver {env.get('driver')}, {env.get('gpu_memory')})" if env.get("gpu") else env["device"]
    missing = [m for m, ok in env["installed"].items() if not ok]
    return (f"device {gpu}; torch {env['torch']}, CUDA {env['cuda']}, Python {env['python']}, "
            f"{env['cpu_count']} CPUs; not installed: {', '.join(missing) or 'none'}")


def _disable_broken(names=("segmentation_models_pytorch",)) -> dict[str, str]:
    """Make an installed package that fails to import (e.g. a carried wheel against another
    version of its dependencies) unimportable, as if it were not installed: the model registry
    then leaves its models out instead of failing. Returns {name: error}."""
    broken = {}
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            pass
        except Exception as exc:  # any failure: left out, and said so in env.json
            broken[name] = _suite.error_text(exc)
            sys.modules[name] = None
            log.warning("%s is installed but does not import (%s): left out", name, broken[name])
    return broken


def _prepare() -> None:
    """Build the sample set and import the trainer once here, not in every (forked) benchmark
    process. Nothing here touches CUDA: a forked child could not use a context made before."""
    import platform.bench.models
    import platform.bench.predict
    import platform.bench.train
    import platform.config
    import platform.inference
    import platform.train.loop  # noqa: F401
    from platform.data.samples import ensure_sample

    try:
        import albumentations  # noqa: F401 - the training crops' augmentation
    except ImportError:
        pass  # the benchmarks that need it say so
    ensure_sample("vfx_grade")


@cli_main
def main(argv=None) -> int:
    # Ask NVML, not the CUDA runtime, whether there is a GPU: this process forks the benchmarks, and
    # a CUDA driver initialised before a fork cannot be used in the child.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("platform.bench").setLevel(logging.INFO)
    args = parser().parse_args(argv)
    wanted = check_args(args)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network on a lent GPU machine
    start = time.time()
    end = start + 60.0 * args.minutes
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    broken = _disable_broken()
    out = Output(Path(args.out or f"bench-gpu-{time.strftime('%Y%m%d-%H%M%S')}"),
                 {**collect_env(device), "broken": broken}, args)
    print(out.sections[0], flush=True)
    _prepare()
    if torch.cuda.is_initialized():  # a forked benchmark could not use the GPU
        log.warning("CUDA was initialised before forking the benchmarks: their CUDA calls may fail")
    states = _run_all([b for b in BENCHMARKS if b[0] in wanted], args, device, end, out)
    out.results["summary"], text = summary(states)
    out.results["wall_s"] = time.time() - start
    print("\n" + text, flush=True)
    out.write(text)
    log.info("figures in %s (%.0f s)", out.folder, time.time() - start)
    return 0


def _run_all(benchmarks, args, device: str, end: float, out: Output) -> dict[str, dict]:
    states: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as work:
        for i, (name, weight, least) in enumerate(benchmarks):
            left = end - time.time()
            share = left * weight / sum(b[1] for b in benchmarks[i:])
            least = least / 5 if args.tiny else least
            if share < least:
                state = {"status": f"out of time ({share:.0f} s left for it, needs {least:.0f} s)", "data": {}}
            else:
                log.info("=== %s: %.0f s of %.0f s left", name, share, left)
                ctx = _suite.Ctx(name, device, args.tiny, time.time() + share, out.folder, Path(work))
                state = run_isolated(name, ctx, min(ctx.deadline + GRACE_S, end + GRACE_S))
            states[name] = state
            text = render(name, state)
            print("\n" + text + "\n", flush=True)
            out.add(name, state, text)
    return states
