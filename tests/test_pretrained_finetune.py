"""Fine-tuning helpers: lr groups (0.1x backbone / 1.0x head), backbone freezing, warm-up."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from platform.errors import ConfigError
from platform.pretrained import load_weights
from platform.pretrained.finetune import (
    FinetuneOptions,
    apply_backbone_freeze,
    lr_lambdas,
    param_groups,
    pretrained_lr_scale,
    set_epoch_lrs,
    split_parameters,
)


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    """A pretrained-able backbone plus a head the checkpoint does not have."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.backbone = Backbone()
        self.head = nn.Conv2d(4, classes, 1)

    def forward(self, x):
        return self.head(self.backbone(x))


@pytest.fixture()
def loaded():
    torch.manual_seed(0)
    pretrained = Net(classes=5)  # different head: its tensors do not fit and stay "new"
    model = Net(classes=2)
    report = load_weights(model, pretrained.state_dict(), strict=False)
    return model, report


def test_report_names_drive_the_split(loaded):
    model, report = loaded
    assert report.loaded_names == {"backbone.conv.weight", "backbone.conv.bias", "backbone.bn.weight",
                                   "backbone.bn.bias"}
    assert report.loaded_buffers == {"backbone.bn.running_mean", "backbone.bn.running_var",
                                     "backbone.bn.num_batches_tracked"}
    pre, new = split_parameters(model, report.loaded_names)
    assert [n for n, _ in pre] == ["backbone.conv.weight", "backbone.conv.bias", "backbone.bn.weight",
                                   "backbone.bn.bias"]
    assert [n for n, _ in new] == ["head.weight", "head.bias"]
    # names recorded on a DDP-wrapped model still match the bare model
    pre_ddp, _ = split_parameters(model, {f"module.{n}" for n in report.loaded_names})
    assert len(pre_ddp) == 4


def test_param_groups_use_the_lr_factors(loaded):
    model, report = loaded
    groups = param_groups(model, report.loaded_names, lr=1e-3, options=FinetuneOptions(), weight_decay=0.01)
    assert [(g["name"], g["lr"], g["lr_factor"], len(g["params"])) for g in groups] == [
        ("pretrained", pytest.approx(1e-4), 0.1, 4), ("new", pytest.approx(1e-3), 1.0, 2)]
    opt = torch.optim.AdamW(groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.01]
    covered = [id(p) for g in groups for p in g["params"]]
    assert sorted(covered) == sorted(id(p) for p in model.parameters())
    # nothing pretrained: a single "new" group
    only_new = param_groups(model, set(), lr=1e-3)
    assert [g["name"] for g in only_new] == ["new"]


def test_warmup_schedule_by_hand():
    opts = FinetuneOptions(freeze_epochs=2, warmup_epochs=3)
    assert [pretrained_lr_scale(e, opts) for e in range(7)] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert pretrained_lr_scale(2.5, opts) == 0.25
    assert [pretrained_lr_scale(e, FinetuneOptions()) for e in range(2)] == [1.0, 1.0]


def test_freeze_then_unfreeze_trains_only_the_head_first(loaded):
    model, report = loaded
    opts = FinetuneOptions(freeze_epochs=1, warmup_epochs=0)
    opt = torch.optim.SGD(param_groups(model, report.loaded_names, lr=0.1, options=opts))
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 2, 8, 8)

    def one_epoch(epoch):
        model.train()
        frozen = apply_backbone_freeze(model, report.loaded_names, epoch, opts)
        set_epoch_lrs(opt, epoch, opts, base_lr=0.1)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        stats = model.backbone.bn.running_mean.clone()
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        return frozen, changed, torch.equal(stats, model.backbone.bn.running_mean)

    frozen, changed, stats_kept = one_epoch(0)
    assert frozen and changed == {"head.weight", "head.bias"} and stats_kept
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith("backbone"))
    assert [g["lr"] for g in opt.param_groups] == [0.0, pytest.approx(0.1)]
    frozen, changed, stats_kept = one_epoch(1)
    # (the conv bias before BatchNorm gets no gradient at all, so it is not checked)
    assert not frozen and {"backbone.conv.weight", "backbone.bn.weight", "head.weight"} <= changed
    assert not stats_kept
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.01), pytest.approx(0.1)]


def test_lr_mode_freezes_through_the_learning_rate_only(loaded):
    model, report = loaded
    opts = FinetuneOptions(freeze_epochs=1, freeze_mode="lr", freeze_norm_stats=False)
    opt = torch.optim.SGD(param_groups(model, report.loaded_names, lr=0.1, options=opts))
    assert apply_backbone_freeze(model, report.loaded_names, 0, opts)
    assert all(p.requires_grad for p in model.parameters())  # DDP-safe: gradients stay on
    set_epoch_lrs(opt, 0, opts, base_lr=0.1)
    before = model.backbone.conv.weight.detach().clone()
    opt.zero_grad()
    model(torch.rand(1, 3, 8, 8)).sum().backward()
    opt.step()
    assert torch.equal(model.backbone.conv.weight, before)


def test_lambda_lr_composes_with_the_trainer_schedule(loaded):
    model, report = loaded
    opts = FinetuneOptions(backbone_lr_factor=0.1, freeze_epochs=1, warmup_epochs=1)
    opt = torch.optim.SGD(param_groups(model, report.loaded_names, lr=1.0, options=opts))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambdas(opt, opts, schedule=lambda e: 0.5 ** e,
                                                              steps_per_epoch=2))
    seen = []
    for _ in range(6):  # 3 epochs of 2 steps
        seen.append([round(g["lr"], 6) for g in opt.param_groups])
        opt.step()
        sched.step()
    # pretrained: 0.1 * 0.5**e * scale(e); scale = 0 (epoch 0), 0.5 (epoch 1), 1 (epoch 2)
    expected = []
    for step in range(6):
        e = step / 2
        scale = 0.0 if e < 1 else (0.5 if e < 2 else 1.0)
        expected.append([round(0.1 * 0.5 ** e * scale, 6), round(0.5 ** e, 6)])
    assert seen == expected


def test_options_are_validated():
    with pytest.raises(ConfigError, match="backbone_lr_factor"):
        FinetuneOptions(backbone_lr_factor=-1)
    with pytest.raises(ConfigError, match="freeze_mode"):
        FinetuneOptions(freeze_mode="sometimes")
    with pytest.raises(ConfigError, match="unknown field"):
        FinetuneOptions.from_mapping({"backbone_lr": 0.1})
    opts = FinetuneOptions.from_mapping({"backbone_lr_factor": 0.2, "freeze_epochs": 3})
    assert opts.as_params()["finetune_backbone_lr_factor"] == 0.2
