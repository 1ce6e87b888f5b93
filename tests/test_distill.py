"""Distillation: the KL loss against hand computations, the teacher cache, teacher targets in the
trainer, and a tiny end-to-end ``platform.distill`` search with a registered teacher."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from platform.config import is_searchable, load_spec
from platform.distill.cache import TeacherCache
from platform.distill.data import DistillCropDataset
from platform.distill.teacher import Teacher, fill_cache, resolve_teacher
from platform.losses import LOSSES
from platform.losses.distill import OutputDistillation, SoftTargetKL, TeacherStudentLoss


# --------------------------------------------------------------------------- the KL loss
def test_kl_matches_a_hand_computation():
    # One pixel, three classes: KL(p_t || p_s) at T = 2, times T².
    s = torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1)
    t = torch.tensor([0.0, 2.0, 0.5]).view(1, 3, 1, 1)
    temp = 2.0

    def softmax(v):
        e = [math.exp(x / temp) for x in v]
        return [x / sum(e) for x in e]

    ps, pt = softmax([1.0, 0.0, -1.0]), softmax([0.0, 2.0, 0.5])
    hand = temp**2 * sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt))
    assert float(SoftTargetKL(temp)(s, t)) == pytest.approx(hand, rel=1e-6)
    assert float(SoftTargetKL(temp)(t, t)) == pytest.approx(0.0, abs=1e-7)


def test_kl_matches_torch_kl_div_per_pixel_batchmean():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 4, 3, generator=g), torch.randn(2, 5, 4, 3, generator=g) * 3
    temp = 4.0
    # Pixels as the batch: (B*H*W, C) rows, the KL summed over classes and averaged over rows.
    def rows(x):
        return x.permute(0, 2, 3, 1).reshape(-1, 5)

    ref = F.kl_div(F.log_softmax(rows(s) / temp, 1), F.softmax(rows(t) / temp, 1), reduction="batchmean") * temp**2
    assert float(SoftTargetKL(temp)(s, t)) == pytest.approx(float(ref), rel=1e-5)


def test_binary_kl_is_the_bernoulli_kl_of_sigmoids():
    s, t, temp = torch.tensor([[[[0.3]]]]), torch.tensor([[[[-1.2]]]]), 3.0
    p, q = 1 / (1 + math.exp(-0.3 / temp)), 1 / (1 + math.exp(1.2 / temp))
    hand = temp**2 * (q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p)))
    assert float(SoftTargetKL(temp)(s, t)) == pytest.approx(hand, rel=1e-5)


def test_kl_gradient_reaches_the_student_only():
    s = torch.randn(1, 3, 2, 2, requires_grad=True)
    t = torch.randn(1, 3, 2, 2, requires_grad=True)
    SoftTargetKL(2.0)(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_distillation_losses_are_registered():
    assert LOSSES.meta("distill_kl")["kind"] == "distillation"
    assert LOSSES.meta("distill_output")["kind"] == "distillation"
    with pytest.raises(ValueError, match="temperature"):
        SoftTargetKL(0.0)


def test_teacher_student_loss_weights_ground_truth_and_teacher():
    from platform import losses

    g = torch.Generator().manual_seed(1)
    pred, gt, teacher = (torch.rand(4, 3, 8, 8, generator=g) * 2 - 1 for _ in range(3))
    labelled = torch.tensor([1.0, 0.0, 1.0, 0.0])
    loss = TeacherStudentLoss(losses.create({"mse": 1.0}), OutputDistillation("l1"), weight=2.5)
    total, parts = loss(pred, {"target": gt, "teacher": teacher, "labelled": labelled})
    m = labelled.bool()
    expected_gt = float(((pred[m] - gt[m]) ** 2).mean())
    expected_d = float((pred - teacher).abs().mean())
    assert float(parts["mse"]) == pytest.approx(expected_gt, rel=1e-6)
    assert float(parts["distill"]) == pytest.approx(expected_d, rel=1e-6)
    assert float(total) == pytest.approx(expected_gt + 2.5 * expected_d, rel=1e-6)
    assert loss.weights == {"mse": 1.0, "distill": 2.5}
    # No labelled crop in the batch: the teacher term alone, still differentiable.
    p = pred.clone().requires_grad_(True)
    total, parts = loss(p, {"target": gt, "teacher": teacher, "labelled": torch.zeros(4)})
    total.backward()
    assert float(total.detach()) == pytest.approx(2.5 * expected_d, rel=1e-6) and float(parts["mse"]) == 0.0
    assert p.grad is not None


# --------------------------------------------------------------------------- a tiny shot and teacher
def _smooth(rng, h: int, w: int) -> np.ndarray:
    """A smooth random colour image in [0, 1] (bilinear upsampling of a coarse grid)."""
    coarse = torch.from_numpy(rng.random((1, 3, 4, 4)).astype(np.float32))
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)[0].permute(1, 2, 0).numpy()


@pytest.fixture
def shot(tmp_path):
    """4 graded pairs (target = input^0.7) and 3 ungraded frames, 64x64 8-bit PNGs."""
    from platform.data.io import write_image

    rng = np.random.default_rng(0)
    root = tmp_path / "shot"
    for i in range(4):
        x = _smooth(rng, 64, 64)
        write_image(root / "input" / f"f{i}.png", x)
        write_image(root / "target" / f"f{i}.png", x**0.7)
    for i in range(3):
        write_image(root / "ungraded" / f"u{i}.png", _smooth(rng, 64, 64))
    return root


def _teacher_checkpoint(folder: Path, data: Path) -> Path:
    """A lut3d teacher ('lut': one 3D LUT) with a non-trivial grade, saved as the registry's weights.pt."""
    from platform.models import create
    from platform.safeio import save_atomic, to_json_text

    torch.manual_seed(0)
    model = create("lut3d", size="lut", in_channels=3, out_channels=3, lut_size=9)
    with torch.no_grad():
        model.offset.add_(0.2 * torch.randn_like(model.offset))
    config = {"task": {"name": "img2img", "data": str(data), "crop": 32},
              "model": {"architecture": "lut3d", "size": "lut", "options": {"lut_size": 9}},
              "_model_kwargs": {"in_channels": 3, "out_channels": 3}}
    folder.mkdir(parents=True, exist_ok=True)
    save_atomic({"model": model.state_dict(), "config": to_json_text(config)}, folder / "weights.pt")
    return folder / "weights.pt"


