"""Known-good starting configurations for NAFNet and ConvNeXt U-Net, by number of training images
(5-8, 8-12, 12-15 high-resolution pairs).

Used as ``search.points_to_evaluate: [{preset: nafnet_base_8_12}, ...]`` so that a search
tries the recommended settings first and can never end up worse than them. A preset sets
more keys than any one space searches; only the keys the space searches are taken, and a
value the space cannot take (e.g. ``size: base`` in a space of ``small`` only) is sampled
instead.
"""

from __future__ import annotations

_COMMON = {"optimizer.weight_decay": 1.0e-4, "schedule.name": "cosine", "schedule.min_lr": 1.0e-6}

PRESETS: dict[str, dict] = {
    "nafnet_small_5_8": {
        "doc": "5-8 high-resolution images, fastest: NAFNet small, batch 4, lr 5e-4",
        "values": {"model.architecture": "nafnet", "model.size": "small", "task.batch_size": 4,
                   "optimizer.lr": 5.0e-4, **_COMMON},
    },
    "nafnet_base_8_12": {
        "doc": "8-12 images (the recommended default): NAFNet base, batch 6, lr 1e-3",
        "values": {"model.architecture": "nafnet", "model.size": "base", "task.batch_size": 6,
                   "optimizer.lr": 1.0e-3, **_COMMON},
    },
    "nafnet_base_12_15": {
        "doc": "12-15 images: NAFNet base, batch 8, lr 1e-3",
        "values": {"model.architecture": "nafnet", "model.size": "base", "task.batch_size": 8,
                   "optimizer.lr": 1.0e-3, **_COMMON},
    },
    "convnext_nano_5_8": {
        "doc": "5-8 images, best quality: ConvNeXt nano, drop path 0.10, batch 4, lr 5e-4",
        "values": {"model.architecture": "convnext_unet", "model.size": "nano",
                   "model.options.drop_path_rate": 0.10, "task.batch_size": 4, "optimizer.lr": 5.0e-4, **_COMMON},
    },
    "convnext_tiny_8_12": {
        "doc": "8-12 images, fine detail: ConvNeXt tiny, drop path 0.10, batch 6, lr 1e-3",
        "values": {"model.architecture": "convnext_unet", "model.size": "tiny",
                   "model.options.drop_path_rate": 0.10, "task.batch_size": 6, "optimizer.lr": 1.0e-3, **_COMMON},
    },
    "convnext_small_12_15": {
        "doc": "12-15 images: ConvNeXt small, drop path 0.15, batch 8, lr 1e-3",
        "values": {"model.architecture": "convnext_unet", "model.size": "small",
                   "model.options.drop_path_rate": 0.15, "task.batch_size": 8, "optimizer.lr": 1.0e-3, **_COMMON},
    },
}


# The CPU-sized NAFNet that `--quick` ran before it was time-boxed: a width-8/16, one-block-per-
# level network on 64 px crops for 6 epochs. Engine tests and benchmarks that exercise the search
# machinery (not the quality of its result) merge it into their overrides to stay fast and fixed.
CPU_NAFNET: dict = {
    "task": {"crop": 64, "crops_per_epoch": 32, "batch_size": 4, "val_max_side": 256},
    "model": {"architecture": "nafnet", "size": "small",
              "options": {"width": {"choice": [8, 16]}, "enc_blk_nums": [1, 1, 1], "middle_blk_num": 1,
                          "dec_blk_nums": [1, 1, 1], "drop_out_rate": 0.0}},
    "loss": {"l1": {"uniform": [0.5, 1.0]}, "lpips": {"uniform": [0.0, 0.5]}, "laplacian": {"uniform": [0.0, 1.0]},
             "ssim": {"uniform": [0.0, 0.5]}},
    "optimizer": {"lr": {"loguniform": [1.0e-4, 2.0e-3]}, "betas": [0.9, 0.9], "weight_decay": 1.0e-4},
    "schedule": {"warmup_epochs": 2},
    "train": {"epochs": 6, "image_every": 3},
    "resources": {"gpus_per_worker": 0, "cpus_per_worker": 1},
    "search": {"num_trials": 4, "max_concurrent": 2, "points_to_evaluate": [], "timebox": {"seconds": None},
               "scheduler": {"grace_period": 2, "reduction_factor": 2, "max_t": 6}, "searcher": {"n_startup_trials": 2}},
}


def cpu_nafnet(overrides: dict | None = None) -> dict:
    """``CPU_NAFNET`` with ``overrides`` merged on top (theirs win)."""
    from platform.config import deep_merge

    return deep_merge(CPU_NAFNET, overrides or {})
