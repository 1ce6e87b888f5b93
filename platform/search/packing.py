"""Fractional GPUs without memory fights: size each trial's GPU share from its peak memory.

``resources: {gpus_per_worker: 0.25}`` lets four small trials share one GPU, but Ray's GPU
fractions are bookkeeping only: nothing stops two big trials from OOM-ing each other. Before
a trial is launched, :class:`TrialResources` (given to ``tune.with_resources`` as a callable
of the trial's config) estimates the trial's peak memory from a dry run of its model at its
crop and batch, and asks Ray for ``max(gpus_per_worker, headroom x peak / GPU memory)`` of a
GPU. Since Ray never places GPU fractions summing past 1 on one GPU, trials whose estimated
peaks would not fit together are never co-located.

The dry run (:func:`estimate_peak_bytes`):

* on CUDA (the driver sees a GPU): one forward/backward/AdamW step of the real model and loss
  at the trial's batch and crop; ``torch.cuda.max_memory_allocated`` is the peak, plus the
  CUDA context each trial process pays;
* on CPU (a driver without a GPU): parameters, gradients and the two AdamW moments, plus the
  activations autograd saves for backward, counted with ``saved_tensors_hooks`` during a
  forward at a small crop and scaled by pixel count and batch (activations of these
  fully-convolutional / windowed networks grow linearly with both), plus the CUDA context.

Estimates are cached per memory signature (architecture, size, options, crop, batch,
precision, loss). A trial that still runs out of memory marks its signature: later trials
with that signature get a whole GPU instead of being retried with the same share.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CUDA_CONTEXT_BYTES = 512 * 2**20  # per trial process: CUDA context, cuDNN/cuBLAS workspaces
_PACKERS: dict[str, TrialResources] = {}


def memory_signature(config: dict) -> str:
    task = config.get("task", {})
    loss = {k: v for k, v in (config.get("loss") or {}).items()
            if (v.get("weight", 1.0) if isinstance(v, dict) else v) not in (0, 0.0)}
    return json.dumps({"model": config.get("model"), "crop": task.get("crop"), "batch": task.get("batch_size"),
                       "precision": (config.get("train") or {}).get("precision"), "loss": sorted(loss)},
                      sort_keys=True, default=str)


@dataclass
class Estimate:
    bytes: int
    method: str  # "cuda-dry-run" | "cpu-estimate"

    @property
    def gib(self) -> float:
        return self.bytes / 2**30


def _build(config: dict, model_kwargs: dict):
    from platform.train.loop import build_model

    return build_model(config, model_kwargs)


def _criterion(config: dict, device):
    from platform import losses
    from platform.train.loop import loss_spec

    try:
        return losses.create(loss_spec(config) or {"l1": 1.0}, allow_unavailable=True).to(device)
    except Exception:  # the estimate must not fail on a loss that the trial itself would report
        return losses.create({"l1": 1.0}).to(device)


def estimate_peak_bytes(config: dict, model_kwargs: dict, device: str | None = None) -> Estimate:
    """Peak memory of one training step of ``config`` (see the module docstring)."""
    import torch

    crop = int(config["task"]["crop"])
    batch = int(config["task"]["batch_size"])
    channels = int(model_kwargs.get("in_channels", 3))
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    if use_cuda:
        dev = torch.device("cuda")
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        model = _build(config, model_kwargs).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        crit = _criterion(config, dev)
        x = torch.rand(batch, channels, crop, crop, device=dev) * 2 - 1
        precision = (config.get("train") or {}).get("precision", "auto")
        dtype = torch.bfloat16 if precision in ("auto", "bf16") and torch.cuda.is_bf16_supported() else None
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            y = model(x)
            loss, _ = crit(y, x if y.shape == x.shape else y.detach())
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del model, opt, crit, x, y, loss
        torch.cuda.empty_cache()
        return Estimate(int(peak + CUDA_CONTEXT_BYTES), "cuda-dry-run")

    # Built on the meta device and materialised uninitialised: weight init of a big model takes
    # seconds on a small CPU and the values do not matter for counting bytes.
    try:
        with torch.device("meta"):
            model = _build(config, model_kwargs)
        model = model.to_empty(device="cpu")
    except Exception:  # a factory that cannot build on the meta device: build it on the CPU
        model = _build(config, model_kwargs)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    small = min(crop, 64)
    multiple = int(getattr(model, "size_multiple", 1) or 1)
    small = max(multiple, (small // multiple) * multiple)
    saved = {"bytes": 0}
    # Weights saved for backward are counted once, in param_bytes, not per image.
    seen: set[int] = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        try:
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                saved["bytes"] += t.untyped_storage().nbytes()
        except Exception:  # some saved objects have no storage (e.g. sizes); they are tiny
            pass
        return t

    x = torch.rand(1, channels, small, small) * 2 - 1
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = model(x)
    out_bytes = y.numel() * y.element_size()
    del y
    scale = batch * (crop / small) ** 2
    peak = 4 * param_bytes + (saved["bytes"] + 2 * out_bytes) * scale
    return Estimate(int(peak + CUDA_CONTEXT_BYTES), "cpu-estimate")


def gpu_memory_bytes(resources: dict) -> int | None:
    """Memory of one GPU: ``resources.gpu_memory_gb``, else ``$PLATFORM_GPU_MEMORY_GB`` (set on the
    nodes of clusters/aws.yaml, whose head has no GPU), else the driver's CUDA device, else None."""
    import os

    if resources.get("gpu_memory_gb"):
        return int(float(resources["gpu_memory_gb"]) * 2**30)
    if os.environ.get("PLATFORM_GPU_MEMORY_GB"):
        try:
            return int(float(os.environ["PLATFORM_GPU_MEMORY_GB"]) * 2**30)
        except ValueError:
            from platform.errors import ConfigError

            raise ConfigError(f"PLATFORM_GPU_MEMORY_GB is {os.environ['PLATFORM_GPU_MEMORY_GB']!r}; give the memory "
                              "of one GPU in GB (e.g. 24), or unset it.") from None
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory)
    except Exception:  # no usable CUDA here: the memory is unknown
        pass
    return None