def _frames(shot: Path) -> list[np.ndarray]:
    from platform.data.io import read_array

    return [read_array(p) for p in sorted((shot / "ungraded").iterdir())]


def test_teacher_cache_computes_each_frame_once(shot, tmp_path):
    ref = resolve_teacher(str(_teacher_checkpoint(tmp_path / "teacher", shot)))
    teacher = Teacher(ref)
    forwards = []
    teacher.model.register_forward_hook(lambda *a: forwards.append(1))
    frames = _frames(shot)

    first = fill_cache(frames, TeacherCache(ref.teacher_id, tmp_path / "cache"), teacher)
    assert first["computed"] == 3 and teacher.calls == 3 and len(forwards) >= 3
    n = len(forwards)
    again = fill_cache(frames, TeacherCache(ref.teacher_id, tmp_path / "cache"), teacher)  # a new process's cache
    assert again["computed"] == 0 and teacher.calls == 3 and len(forwards) == n  # no teacher forward at all

    cache = TeacherCache(ref.teacher_id, tmp_path / "cache")
    cached = cache.get(frames[0], None)
    assert cached.dtype == np.float16 and cached.shape == (3, 64, 64)
    np.testing.assert_allclose(cached.astype(np.float32), teacher.predict(frames[0]), atol=2e-3)
    changed = frames[0].copy()
    changed[0, 0, 0] ^= 1  # one pixel differs: a new entry
    assert not cache.has(changed) and cache.has(frames[1])
    other = TeacherCache(ref.teacher_id + "-v2", tmp_path / "cache")  # another teacher version
    assert not other.has(frames[0])
    from platform.errors import DataError

    with pytest.raises(DataError, match="python -m platform.distill"):
        other.get(frames[0], None)


