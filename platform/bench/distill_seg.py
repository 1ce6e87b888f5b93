"""``python -m platform.bench distill --task segmentation``: a student within 2 IoU points at >= 3x speed.

On the bundled ``matte`` sample (foregrounds over photos; binary masks = alpha >= 0.5), sorted by
name: the frames at ``--test-ids`` (default 7, 8: the logo and the coins over new backgrounds, both
foregrounds also in labelled frames, as in a shot) are held out of everything, the first
``--labelled`` others are labelled, the rest are the shot's *unlabelled* frames (their masks are
never read).

1. the teacher (``--teacher-model``, default ``resnet50_unet``, 32.5 M parameters) is trained
   from scratch on random crops of the labelled frames (BCE + Dice) for ``--teacher-seconds``
   (cosine learning rate over the time box, the EMA of its weights kept: :func:`train`);
2. its logits on every labelled and unlabelled frame are computed once, at full frame, and cached
   (crops of the cache go with crops of the frames);
3. each student (``seg_fpn_lite`` at each size of ``--student-size-seg``) is trained for ``--student-seconds``:
   ``BCE + Dice`` on the labelled crops + ``λ · distill_kl(T)`` (the project's soft-label KL at
   temperature T, :mod:`platform.losses.distill`) on every crop, trained like the teacher;
4. both are scored on the held-out frames (IoU of the foreground, torchmetrics) and timed on a
   1080p frame on this CPU, teacher and student alternating (:func:`platform.bench._measure.interleave`).

This is a CPU-sized, time-boxed run, not the Ray search of ``python -m platform.distill`` (which
takes the same student through ``search_spaces/distill_segmentation.yaml``): a brief direct
training keeps the benchmark within minutes on a loaded 2-core machine. The floor printed with the
teacher is the IoU of predicting every pixel foreground; a teacher under it, or under 0.5 IoU,
is reported as not having learnt the task.
"""

from __future__ import annotations

import logging
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BAR_SPEEDUP = 3.0
BAR_IOU_POINTS = 2.0


def add_arguments(p) -> None:
    g = p.add_argument_group("segmentation (--task segmentation)")
    g.add_argument("--teacher-model", default="resnet50_unet", help="registered segmentation model of the teacher")
    g.add_argument("--student-size-seg", default="mobilenetv3_small,resnet18",
                   help="seg_fpn_lite sizes of the students, comma-separated (one student each, same teacher)")
    g.add_argument("--teacher-seconds", type=float, default=240.0, help="teacher training time (s)")
    g.add_argument("--student-seconds", type=float, default=120.0, help="student training time (s)")
    g.add_argument("--labelled", type=int, default=4, help="labelled frames (the rest but --test are unlabelled)")
    g.add_argument("--test-ids", default="7,8", help="indices (sorted by name) of the held-out test frames")
    g.add_argument("--crop", type=int, default=128, help="training crop side")
    g.add_argument("--batch", type=int, default=4, help="crops per step")
    g.add_argument("--temperature", type=float, default=2.0, help="KL temperature T")
    g.add_argument("--weight", type=float, default=1.0, help="λ of the KL term")


def load_frames(labelled: int, test_ids: list[int]) -> dict:
    """``{"labelled": [(img, mask)], "unlabelled": [img], "test": [(img, mask)]}``: img 3xHxW, mask 1xHxW."""
    from platform.data.io import to_float
    from platform.data.samples import ensure_sample
    from platform.data.segmentation import load_mattes

    pairs = sorted(load_mattes(ensure_sample("matte")), key=lambda p: p.name)
    if labelled < 1 or not test_ids or labelled + len(test_ids) > len(pairs) or not set(test_ids) <= set(range(len(pairs))):
        raise ValueError(f"--labelled {labelled} and --test-ids {test_ids} must be >= 1 and indices fitting the "
                         f"{len(pairs)} frames of the matte sample")
    items = [(torch.from_numpy(np.ascontiguousarray(to_float(p.input).transpose(2, 0, 1))),
              torch.from_numpy((to_float(p.target)[..., 0] >= 0.5).astype(np.float32))[None]) for p in pairs]
    rest = [item for i, item in enumerate(items) if i not in test_ids]
    return {"labelled": rest[:labelled], "unlabelled": [x for x, _ in rest[labelled:]],
            "test": [items[i] for i in test_ids], "names": [pairs[i].name for i in test_ids]}


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.45) / 0.25


