"""Output kind objects: stored kind names map back to them, and decode / stack / export head agree
with hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from platform.errors import ConfigError
from platform.tasks import output_kind
from platform.tasks.outputs import (
    HierarchicalOutput,
    ImageOutput,
    MattingOutput,
    SegmentationOutput,
    output_kind_named,
)


@pytest.mark.parametrize("config, cls", [
    ({"task": {"name": "img2img"}}, ImageOutput),
    ({"task": {"name": "segmentation"}}, SegmentationOutput),
    ({"task": {"name": "hierarchical_segmentation"}}, HierarchicalOutput),
    ({"task": {"name": "matting"}}, MattingOutput),
    ({"task": {"name": "hierarchical"}}, HierarchicalOutput),  # a stored kind name as the task name
    ({}, ImageOutput),  # the oldest checkpoints name no task
])
def test_stored_names_map_to_kind_objects(config, cls):
    assert type(output_kind(config)) is cls


def test_an_unknown_kind_name_says_what_to_do():
    with pytest.raises(ConfigError, match="unknown .*img2img.*task module must be imported"):
        output_kind_named("colourise_v9")


def _y(seed=0, c=3, h=5, w=7) -> torch.Tensor:
    return torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed)) * 1.5


def test_image_decode_and_export_head_match_by_hand():
    kind = ImageOutput({"task": {"name": "img2img"}})
    y = _y()
    want = ((np.clip(y[0].numpy(), -1, 1) + 1) / 2).transpose(1, 2, 0)
    out = kind.decode(y, None, colour=3)["image"]
    np.testing.assert_allclose(out, want, atol=1e-6)
    np.testing.assert_allclose(kind.export_head(y)[0].numpy().transpose(1, 2, 0), want, atol=1e-6)
    grey = kind.decode(y, None, colour=1)["image"]
    np.testing.assert_allclose(grey[:, :, 0], want @ np.array([0.2126, 0.7152, 0.0722]), atol=1e-5)
    alpha = np.full((5, 7, 1), 0.3, np.float32)
    assert kind.decode(y, alpha, colour=3)["image"].shape == (5, 7, 4)
    stacked = kind.stack([{"image": out}, {"image": out}])
    assert stacked.shape == (2, 5, 7, 3) and stacked.dtype == np.float32


def test_matting_maps_the_output_range_to_alpha():
    kind = MattingOutput(output_range=(0.0, 1.0))
    y = _y(1, c=1)
    want = np.clip(y[0, 0].numpy(), 0, 1)
    np.testing.assert_allclose(kind.decode(y, None, 3)["alpha"], want, atol=1e-6)
    np.testing.assert_allclose(kind.export_head(y)[0, 0].numpy(), want, atol=1e-6)
    default = MattingOutput()  # [-1, 1] network output
    np.testing.assert_allclose(default.decode(y, None, 3)["alpha"], np.clip((y[0, 0].numpy() + 1) / 2, 0, 1),
                               atol=1e-6)


def test_segmentation_masks_and_levels():
    seg = SegmentationOutput()
    y = _y(2, c=4)
    out = seg.decode(y, None, 3)
    assert np.array_equal(out["mask"], y[0].argmax(0).numpy())
    np.testing.assert_allclose(out["probs"], torch.softmax(y[0], 0).numpy().transpose(1, 2, 0), atol=1e-6)
    binary = seg.decode(_y(3, c=1), None, 3)
    assert np.array_equal(binary["mask"], (_y(3, c=1)[0, 0] > 0).numpy().astype(np.int64))
    assert seg.stack([out, out]).dtype == np.int64 and not seg.clamp
    hier = HierarchicalOutput()
    levels = hier.decode({"coarse": _y(4, c=2), "fine": _y(5, c=6)}, None, 3)
    assert sorted(levels) == ["mask/coarse", "mask/fine", "probs/coarse", "probs/fine"]
    stacked = hier.stack([levels])
    assert sorted(stacked) == ["coarse", "fine"] and stacked["fine"].shape == (1, 5, 7)