def _first(node):
    if is_searchable(node):
        return next(iter(node.values()))[0]
    if isinstance(node, dict):
        return {k: _first(v) for k, v in node.items()}
    return node


def _trial_config(shot: Path, teacher_id: str, cache: Path) -> dict:
    spec = load_spec("distill_img2img", quick=True, overrides={
        "task": {"data": str(shot), "unlabelled": str(shot / "ungraded"), "crop": 32, "crops_per_epoch": 16,
                 "batch_size": 8, "val_holdout": 1},
        "distill": {"teacher": teacher_id, "cache": str(cache), "weight": 2.0, "labelled_fraction": 0.5},
        "train": {"epochs": 1}})
    return _first(spec.config)


def test_unlabelled_frames_and_teacher_targets_reach_the_trainer(shot, tmp_path, one_thread):
    from platform import tasks
    from platform.distill.task import DistillTask
    from platform.train.loop import build_trial, train_epoch
    from platform.train.session import Session

    ref = resolve_teacher(str(_teacher_checkpoint(tmp_path / "teacher", shot)))
    config = _trial_config(shot, ref.teacher_id, tmp_path / "cache")
    dtask = DistillTask(tasks.create("img2img", config["task"]), config)
    labelled, unlabelled = dtask.frames()
    assert len(labelled) == 3 and len(unlabelled) == 3
    teacher = Teacher(ref)
    fill_cache([x for _, x, _ in labelled] + [x for _, x in unlabelled], dtask.cache, teacher)

    t = build_trial(config, Session(tmp_path / "ckpt"))
    assert isinstance(t.dataset, DistillCropDataset) and isinstance(t.criterion, TeacherStudentLoss)
    assert t.names[-1] == "distill" and t.criterion.weight == 2.0
    labelled_items, unlabelled_items = t.dataset.groups
    assert sorted(i.name for i in unlabelled_items) == ["u0", "u1", "u2"]
    assert all(i.target is None for i in unlabelled_items) and all(i.target is not None for i in labelled_items)
    # The teacher target of an unlabelled crop is the teacher's output on that crop of the frame.
    flags = []
    for index in range(len(t.dataset)):
        item, top, left, hf, vf, turns = t.dataset.plan(0, index)
        _, y = t.dataset[index]
        flags.append(float(y["labelled"]))
        if item.target is None and not (hf or vf or turns):
            full = teacher.predict(item.input)[:, top:top + 32, left:left + 32]
            np.testing.assert_allclose(y["teacher"].numpy(), full, atol=2e-3)
            assert float(y["labelled"]) == 0.0
    assert 0.0 in flags and 1.0 in flags
    sums = train_epoch(t, 0)
    assert torch.isfinite(sums).all() and float(sums[-1]) > 0  # the distillation term was trained on


def test_distill_task_refuses_a_missing_cache(shot, tmp_path):
    from platform.errors import DataError
    from platform.train.loop import build_trial
    from platform.train.session import Session

    ref = resolve_teacher(str(_teacher_checkpoint(tmp_path / "teacher", shot)))
    config = _trial_config(shot, ref.teacher_id, tmp_path / "empty-cache")
    with pytest.raises(DataError, match="no cached output"):
        build_trial(config, Session(tmp_path / "ckpt"))