def random_crop(tensors: list[torch.Tensor], size: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """The same random ``size`` crop (and horizontal flip) of tensors sharing H, W."""
    h, w = tensors[0].shape[-2:]
    y, x = int(rng.integers(0, max(1, h - size + 1))), int(rng.integers(0, max(1, w - size + 1)))
    flip = rng.random() < 0.5
    out = [t[..., y:y + size, x:x + size] for t in tensors]
    return [t.flip(-1) if flip else t for t in out]


def gt_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE + Dice, the losses of ``distill_segmentation.yaml`` (smp's binary Dice)."""
    from segmentation_models_pytorch.losses import DiceLoss

    return F.binary_cross_entropy_with_logits(logits, mask) + DiceLoss("binary", from_logits=True)(logits, mask)


def cosine_lr(lr: float, progress: float, warmup: float = 0.03) -> float:
    """The learning rate at ``progress`` (0..1) of a time-boxed run: linear warm-up, then cosine to 0."""
    if progress < warmup:
        return lr * (0.1 + 0.9 * progress / warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / (1.0 - warmup))))


def train(model, batch_loss, seconds: float, lr: float = 1e-3, ema_decay: float = 0.995):
    """AdamW steps on ``batch_loss(model)`` for ``seconds``, the learning rate on a cosine over the
    time box (:func:`cosine_lr`), weights averaged by timm's ``ModelEmaV3`` (which also copies the
    BatchNorm statistics). Returns (the EMA network, step count): the last step's weights of a short
    run at batch 4 swing from one run to the next; their average over the cosine tail does not."""
    from timm.utils import ModelEmaV3

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
    ema = ModelEmaV3(model, decay=ema_decay, use_warmup=True)
    model.train()
    steps, start = 0, time.monotonic()
    while (progress := (time.monotonic() - start) / seconds) < 1.0 or steps < 2:
        for group in opt.param_groups:
            group["lr"] = cosine_lr(lr, progress)
        loss = batch_loss(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
        ema.update(model, step=steps)
        if steps % 20 == 0:
            log.info("step %d loss %.4f lr %.2e", steps, loss.item(), opt.param_groups[0]["lr"])
    return ema.module.eval(), steps


def teacher_batch(labelled, crop: int, batch: int, rng):
    def loss(model):
        xs, ms = zip(*(random_crop(list(labelled[int(rng.integers(len(labelled)))]), crop, rng) for _ in range(batch)))
        return gt_loss(model(normalise(torch.stack(xs))), torch.stack(ms))
    return loss


@torch.inference_mode()
def teacher_cache(teacher, frames: list[torch.Tensor]) -> list[torch.Tensor]:
    """The teacher's logits on each whole frame, computed once (not per step)."""
    teacher.eval()
    return [teacher(normalise(f[None]))[0].clone() for f in frames]


def student_batch(labelled, unlabelled, cache, crop: int, batch: int, rng, kl):
    """Half the crops labelled (GT loss + KL), half unlabelled (KL only), in one forward pass (the
    student's BatchNorm sees the whole batch, not two halves of 2 crops)."""
    n_lab = len(labelled)
    frames = [(x, m) for x, m in labelled] + [(x, None) for x in unlabelled]

    def loss(model):
        picks = sorted(int(rng.integers(n_lab)) if k % 2 == 0 or len(frames) == n_lab
                       else int(rng.integers(n_lab, len(frames))) for k in range(batch))
        crops = [random_crop([frames[i][0], cache[i]] + ([frames[i][1]] if i < n_lab else []), crop, rng)
                 for i in picks]
        out = model(normalise(torch.stack([c[0] for c in crops])))
        total = kl(out, torch.stack([c[1] for c in crops]))
        lab = [k for k, i in enumerate(picks) if i < n_lab]
        if lab:
            total = total + gt_loss(out[lab], torch.stack([crops[k][2] for k in lab])) * len(lab) / batch
        return total
    return loss


@torch.inference_mode()
def iou(model, test) -> float:
    """Foreground IoU over all held-out pixels (torchmetrics' binary Jaccard index)."""
    from torchmetrics.classification import BinaryJaccardIndex

    metric = BinaryJaccardIndex()
    model.eval()
    for x, m in test:
        metric.update(torch.sigmoid(model(normalise(x[None]))), m[None].long())
    return float(metric.compute())


def floor_iou(test) -> float:
    """IoU of predicting every pixel foreground: what a model that learnt nothing scores."""
    fg = sum(float(m.sum()) for _, m in test)
    return fg / sum(m.numel() for _, m in test)


def speed(models: dict, rounds: int) -> tuple[dict, dict]:
    """Median ms per 1080p frame of each model on the CPU, timed in interleaved rounds (after a
    warm-up), and each student's speed ratio against the teacher (roles ``teacher``, ``student:SIZE``)."""
    from platform.bench._measure import interleave, speed_ratio
    from platform.bench.predict import photo_frame

    frame = normalise(torch.from_numpy(np.ascontiguousarray(photo_frame(1920, 1080).transpose(2, 0, 1)))[None])

    def step(model):
        with torch.inference_mode():
            model(frame)

    steps = {}
    for role, model in models.items():
        model.eval()
        step(model)  # warm-up
        steps[role] = (lambda m=model: step(m))
    times = interleave(steps, rounds, 1, torch.device("cpu"))
    ms = {role: 1000 * statistics.median(t) for role, t in times.items()}
    ratios = {role: {**speed_ratio(times, role, "teacher"), "ms_per_round": [1000 * v for v in times[role]]}
              for role in times if role != "teacher"}
    return ms, ratios


def verdict(teacher: dict, student: dict) -> dict:
    speedup = teacher["ms_1080p"] / student["ms_1080p"]
    gap = 100 * (student["iou"] - teacher["iou"])
    learnt = teacher["iou"] > max(teacher["floor_iou"], 0.5)  # matching a teacher that learnt nothing proves nothing
    return {"speedup": speedup, "iou_gap_points": gap, "teacher_learnt": learnt,
            "met": learnt and speedup >= BAR_SPEEDUP and gap >= -BAR_IOU_POINTS}


def figures(model, name: str, steps: int, wall: float, test, ms: float) -> dict:
    return {"model": name, "iou": iou(model, test), "floor_iou": floor_iou(test), "ms_1080p": ms,
            "params": sum(p.numel() for p in model.parameters()), "train_steps": steps, "train_wall_s": wall}


def run(args) -> dict:
    """One teacher, then one student per size of ``--student-size-seg`` (comma-separated), each
    trained on the same cached teacher logits for ``--student-seconds`` and judged on its own."""
    from platform.losses.distill import SoftTargetKL
    from platform.models import create

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = load_frames(args.labelled, [int(i) for i in str(args.test_ids).split(",")])
    t0 = time.monotonic()
    teacher, t_steps = train(create(args.teacher_model, classes=1),
                             teacher_batch(data["labelled"], args.crop, args.batch, rng), args.teacher_seconds)
    t_wall = time.monotonic() - t0
    cache = teacher_cache(teacher, [x for x, _ in data["labelled"]] + data["unlabelled"])
    kl = SoftTargetKL(args.temperature)
    weighted = (lambda s, t: args.weight * kl(s, t))
    students = {}
    for size in [s.strip() for s in str(args.student_size_seg).split(",") if s.strip()]:
        torch.manual_seed(0)
        t0 = time.monotonic()
        batch = student_batch(data["labelled"], data["unlabelled"], cache, args.crop, args.batch, rng, weighted)
        model, steps = train(create("seg_fpn_lite", size=size, classes=1), batch, args.student_seconds)
        students[size] = (model, steps, time.monotonic() - t0)
    ms, timing = speed({"teacher": teacher, **{f"student:{k}": v[0] for k, v in students.items()}}, args.frames)
    result = {"teacher": figures(teacher, args.teacher_model, t_steps, t_wall, data["test"], ms["teacher"]),
              "students": []}
    for size, (model, steps, wall) in students.items():
        fig = figures(model, f"seg_fpn_lite/{size}", steps, wall, data["test"], ms[f"student:{size}"])
        fig.update(temperature=args.temperature, weight=args.weight, timing=timing[f"student:{size}"])
        result["students"].append({**fig, "verdict": verdict(result["teacher"], fig)})
    result["data"] = {"sample": "matte", "labelled": len(data["labelled"]), "unlabelled": len(data["unlabelled"]),
                      "test": data["names"], "crop": args.crop, "batch": args.batch}
    return result


def table(result: dict) -> str:
    t = result["teacher"]
    lines = [("| model | test IoU | ms / 1080p frame (CPU) | parameters | train steps (s) | speed-up (per round) | "
              "IoU gap | bar |"), "|---|---|---|---|---|---|---|---|"]
    for role, r in [("teacher", t)] + [("student", s) for s in result["students"]]:
        v, tm = r.get("verdict"), r.get("timing")
        extra = (f"{v['speedup']:.1f}x ({tm['round_min']:.1f}-{tm['round_max']:.1f}x) | "
                 f"{v['iou_gap_points']:+.1f} points | {'MET' if v['met'] else 'not met'}") if v else "- | - | -"
        lines.append(f"| {role} `{r['model']}` | {r['iou']:.3f} | {r['ms_1080p']:.0f} | {r['params'] / 1e6:.2f}M | "
                     f"{r['train_steps']} ({r['train_wall_s']:.0f}) | {extra} |")
    text = "\n".join(lines) + (f"\n\nbar: >= {BAR_SPEEDUP:.0f}x faster and within {BAR_IOU_POINTS:.0f} IoU points of "
                               f"the teacher on the held-out frames {', '.join(result['data']['test'])}")
    if not result["students"][0]["verdict"]["teacher_learnt"]:
        text += (f"\nCAVEAT: the teacher did not beat its floors (all-foreground IoU {t['floor_iou']:.3f}, or 0.5): "
                 "matching it says little; train it longer (--teacher-seconds).")
    return text