@dataclass
class TrialResources:
    """``tune.with_resources`` callable: the placement of one trial from its config."""

    key: str
    resources: dict
    model_kwargs: dict
    torch_trainer: bool = False
    gpu_memory: int | None = None
    estimates: dict[str, Estimate] = field(default_factory=dict)
    fractions: dict[str, float] = field(default_factory=dict)
    oom: set[str] = field(default_factory=set)

    def __post_init__(self):
        if self.gpu_memory is None:
            self.gpu_memory = gpu_memory_bytes(self.resources)
        _PACKERS[self.key] = self

    def _live(self) -> TrialResources:
        # Tune may call a deserialised copy; the live instance holds the cache and OOM marks.
        return _PACKERS.get(self.key, self)

    def __call__(self, config: dict):
        from ray.tune import PlacementGroupFactory

        live = self._live()
        if live is not self:
            return live(config)
        if self.torch_trainer:
            # The trial only drives a TorchTrainer, whose workers ask for their own CPUs/GPUs.
            return PlacementGroupFactory([{"CPU": 0.1}])
        cpus = float(self.resources.get("cpus_per_worker", 1))
        gpus = self.gpu_fraction(config)
        bundle = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
        return PlacementGroupFactory([bundle])

    def estimate(self, config: dict) -> Estimate | None:
        sig = memory_signature(config)
        if sig not in self.estimates:
            try:
                self.estimates[sig] = estimate_peak_bytes(config, self.model_kwargs)
                e = self.estimates[sig]
                log.info("memory estimate for %s %s at crop %s x batch %s: %.2f GiB (%s)",
                         config["model"].get("architecture"), config["model"].get("size"),
                         config["task"].get("crop"), config["task"].get("batch_size"), e.gib, e.method)
            except Exception as exc:  # a model that cannot even be built fails in its trial, with its reason
                log.warning("could not estimate the memory of a trial (%s); using the requested GPU share", exc)
                self.estimates[sig] = None  # type: ignore[assignment]
        return self.estimates[sig]

    def gpu_fraction(self, config: dict) -> float:
        sig = memory_signature(config)
        requested = float(self.resources.get("gpus_per_worker", 0))
        if requested <= 0:
            return 0.0
        if sig in self.oom:
            self.fractions[sig] = 1.0
            return 1.0
        if not self.resources.get("pack", True) or requested >= 1:
            return requested
        if self.gpu_memory is None:
            if not getattr(self, "_warned", False):
                self._warned = True
                log.warning("GPU packing: the GPU memory is unknown here (no CUDA in the driver); set "
                            "resources.gpu_memory_gb (or $PLATFORM_GPU_MEMORY_GB) to size GPU shares from memory "
                            "estimates. Using %.2f GPU "
                            "per trial as requested.", requested)
            return requested
        est = self.estimate(config)
        if est is None:
            return requested
        # search.repeat runs k trainers at once inside the trial, on the same GPU share.
        repeat = config.get("_run", {}).get("repeat") or {}
        k = int(repeat.get("k", 1)) if repeat.get("over", "none") != "none" else 1
        need = float(self.resources.get("memory_headroom", 1.25)) * k * est.bytes / self.gpu_memory
        if need > 1:
            log.warning("a trial needs ~%.1f GiB, more than one GPU (%.1f GiB); it gets a whole GPU and may still "
                        "run out of memory (lower task.batch_size or task.crop)", est.gib, self.gpu_memory / 2**30)
        frac = min(1.0, max(requested, math.ceil(need * 20 - 1e-9) / 20))  # 0.05 steps
        self.fractions[sig] = frac
        return frac

    def record_oom(self, config: dict) -> None:
        """A trial ran out of memory: its signature gets a whole GPU from now on."""
        self.oom.add(memory_signature(config))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["estimates"] = {}
        return state


def packer_for(key: str) -> TrialResources | None:
    return _PACKERS.get(key)