def test_bad_unlabelled_path_is_a_config_error(shot, tmp_path):
    from platform import tasks
    from platform.distill.task import DistillTask
    from platform.errors import ConfigError

    config = _trial_config(shot, "x", tmp_path / "cache")
    config["task"]["unlabelled"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="task.unlabelled"):
        DistillTask(tasks.create("img2img", config["task"]), config).frames()


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_distill_search_registers_a_student(shot, tmp_cwd):
    import mlflow
    from mlflow.tracking import MlflowClient

    from platform import pyfunc, tracking
    from platform.distill.run import DistillOptions, run_distill

    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    ckpt = _teacher_checkpoint(tmp_cwd / "teacher", shot)
    exp = client.create_experiment("teacher_shot")
    run = client.create_run(exp)
    folder = tmp_cwd / "teacher_ckpt"  # a trainer checkpoint folder, logged as a search would log it
    folder.mkdir()
    from platform.safeio import save_atomic

    save_atomic({**torch.load(ckpt, weights_only=True), "epoch": 1}, folder / "state.pt")
    model_uri = pyfunc.log_model(folder, run.info.run_id)
    client.create_registered_model("teacher_shot")
    v = client.create_model_version("teacher_shot", model_uri, run.info.run_id)
    client.set_registered_model_alias("teacher_shot", "champion", v.version)

    out = run_distill(DistillOptions(
        teacher="models:/teacher_shot@champion", quick=True, unlabelled=str(shot / "ungraded"), max_trials=1,
        overrides={"task": {"crop": 32, "crops_per_epoch": 16, "batch_size": 8, "val_holdout": 1},
                   "train": {"epochs": 2}, "search": {"timebox": {"seconds": None}},
                   "promotion": {"floors": False}, "compress": {"pareto_frame": "320x180"}}))
    assert out.teacher.teacher_id == f"models:/teacher_shot/{v.version}"
    assert out.cache["frames"] == 6 and out.cache["computed"] == 6
    assert out.search.spec.name == "teacher_shot_student"
    best = out.search.best
    assert best is not None and "distill.weight" in best  # λ is one of the searched values
    history = best["result"].metrics_dataframe
    assert "train_loss/distill" in history and (history["train_loss/distill"] > 0).all()
    versions = client.search_model_versions("name='teacher_shot_student'")
    assert len(versions) == 1
    assert out.search.promotion is not None and out.search.promotion.promoted
    assert client.get_model_version_by_alias("teacher_shot_student", "champion").version == versions[0].version
    parent = client.get_run(out.search.parent_run_id)
    assert parent.data.tags["distill_teacher"] == out.teacher.teacher_id

    # The teacher and the student as quality-vs-cost points on the parent run, for the report.
    from platform import tasks
    from platform.champion import evaluate
    from platform.report.pareto import ARTIFACT, from_json

    teacher = pyfunc.load_any(f"models:/teacher_shot/{v.version}").model
    teacher_psnr = evaluate(teacher, tasks.create("img2img", out.search.spec["task"], seed=0), "val_psnr")
    assert parent.data.metrics["teacher_val_psnr"] == pytest.approx(teacher_psnr, abs=1e-4)
    points, metric, mode, frame = from_json(Path(client.download_artifacts(parent.info.run_id, ARTIFACT)).read_text())
    assert (metric, mode, frame) == ("val_psnr", "max", "320x180")
    assert [p.role for p in points] == ["teacher", "student"]
    assert points[0].quality == pytest.approx(teacher_psnr, abs=1e-4)
    assert points[0].params == sum(p.numel() for p in teacher.parameters())
    assert points[1].quality == pytest.approx(best["val_psnr"]) and best["trial"] in points[1].name
    student = pyfunc.load_any(f"models:/teacher_shot_student/{versions[0].version}").model
    assert points[1].params == sum(p.numel() for p in student.parameters())
    assert all(p.ms_per_frame > 0 and p.macs >= 0 for p in points)


# --------------------------------------------------------------------------- the benchmark's pieces
def test_bench_verdict_applies_the_issue_bar():
    from platform.bench.distill import table, verdict

    teacher = {"model": "lut3d/local", "psnr": 30.0, "ssim": 0.9, "ms_1080p": 8000.0, "params": 225846}
    fast_close = {"model": "lut3d/local_tiny", "psnr": 29.6, "ssim": 0.9, "ms_1080p": 1900.0, "params": 115530}
    v = verdict(teacher, fast_close)
    assert v["speedup"] == pytest.approx(8000 / 1900) and v["psnr_gap_db"] == pytest.approx(-0.4) and v["met"]
    assert not verdict(teacher, {**fast_close, "psnr": 29.4})["met"]  # 0.6 dB below
    assert not verdict(teacher, {**fast_close, "ms_1080p": 2100.0})["met"]  # 3.8x
    assert "MET" in table(teacher, fast_close, v)


