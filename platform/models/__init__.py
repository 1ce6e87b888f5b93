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

from platform.models._registry import MODELS, available, create, register_model

# Importing the architecture modules registers their factories.
from platform.models import nafnet as _nafnet  # noqa: E402,F401
from platform.models import convnext_unet as _convnext_unet  # noqa: E402,F401
from platform.models import unet as _unet  # noqa: E402,F401
from platform.models import swinir as _swinir  # noqa: E402,F401
from platform.models import mambair as _mambair  # noqa: E402,F401
from platform.models import lut3d as _lut3d  # noqa: E402,F401
try:  # segmentation_models_pytorch is optional: without it the image-to-image models still work
    from platform.models import segmentation as _segmentation  # noqa: E402,F401
except ModuleNotFoundError as _exc:
    if _exc.name != "segmentation_models_pytorch":
        raise
    import logging as _logging

    _logging.getLogger(__name__).info("segmentation models not registered: %s", _exc)
from platform.models.nafnet import load_official_checkpoint, to_tlc  # noqa: E402

__all__ = ["MODELS", "available", "create", "register_model", "load_official_checkpoint", "to_tlc"]
