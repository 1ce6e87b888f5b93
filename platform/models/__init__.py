"""Model registry and architecture zoo.

::

    from platform.models import MODELS, register_model, create, available

    model = create("nafnet", size="base")              # img2img, [-1, 1] in -> same range out
    seg = create("seg_unet", size="swin_tiny", classes=16)  # logits (B, 16, H, W)
    available()                                         # sorted registered names
    MODELS.meta("nafnet")                               # {'kind': 'img2img', 'sizes': (...), ...}

Factory convention: ``factory(size=<default>, in_channels=3, out_channels=3 | classes=N,
pretrained=False, **arch_kwargs)``; every model has an int ``size_multiple`` (inputs whose H
and W are multiples of it need no internal padding; all models also accept other sizes and
pad/crop internally). ``python -m platform.models`` prints the parameter / MAC table.
"""

# Importing the architecture modules registers their factories (imported for that side effect only).
from platform.models import (
    convnext_unet as _convnext_unet,  # noqa: F401
    lut3d as _lut3d,  # noqa: F401
    mambair as _mambair,  # noqa: F401
    nafnet as _nafnet,  # noqa: F401
    swinir as _swinir,  # noqa: F401
    unet as _unet,  # noqa: F401
)
from platform.models._registry import MODELS, available, create, register_model

try:  # segmentation_models_pytorch is optional: without it the image-to-image models still work
    from platform.models import segmentation as _segmentation  # noqa: F401
except ModuleNotFoundError as _exc:
    if _exc.name != "segmentation_models_pytorch":
        raise
    import logging as _logging

    _logging.getLogger(__name__).info("segmentation models not registered: %s", _exc)
from platform.models.nafnet import load_official_checkpoint, to_tlc

__all__ = ["MODELS", "available", "create", "load_official_checkpoint", "register_model", "to_tlc"]