def test_bench_speed_times_teacher_and_student_through_the_predict_path(monkeypatch):
    from platform.bench import distill, predict as bench_predict
    from platform.models import create

    monkeypatch.setattr(bench_predict, "photo_frame", lambda w, h: np.full((36, 64, 3), 0.5, np.float32))
    config = {"task": {"name": "img2img"}, "model": {"architecture": "lut3d", "size": "lut"}}
    lut = create("lut3d", size="lut", lut_size=9)
    ms, timing = distill.speed({"teacher": (lut, config), "student": (lut, config)}, rounds=2)
    assert set(ms) == {"teacher", "student"} and all(v > 0 for v in ms.values())
    assert timing["rounds"] == 2 and len(timing["ms_per_round"]["student"]) == 2


def test_bench_ungraded_frames_leave_the_test_photos_out(tmp_path):
    from platform.bench.distill import write_unlabelled

    folder = write_unlabelled(tmp_path, ["00_astronaut", "07_motorcycle_left"], per_frame=1)
    names = sorted(p.stem for p in folder.iterdir())
    assert len(names) == 8 and not any(n.startswith(("00_", "07_")) for n in names)


def test_segmentation_crops_carry_masks_and_teacher_logits_through_the_kl_loss():
    from platform import losses
    from platform.distill.data import DistillItem

    rng = np.random.default_rng(0)
    image = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
    mask = (rng.random((40, 40)) > 0.5).astype(np.uint8)
    logits = rng.standard_normal((1, 40, 40)).astype(np.float16)  # a binary teacher head
    lab = [DistillItem("a", image, mask, logits)]
    unl = [DistillItem("u", image[::-1].copy(), None, logits[:, ::-1].copy())]
    ds = DistillCropDataset(lab, unl, crop=16, length=8, target_kind="mask", augment={"hflip": 0.5})
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert x.shape == (8, 3, 16, 16) and y["target"].dtype == torch.int64 and y["target"].shape == (8, 16, 16)
    assert y["teacher"].shape == (8, 1, 16, 16) and set(y["labelled"].tolist()) <= {0.0, 1.0}
    # The same crop of mask and teacher logits moves with the input (plan -> arrays).
    for i in range(8):
        item, top, left, hf, vf, turns = ds.plan(0, i)
        if item.target is not None and not (hf or vf or turns):
            np.testing.assert_array_equal(y["target"][i].numpy(), mask[top:top + 16, left:left + 16])
            np.testing.assert_allclose(y["teacher"][i, 0].numpy(), logits[0, top:top + 16, left:left + 16])
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    loss = TeacherStudentLoss(losses.create({"bce": 1.0}), SoftTargetKL(2.0), weight=1.5)
    total, parts = loss(net(x), y)
    total.backward()
    assert torch.isfinite(total) and set(parts) == {"bce", "distill"} and net.weight.grad.abs().sum() > 0


