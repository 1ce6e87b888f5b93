"""Measuring helpers shared by the benchmarks: device sync, peak memory, bf16 peak FLOP/s,
interleaved rounds and their ratios, markdown tables, profiler traces."""

from __future__ import annotations

import os
import statistics
import threading
import time

import torch

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets.
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12, "L40S": 362e12}


def bf16_peak(name: str) -> float | None:
    for key, value in BF16_PEAK.items():
        if key in name:
            return value
    return None


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; the peak so far elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak CUDA memory, or peak resident memory growth sampled every 5 ms on CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = rss_bytes()
            self.peak = self.base
            self.stop = False

            def sample():
                while not self.stop:
                    self.peak = max(self.peak, rss_bytes())
                    time.sleep(0.005)

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.value = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop = True
            self.thread.join()
            self.value = self.peak - self.base


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- interleaved rounds
def interleave(steps: dict, rounds: int, per_round: int, device: torch.device, deadline: float | None = None,
               min_rounds: int = 2) -> dict[str, list[float]]:
    """Seconds per step of each contender in each round, the contenders taking turns.

    ``steps`` maps a name to a no-argument callable running one step. In every round each
    contender runs ``per_round`` steps in the order given, so a load that comes and goes on a
    shared machine hits every contender alike; rounds stop early (after ``min_rounds``) once the
    wall-clock ``deadline`` (``time.time()``) has passed.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        if deadline is not None and r >= min_rounds and time.time() > deadline:
            break
        for name, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(per_round):
                step()
            sync(device)
            times[name].append((time.perf_counter() - t0) / per_round)
    return times


def speed_ratio(times: dict[str, list[float]], num: str, den: str) -> dict:
    """``num``'s speed over ``den``'s: the ratio of their median step times and the spread
    (min, max) of the per-round ratios (rounds in which both ran)."""
    per_round = [d / n for n, d in zip(times[num], times[den])]
    return {"ratio": statistics.median(times[den]) / statistics.median(times[num]),
            "round_min": min(per_round), "round_max": max(per_round), "rounds": len(per_round)}


def md_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; floats are written with 3 significant digits, None as ``-``."""
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v).replace("|", "/")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- profiling
TRACE_MAX_BYTES = 15 * 2**20


def profile_steps(step, n: int, device: torch.device, trace_gz) -> dict:
    """Profile ``n`` calls of ``step`` with ``torch.profiler``; write a gzipped Chrome trace.

    Returns the top-10 operators by self device time (self CPU time on a CPU) as text, the trace's
    path (None if it was larger than 15 MiB and deleted) and ``device_busy``: the device's kernel
    time over the wall time (a low value means the GPU waits for the host: launch overhead,
    Python, synchronisation).
    """
    import gzip
    import shutil
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        sync(device)
        wall = time.perf_counter() - t0
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        prof.export_chrome_trace(tmp.name)
        with open(tmp.name, "rb") as src, gzip.open(trace_gz, "wb") as dst:
            shutil.copyfileobj(src, dst)
    trace = str(trace_gz)
    if os.path.getsize(trace_gz) > TRACE_MAX_BYTES:  # what comes back from a lent machine is capped
        os.unlink(trace_gz)
        trace = None
    events = prof.key_averages()
    cuda = device.type == "cuda"
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    busy = None
    if cuda:  # kernels, copies and memsets: the events that ran on the device itself
        from torch.autograd import DeviceType

        busy = sum(e.device_time_total for e in prof.events() if e.device_type == DeviceType.CUDA) / 1e6 / wall
    return {"top10": events.table(sort_by=key, row_limit=10), "device_busy": busy, "wall_s": wall, "steps": n,
            "trace": trace}
