"""Known-good configurations from the user's guide (``nafnet_convnext_guide.md``).

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
        "doc": "8-12 images (the guide's recommendation): NAFNet base, batch 6, lr 1e-3",
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