def test_cli_refuses_an_unknown_teacher_in_one_paragraph(tmp_cwd):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    (tmp_cwd / "platform").symlink_to(repo / "platform")
    out = subprocess.run([sys.executable, "-m", "platform.distill", "--teacher", "models:/nope@champion"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_cwd)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "models:/nope@champion" in out.stderr and "no such model version" in out.stderr


def test_seg_bench_iou_and_floor_match_hand_counts():
    from platform.bench.distill_seg import floor_iou, iou, normalise

    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1  # 4 foreground pixels of 16
    pred = torch.full((1, 4, 4), -5.0)
    pred[0, :2, :3] = 5.0  # 6 predicted: intersection 4, union 6

    class Fixed(torch.nn.Module):
        def forward(self, x):
            assert torch.allclose(x, normalise(torch.zeros_like(x)))
            return pred[None]

    test = [(torch.zeros(3, 4, 4), mask)]
    assert iou(Fixed(), test) == pytest.approx(4 / 6)
    assert floor_iou(test) == pytest.approx(4 / 16)


def test_seg_bench_verdict_applies_the_segmentation_bar():
    from platform.bench.distill_seg import verdict

    t = {"iou": 0.80, "ms_1080p": 300.0, "floor_iou": 0.3}
    assert verdict(t, {"iou": 0.785, "ms_1080p": 100.0})["met"]
    assert not verdict(t, {"iou": 0.775, "ms_1080p": 100.0})["met"]  # 2.5 points lower
    assert not verdict(t, {"iou": 0.80, "ms_1080p": 101.0})["met"]  # 2.97x
    assert not verdict({**t, "iou": 0.28}, {"iou": 0.28, "ms_1080p": 1.0})["teacher_learnt"]


def test_seg_bench_table_judges_each_student_on_its_own():
    from platform.bench.distill_seg import table, verdict

    teacher = {"model": "resnet50_unet", "iou": 0.80, "floor_iou": 0.2, "ms_1080p": 5000.0, "params": 32.5e6,
               "train_steps": 400, "train_wall_s": 240.0}
    students = []
    for name, score, ms in (("seg_fpn_lite/mobilenetv3_small", 0.75, 250.0), ("seg_fpn_lite/resnet18", 0.79, 900.0)):
        s = {"model": name, "iou": score, "floor_iou": 0.2, "ms_1080p": ms, "params": 1e6, "train_steps": 900,
             "train_wall_s": 120.0, "timing": {"round_min": 5000 / ms - 1, "round_max": 5000 / ms + 1}}
        students.append({**s, "verdict": verdict(teacher, s)})
    rows = table({"teacher": teacher, "students": students, "data": {"test": ["07", "08"]}}).splitlines()
    assert "20.0x" in rows[3] and "-5.0 points" in rows[3] and rows[3].endswith("not met |")
    assert "5.6x" in rows[4] and "-1.0 points" in rows[4] and rows[4].endswith("MET |")
    assert "CAVEAT" not in rows[-1]


def test_seg_bench_student_loss_uses_cached_teacher_logits_on_unlabelled_crops():
    """Unlabelled crops get only the KL term against the cached teacher logits; labelled ones add BCE + Dice."""
    from platform.bench.distill_seg import gt_loss, normalise, student_batch

    rng = np.random.default_rng(0)
    img = torch.rand(3, 8, 8)
    mask = (torch.rand(1, 8, 8) > 0.5).float()
    cache = [torch.randn(1, 8, 8), torch.randn(1, 8, 8)]
    student = torch.nn.Conv2d(3, 1, 1)
    kl = SoftTargetKL(2.0)
    one_crop = student_batch([(img, mask)], [img], cache, 8, 1, rng, kl)  # batch of 1: a labelled crop
    with torch.no_grad():
        out = student(normalise(img[None]))
    got = one_crop(student)
    full = kl(out, cache[0][None]) + gt_loss(out, mask[None])
    flipped = kl(out.flip(-1), cache[0][None].flip(-1)) + gt_loss(out.flip(-1), mask[None].flip(-1))
    assert got.item() == pytest.approx(full.item(), rel=1e-5) or got.item() == pytest.approx(flipped.item(), rel=1e-5)
    both = student_batch([(img, mask)], [img], cache, 8, 2, np.random.default_rng(1), kl)(student)
    # the second crop is the unlabelled frame: KL against cache[1] only, each term weighted 1/2
    expect = [0.5 * full + 0.5 * kl(o, c) for o, c in ((out, cache[1][None]), (out.flip(-1), cache[1][None].flip(-1)))]
    expect += [0.5 * flipped + 0.5 * kl(o, c) for o, c in ((out, cache[1][None]), (out.flip(-1), cache[1][None].flip(-1)))]
    assert any(both.item() == pytest.approx(e.item(), rel=1e-5) for e in expect)
    both.backward()
    assert student.weight.grad is not None


def test_distill_segmentation_space_searches_the_small_student():
    spec = load_spec("distill_segmentation")
    arch = spec["model"]["architecture"]
    assert is_searchable(arch) and "seg_fpn_lite" in arch["choice"]
