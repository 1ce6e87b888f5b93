"""Measuring helpers shared by the benchmarks: device sync, peak memory, bf16 peak FLOP/s."""

from __future__ import annotations

import os
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
