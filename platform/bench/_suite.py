"""The benchmarks of ``python -m platform.bench gpu``, one function each.

Every benchmark runs in its own process (see :mod:`platform.bench.gpu`) and is handed a
:class:`Ctx`: the device, the ``--tiny`` switch, its wall-clock deadline and ``save(data)``,
which it calls whenever it has new figures, so whatever it had measured survives if it is
stopped at its deadline. ``TABLES[name](data)`` renders a benchmark's figures as markdown and
``TARGETS[name](data)`` checks them against the issue's targets.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing as mp
import os
import queue as queue_lib
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from platform.bench._measure import md_table, profile_steps, sync

log = logging.getLogger(__name__)

TINY_NAFNET = {"width": 8, "enc_blk_nums": [1, 1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1]}
# Targets of issue 20.
TARGET_OVERHEAD = 0.97  # platform / bare steps/s
TARGET_REFERENCE = 3.0  # platform / NAFNet reference recipe (fp32 eager)
TARGET_MFU = 0.20
TARGET_PACKING = 3.0  # trials/hour with 4 packed trials over 1
TARGET_FPS = 10.0  # 4K tiled frames/s
TARGET_SEAM = 1e-3


@dataclass
class Ctx:
    name: str
    device: str
    tiny: bool
    deadline: float  # time.time() by which the benchmark must have saved its figures
    out: Path  # files that come back with the figures (traces)
    work: Path  # scratch space
    save: Callable[[dict], None] = field(default=lambda data: None)

    def left(self) -> float:
        return self.deadline - time.time()

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


def error_text(exc: BaseException) -> str:
    """``Type: message`` on one line (NCCL puts the reason on the message's later lines)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"


def device_env(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    props = torch.cuda.get_device_properties(device)
    return {"cudnn": torch.backends.cudnn.version(), "capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count, "bf16": torch.cuda.is_bf16_supported()}


def target(name: str, figure, goal: str, met: bool | None, note: str = "") -> dict:
    return {"target": name, "figure": figure, "goal": goal, "met": met, "note": note}


def diagnose(profile: dict) -> str:
    """What holds a step back, from the device's busy fraction in a profile."""
    busy = profile.get("device_busy")
    if busy is None:
        return "profiled on a CPU: see the top operators"
    if busy < 0.8:
        return (f"the GPU computes {busy:.0%} of the wall time: the host holds it back (Python, kernel "
                "launches, synchronisation); torch.compile, CUDA graphs or a larger batch cut the launches")
    return (f"the GPU computes {busy:.0%} of the wall time: the kernels themselves hold it back (see the top "
            "kernels: NAFNet's depthwise convolutions, LayerNorm and SimpleGate are memory-bound, few FLOPs "
            "per byte)")


def profile_into(data: dict, step, steps: int, device: torch.device, trace, missed: list[str]) -> None:
    """``data["profile"]``: a short profile of ``step`` with its diagnosis (or why it failed)."""
    try:
        prof = profile_steps(step, steps, device, trace)
    except Exception as exc:  # a profiler problem must not lose the figures
        data["profile"] = {"error": error_text(exc), "missed": missed}
        return
    data["profile"] = {**prof, "missed": missed, "diagnosis": diagnose(prof)}


# --------------------------------------------------------------------------- 1. training step
def train_args(ctx: Ctx):
    from platform.bench import train

    argv = ["--device", ctx.device, "--size", "small", "--compile"]
    if ctx.tiny:  # every path (compile included, with the cheap "eager" backend) on a toy setting
        import json

        argv += ["--options", json.dumps(TINY_NAFNET), "--crop", "32", "--batch", "2", "--rounds", "3",
                 "--round-steps", "1", "--warmup", "1", "--compile-backend", "eager", "--compile-min-s", "5"]
    else:  # NAFNet small is width 32
        argv += ["--crop", "256", "--batch", "8", "--rounds", "20", "--round-steps", "10", "--warmup", "5",
                 "--compile-min-s", "75"]
    args = train.parser().parse_args(argv)
    train.check_args(args)
    return args


def run_train(ctx: Ctx) -> None:
    from platform.bench import train

    data: dict = {}

    def progress(bench, result):
        data.update(result)
        ctx.save(data)

    def profile_if_missed(bench, result):
        missed = [t["target"] for t in targets_train(result) if t["met"] is False]
        # --tiny profiles whatever the figures: the path must not rot
        if (missed or ctx.tiny) and ctx.left() > (3 if ctx.tiny else 20):
            profile_into(data, bench.steps["platform"], 3, bench.device, ctx.out / "trace_train.json.gz", missed)
            ctx.save(data)

    data["device_env"] = device_env(torch.device(ctx.device))
    data.update(train.run(train_args(ctx), deadline=ctx.deadline - 10, on_progress=progress,
                          before_compile=profile_if_missed))
    ctx.save(data)


def _all_rows(data: dict) -> list[dict]:
    return list(data.get("rows", [])) + list((data.get("compile") or {}).get("rows", []))


def table_train(data: dict) -> str:
    from platform.bench import train

    if "rows" not in data:
        return "(no figures)"
    text = train.format_results(data)
    comp = data.get("compile") or {}
    if comp.get("status") == "ok":
        text += ("\n\nplatform+compile was timed in a second interleaved pass (bare, platform, "
                 "platform+compile); its ratios are from that pass.")
    return text + _profile_text(data)


def _profile_text(data: dict) -> str:
    prof = data.get("profile")
    if not prof:
        return ""
    missed = ", ".join(prof.get("missed") or []) or "none (profiled for the dry run)"
    if "error" in prof:
        return f"\n\nProfile for missed target(s) {missed} failed: {prof['error']}"
    trace = f"trace {Path(prof['trace']).name}" if prof.get("trace") else "trace too large, not kept"
    return (f"\n\nProfile ({prof['steps']} steps, {trace}) for missed target(s): {missed}. {prof['diagnosis']}."
            f"\n\n```\n{prof['top10']}\n```")


def targets_train(data: dict) -> list[dict]:
    ratios = {r["name"]: r for r in data.get("ratios", []) + list((data.get("compile") or {}).get("ratios", []))}
    out = []
    for key, goal, name in (("platform / bare", TARGET_OVERHEAD, "train: platform / bare steps/s"),
                            ("platform / reference", TARGET_REFERENCE, "train: platform / reference steps/s")):
        if key in ratios:
            r = ratios[key]
            out.append(target(name, round(r["ratio"], 3), f">= {goal}", r["ratio"] >= goal,
                              f"rounds {r['round_min']:.3f}-{r['round_max']:.3f}"))
    mfus = [(r["mfu"], r["name"]) for r in _all_rows(data) if r.get("mfu") is not None and r["name"] != "reference"]
    if mfus:
        best, who = max(mfus)
        out.append(target("train: MFU (bf16)", f"{100 * best:.1f}%", f">= {100 * TARGET_MFU:.0f}%",
                          best >= TARGET_MFU, who))
    elif data.get("rows"):
        out.append(target("train: MFU (bf16)", None, f">= {100 * TARGET_MFU:.0f}%", None,
                          "no bf16 peak for this device"))
    return out


# --------------------------------------------------------------------------- 2. tiled 4K inference
def _tiled_settings(ctx: Ctx) -> dict:
    if ctx.tiny:
        # fp32 first: a CPU has no fast bf16 convolutions (bf16 whole frame: the autocast path)
        return {"options": TINY_NAFNET, "crop": 32, "width": 192, "height": 136, "frames": 1, "primary": "fp32",
                "runs": [("fp32", 0), ("fp32", 128), ("bf16", 0)]}
    return {"options": {}, "crop": 256, "width": 3840, "height": 2160, "frames": 5, "primary": "bf16",
            "runs": [("bf16", 0), ("bf16", 1024), ("bf16", 2048), ("fp32", 0), ("fp32", 1024)]}


def _predictor(ctx: Ctx, s: dict, precision: str, tile: int):
    from platform.bench.predict import build
    from platform.inference import InferenceOptions
    from platform.tasks import predictor

    torch.manual_seed(0)
    model, config = build("nafnet", "small", s["options"], s["crop"])
    # tile 0 = the whole frame (a tile as large as the frame).
    return predictor(model, config, ctx.device, InferenceOptions(precision=precision, tile=tile or max(
        s["width"], s["height"]), tlc=True))


def _time_frames(predictor, frame, frames: int) -> tuple[float, float, object]:
    """(frames/s of ``run``: host frame in and out; frames/s of the network alone on a frame already
    on the device; the output image)."""
    import numpy as np

    out = predictor.run(frame)  # untimed first frame: kernels, TLC sizes, allocator
    t0 = time.perf_counter()
    for _ in range(frames):
        out = predictor.run(frame)
    fps = frames / (time.perf_counter() - t0)
    x, _ = predictor.prepare(frame)
    sync(predictor.device)
    t0 = time.perf_counter()
    for _ in range(frames):
        predictor.forward(x)
    sync(predictor.device)
    return fps, frames / (time.perf_counter() - t0), np.asarray(out["image"])


def run_tiled(ctx: Ctx) -> None:
    """Frames/s of NAFNet small (width 32) on a 4K frame, whole and tiled; seam error = max |tiled -
    whole| in image units ([0, 1]) against the whole frame at the same precision."""
    import numpy as np

    from platform.bench.predict import photo_frame

    s = _tiled_settings(ctx)
    frame = photo_frame(s["width"], s["height"])
    data = {"settings": {k: v for k, v in s.items() if k != "runs"}, "rows": [], "notes": []}
    whole: dict[str, np.ndarray] = {}
    for precision, tile in s["runs"]:
        if ctx.left() < (5 if ctx.tiny else 20):
            data["rows"].append({"precision": precision, "tile": tile or "whole", "status": "out of time"})
            continue
        predictor = _predictor(ctx, s, precision, tile)
        try:
            fps, net_fps, image = _time_frames(predictor, frame, s["frames"] if precision == s["primary"] else 1)
        except torch.cuda.OutOfMemoryError:
            data["rows"].append({"precision": precision, "tile": tile or "whole", "status": "out of memory"})
            continue
        finally:
            if ctx.cuda:
                torch.cuda.empty_cache()
        if not tile:
            whole[precision] = image
        ref = whole.get(precision)
        seam = float(np.abs(image - ref).max()) if tile and ref is not None else None
        data["rows"].append({"precision": precision, "tile": tile or "whole", "fps": fps, "network_fps": net_fps,
                             "seam": seam, "status": "ok"})
        ctx.save(data)
    if "bf16" in whole and "fp32" in whole:
        data["bf16_vs_fp32"] = float(np.abs(whole["bf16"] - whole["fp32"]).max())
    _profile_tiled_if_missed(ctx, s, frame, data)
    ctx.save(data)


def _profile_tiled_if_missed(ctx: Ctx, s: dict, frame, data: dict) -> None:
    missed = [t["target"] for t in targets_tiled(data) if t["met"] is False]
    tiles = [r["tile"] for r in _tiled_rows(data)]
    if not tiles or not (missed or ctx.tiny) or ctx.left() < (3 if ctx.tiny else 15):
        return
    predictor = _predictor(ctx, s, s["primary"], tiles[0])
    predictor.run(frame)
    profile_into(data, lambda: predictor.run(frame), 1, torch.device(ctx.device), ctx.out / "trace_tiled.json.gz",
                 missed)


def table_tiled(data: dict) -> str:
    s = data.get("settings", {})
    rows = [[r["precision"], r["tile"], r.get("fps"), r.get("network_fps"), r.get("seam"), r["status"]]
            for r in data.get("rows", [])]
    text = (f"tiled inference: NAFNet small (width 32, TLC for crop {s.get('crop')}) on a {s.get('width')}x"
            f"{s.get('height')} photo, frames/s of Predictor.run (host frame in, host frame out) and of the network "
            "alone (frame already on the device); seam = max |tiled - whole frame| in image units [0, 1] at the "
            "same precision\n\n"
            + md_table(["precision", "tile", "frames/s", "network frames/s", "seam error", "status"], rows))
    if "bf16_vs_fp32" in data:
        text += f"\n\nwhole frame bf16 vs fp32: max abs difference {data['bf16_vs_fp32']:.3g} (rounding floor of bf16)"
    return text + _profile_text(data)


def _tiled_rows(data: dict) -> list[dict]:
    """The measured tiled rows at the main precision (bf16; fp32 for --tiny)."""
    primary = data.get("settings", {}).get("primary", "bf16")
    return [r for r in data.get("rows", []) if r.get("fps") and r["tile"] != "whole" and r["precision"] == primary]


def targets_tiled(data: dict) -> list[dict]:
    rows = _tiled_rows(data)
    if not rows:
        return []
    best = max(rows, key=lambda r: r["fps"])
    out = [target("4K tiled: frames/s", round(best["fps"], 2), f">= {TARGET_FPS:g}", best["fps"] >= TARGET_FPS,
                  f"tile {best['tile']}")]
    seams = [r for r in rows if r.get("seam") is not None]
    if seams:
        worst = max(seams, key=lambda r: r["seam"])
        out.append(target("4K tiled: seam error", f"{worst['seam']:.2g}", f"<= {TARGET_SEAM:g}",
                          worst["seam"] <= TARGET_SEAM, f"worst tile {worst['tile']}"))
    return out


# --------------------------------------------------------------------------- 3. packed trials
def trial_config(ctx: Ctx, steps: int, world: int = 1) -> dict:
    """A concrete trial of the ``nafnet_fewshot`` GPU profile (crop 256, batch 8, NAFNet small)
    with its searched values pinned; LPIPS off (its weights are not on the GPU machine)."""
    from platform.config import load_spec
    from platform.data.samples import resolve_data

    crop, batch, options = (32, 2, TINY_NAFNET) if ctx.tiny else (256, 8, {})
    overrides = {"task": {"crop": crop, "batch_size": batch, "crops_per_epoch": steps * batch * world},
                 "model": {"size": "small", "options": options},
                 "loss": {"l1": 1.0, "lpips": 0.0, "laplacian": 0.5, "ssim": 0.2},
                 "optimizer": {"lr": 1e-3}, "train": {"epochs": 1, "seed": 0}}
    if ctx.tiny:
        overrides["task"]["val_max_side"] = 64
    spec = load_spec("nafnet_fewshot", overrides=overrides)
    spec.config["task"]["data"] = str(resolve_data(spec.config["task"]["data"]))
    return spec.config


def _session(device: torch.device, root: Path, rank: int = 0, world: int = 1):
    from platform.train.session import Session

    class RankSession(Session):
        def device(self):
            return device

        def prepare_model(self, model):
            model = model.to(device)
            if world == 1:
                return model
            return torch.nn.parallel.DistributedDataParallel(model, device_ids=[0] if device.type == "cuda" else None)

    s = RankSession(checkpoint_root=root)
    s.rank, s.world_size = rank, world
    return s


def _one_trial(config: dict, steps: int, device: str, root: str, threads: int, barrier, results, index: int):
    """A packed trial (forked process): build and warm up (a long trial's steady state: kernels loaded,
    allocator grown), wait for the others, then train ``steps`` steps and validate, timed."""
    try:
        from platform.train.loop import build_trial, train_epoch

        torch.set_num_threads(threads)
        t0 = time.time()
        trial = build_trial(config, _session(torch.device(device), Path(root) / str(index)))
        float(train_epoch(trial, 0, max_steps=2)[0])
        trial.task.validate(trial.model, trial.device, trial.precision)
        setup = time.time() - t0
        barrier.wait(timeout=300)
        start = time.time()
        loss = float(train_epoch(trial, 1, max_steps=steps)[0]) / steps  # reads the device: synchronises
        val = trial.task.validate(trial.model, trial.device, trial.precision)
        end = time.time()
        results.put({"index": index, "start": start, "end": end, "setup_s": setup, "loss": loss,
                     "val_psnr": val.sums.get("val_psnr", 0.0) / max(1, val.count)})
    except BaseException as exc:  # reported to the parent, which records it
        barrier.abort()
        results.put({"index": index, "error": error_text(exc)})


def _collect(procs, results, n: int, timeout: float) -> list[dict]:
    """The ``n`` results the processes put in ``results`` (or what came before ``timeout``); kills stragglers."""
    out, end = [], time.time() + timeout
    while len(out) < n and time.time() < end:
        try:
            out.append(results.get(timeout=max(0.1, min(1.0, end - time.time()))))
        except queue_lib.Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                break
    for p in procs:
        p.join(timeout=max(0.1, min(5.0, end - time.time())))
        if p.is_alive():
            p.kill()
            p.join()
    return out


def _wave(ctx: Ctx, config: dict, n: int, steps: int, timeout: float) -> dict:
    mpc = mp.get_context("fork")
    barrier, results = mpc.Barrier(n), mpc.Queue()
    threads = _threads(ctx, n)
    root = tempfile.mkdtemp(prefix=f"packed{n}-", dir=ctx.work)
    procs = [mpc.Process(target=_one_trial, args=(config, steps, ctx.device, root, threads, barrier, results, i))
             for i in range(n)]
    for p in procs:
        p.start()
    got = _collect(procs, results, n, timeout)
    # A trial that fails breaks the barrier for the others: its own error comes first.
    errors = sorted((r["error"] for r in got if "error" in r), key=lambda e: e.startswith("BrokenBarrierError"))
    ok = [r for r in got if "error" not in r]
    if errors or len(ok) < n:
        return {"trials": n, "status": f"failed: {errors[0]}" if errors else "out of time"}
    window = max(r["end"] for r in ok) - min(r["start"] for r in ok)
    return {"trials": n, "status": "ok", "window_s": window, "trials_per_hour": n * 3600.0 / window,
            "trial_s": statistics.median(r["end"] - r["start"] for r in ok),
            "setup_s": statistics.median(r["setup_s"] for r in ok), "val_psnr": statistics.median(
                r["val_psnr"] for r in ok)}


def run_packed(ctx: Ctx) -> None:
    """Trials/hour with N trials of the GPU profile sharing the device (fractional-GPU packing)."""
    counts, steps = ((1, 2), 2) if ctx.tiny else ((1, 2, 4, 8), 50)
    config = trial_config(ctx, steps)
    data = {"steps": steps, "settings": {"crop": config["task"]["crop"], "batch": config["task"]["batch_size"],
                                         "model": "nafnet small" + (" (tiny)" if ctx.tiny else "")}, "rows": []}
    for i, n in enumerate(counts):
        left = ctx.left()
        if left < (5 if ctx.tiny else 15):
            data["rows"].append({"trials": n, "status": "out of time"})
            continue
        share = left / (len(counts) - i) * (1.6 if i < len(counts) - 1 else 1.0)
        log.info("packed: %d trial(s) at once", n)
        data["rows"].append(_wave(ctx, config, n, steps, min(left - 2, max(share, 10.0))))
        ctx.save(data)
    one = next((r for r in data["rows"] if r["trials"] == 1 and r["status"] == "ok"), None)
    for r in data["rows"]:
        if one and r["status"] == "ok":
            r["vs_1"] = r["trials_per_hour"] / one["trials_per_hour"]
    ctx.save(data)


def table_packed(data: dict) -> str:
    s = data.get("settings", {})
    rows = [[r["trials"], r.get("trials_per_hour"), r.get("vs_1"), r.get("trial_s"), r.get("setup_s"),
             r.get("val_psnr"), r["status"]] for r in data.get("rows", [])]
    return (f"packed trials: N concurrent processes, each the platform's trial ({s.get('model')}, crop "
            f"{s.get('crop')}, batch {s.get('batch')}, {data.get('steps')} steps + one validation) on one device; "
            "trials/hour = N x 3600 / (last end - first start); process start-up, the trial's build and its "
            "warm-up (2 steps, one validation) are excluded\n\n"
            + md_table(["trials at once", "trials/hour", "vs 1", "s per trial", "build+warm-up s", "val PSNR",
                        "status"], rows))


def targets_packed(data: dict) -> list[dict]:
    four = next((r for r in data.get("rows", []) if r["trials"] == 4 and r.get("vs_1")), None)
    if not four:
        return [target("packing: trials/hour 4 vs 1", None, f">= {TARGET_PACKING:g}", None, "no 4-trial figure")]
    return [target("packing: trials/hour 4 vs 1", round(four["vs_1"], 2), f">= {TARGET_PACKING:g}",
                   four["vs_1"] >= TARGET_PACKING)]


# --------------------------------------------------------------------------- 4. model zoo
def _zoo_pairs(ctx: Ctx) -> list[tuple[str, str | None]]:
    from platform.bench.models import zoo
    from platform.models import MODELS

    pairs = zoo()
    if ctx.tiny:  # default sizes, no released-checkpoint presets (nafnet-sidd-width64...): the path, not the
        # figures; and no MambaIR, whose pure-PyTorch scan takes minutes on a CPU
        pairs = [(n, s) for n, s in pairs if s == MODELS.meta(n).get("default_size", s) and n != "mambair"
                 and not n.startswith("nafnet-")]
    # Each model at its default size first, then the other sizes; MambaIR (the slowest) last.
    return sorted(pairs, key=lambda p: (p[0] == "mambair", p[1] != MODELS.meta(p[0]).get("default_size", p[1])))


def run_zoo(ctx: Ctx) -> None:
    """Forward + backward of every zoo model (bf16 + channels_last on CUDA) at 256², batch 8."""
    from platform.bench.models import measure

    crop, batch, steps, warmup = (32, 2, 1, 0) if ctx.tiny else (256, 8, 5, 2)
    data = {"settings": {"crop": crop, "batch": batch, "steps": steps, "warmup": warmup}, "rows": [], "notes": []}
    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        data["notes"].append("segmentation models skipped: segmentation_models_pytorch not installed (or it does "
                             "not import: see env.json)")
    device = torch.device(ctx.device)
    for name, size in _zoo_pairs(ctx):
        if ctx.left() < (2 if ctx.tiny else 8):
            data["rows"].append({"model": name, "size": size or "-", "error": "out of time"})
            continue
        try:
            data["rows"].append(measure(name, size, device, crop, batch, steps, warmup))
        except Exception as exc:  # e.g. CUDA OOM for the largest: recorded, the others go on
            data["rows"].append({"model": name, "size": size or "-", "error": f"failed: {error_text(exc)[:160]}"})
        if ctx.cuda:
            torch.cuda.empty_cache()
        ctx.save(data)


def table_zoo(data: dict) -> str:
    s = data.get("settings", {})
    rows = [[r["model"], r["size"], r.get("params_m"), r.get("precision"), r.get("ms_per_step"), r.get("images_per_s"),
             r.get("peak_mem_mb"), r.get("error", "ok")] for r in data.get("rows", [])]
    notes = "".join(f"\n\n{n}" for n in data.get("notes", []))
    return (f"model zoo forward+backward: batch {s.get('batch')} x 3 x {s.get('crop')}², {s.get('steps')} steps "
            f"after {s.get('warmup')} warm-up\n\n"
            + md_table(["model", "size", "params M", "precision", "ms/step", "images/s", "peak MB", "status"], rows)
            + notes)


# --------------------------------------------------------------------------- 5. DDP on one device
def _threads(ctx: Ctx, processes: int) -> int:
    """CPU threads per process: the cores shared out; one on --tiny, where OpenMP threads waiting for
    each other on a loaded 2-core machine make a step 100x slower."""
    return 1 if ctx.tiny else max(1, (os.cpu_count() or 2) // processes)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, world: int, backend: str, port: int, config: dict, steps: int, device: str, root: str,
              threads: int, results) -> None:
    """One DDP rank (forked process): the platform's trial, ``steps`` timed steps after 2 warm-up steps."""
    import datetime

    import torch.distributed as dist

    try:
        from platform.train.loop import build_trial, train_epoch

        torch.set_num_threads(threads)
        dev = torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")
        if world > 1:
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=30))
        trial = build_trial(config, _session(dev, Path(root) / str(rank), rank, world))
        float(train_epoch(trial, 0, max_steps=2)[0])  # warm-up; reading the loss synchronises
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        float(train_epoch(trial, 1, max_steps=steps)[0])
        results.put({"rank": rank, "steps_per_s": steps / (time.perf_counter() - t0)})
    except BaseException as exc:  # reported to the parent
        results.put({"rank": rank, "error": error_text(exc)})
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _ddp_run(ctx: Ctx, backend: str, world: int, config: dict, steps: int, timeout: float) -> dict:
    mpc = mp.get_context("fork")
    results, port = mpc.Queue(), _free_port()
    root = tempfile.mkdtemp(prefix=f"ddp-{backend}-", dir=ctx.work)
    procs = [mpc.Process(target=_ddp_rank, args=(r, world, backend, port, config, steps, ctx.device, root,
                                                 _threads(ctx, world), results)) for r in range(world)]
    for p in procs:
        p.start()
    got = _collect(procs, results, world, timeout)
    errors = [r["error"] for r in got if "error" in r]
    if errors or len(got) < world:
        return {"backend": backend, "processes": world, "status": f"failed: {errors[0]}" if errors else "out of time"}
    sps = min(r["steps_per_s"] for r in got)  # the ranks step together
    batch = config["task"]["batch_size"]
    return {"backend": backend, "processes": world, "status": "ok", "steps_per_s": sps,
            "images_per_s": sps * batch * world}


def run_ddp(ctx: Ctx) -> None:
    """A 2-process DDP step on one device: NCCL where it runs (two ranks on one GPU may be refused:
    "Duplicate GPU detected"), else gloo; one process without DDP as the baseline."""
    steps = 2 if ctx.tiny else 20
    data: dict = {"steps": steps, "rows": [], "notes": []}
    timeout = 60.0 if ctx.tiny else 45.0
    data["rows"].append(_ddp_run(ctx, "none", 1, trial_config(ctx, steps + 2, 1), steps, min(timeout, ctx.left())))
    ctx.save(data)
    config = trial_config(ctx, steps + 2, 2)
    backends = ["nccl", "gloo"] if ctx.cuda and torch.distributed.is_nccl_available() else ["gloo"]
    if not ctx.cuda:
        data["notes"].append("nccl not tried: it needs CUDA")
    for backend in backends:
        if ctx.left() < 10:
            data["rows"].append({"backend": backend, "processes": 2, "status": "out of time"})
            break
        limit = 30.0 if backend == "nccl" else timeout  # a refused NCCL may hang rather than fail
        row = _ddp_run(ctx, backend, 2, config, steps, min(limit, ctx.left() - 2))
        data["rows"].append(row)
        ctx.save(data)
        if row["status"] == "ok":
            data["backend"] = backend
            break
        data["notes"].append(f"{backend} failed, falling back: {row['status']}")
    ctx.save(data)


def table_ddp(data: dict) -> str:
    rows = [[r["backend"], r["processes"], r.get("steps_per_s"), r.get("images_per_s"), r["status"]]
            for r in data.get("rows", [])]
    text = (f"DDP on one device: the platform's trial (GPU profile, {data.get('steps')} timed steps after 2) in 1 "
            f"process and in 2 DDP ranks; backend used: {data.get('backend', 'none')}\n\n"
            + md_table(["backend", "processes", "steps/s", "images/s (all ranks)", "status"], rows))
    return text + "".join(f"\n\n{n}" for n in data.get("notes", []))


RUNS = {"train": run_train, "tiled": run_tiled, "packed": run_packed, "zoo": run_zoo, "ddp": run_ddp}
TABLES = {"train": table_train, "tiled": table_tiled, "packed": table_packed, "zoo": table_zoo, "ddp": table_ddp}
TARGETS = {"train": targets_train, "tiled": targets_tiled, "packed": targets_packed, "zoo": lambda d: [],
           "ddp": lambda d: []}
