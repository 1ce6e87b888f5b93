"""Model registry: names, sizes, argument checking, metadata, registering new models."""

from __future__ import annotations

import pytest
import torch

from platform.errors import ConfigError
from platform.models import MODELS, available, create, register_model


@pytest.fixture
def scratch_names():
    names: list[str] = []
    yield names
    for name in names:  # keep the global registry clean for the other tests
        MODELS._items.pop(name, None)
        MODELS._meta.pop(name, None)


def test_unknown_name_lists_registered_models():
    with pytest.raises(ConfigError) as info:
        create("nafnett")
    message = str(info.value)
    assert "'nafnett'" in message and "Did you mean 'nafnet'" in message
    for name in ("convnext_unet", "seg_unet", "mambair", "swinir"):
        assert name in message


def test_unknown_size_names_the_allowed_sizes():
    with pytest.raises(ConfigError, match=r"unknown size 'medium'. Allowed sizes: nano, tiny, small, base"):
        create("convnext_unet", size="medium")
    with pytest.raises(ConfigError, match="has no sizes"):
        create("resnet50_unet", size="base")


def test_unknown_argument_lists_accepted_arguments():
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) widht.*Accepted arguments: size, in_channels"):
        create("nafnet", widht=32)


def test_default_size_and_model_attributes():
    with torch.device("meta"):
        model = create("convnext_unet")
    assert model.model_name == "convnext_unet" and model.model_size == "tiny"
    assert model.size_multiple == 32


def test_meta_describes_every_model():
    assert available() == sorted(available())
    # Other test modules register tiny models at import; the zoo's own ones carry full metadata.
    zoo = [n for n in available() if MODELS.get(n).__module__.startswith("platform.models.")]
    assert {"nafnet", "swinir", "mambair", "convnext_unet", "unet", "attention_unet", "seg_unet"} <= set(zoo)
    for name in zoo:
        meta = MODELS.meta(name)
        assert meta["kind"] in ("img2img", "segmentation")
        assert isinstance(meta["sizes"], tuple)
        assert (meta["default_size"] in meta["sizes"]) if meta["sizes"] else meta["default_size"] is None
        assert set(meta["nominal_params"]) == set(meta["sizes"] or (None,))
    assert MODELS.meta("nafnet")["sizes"] == ("small", "base", "large")
    assert MODELS.meta("seg_unet")["kind"] == "segmentation"


def test_no_pretrained_weights_is_a_config_error():
    for name in ("unet", "attention_unet", "swinir", "mambair"):
        with pytest.raises(ConfigError, match="no pretrained weights"):
            create(name, pretrained=True)


def test_register_a_new_model(scratch_names):
    scratch_names.append("test_identity")

    @register_model("test_identity", kind="img2img", sizes=("a", "b"), nominal_params={"a": 0, "b": 0})
    def factory(size="a", in_channels=3, out_channels=3, pretrained=False):
        model = torch.nn.Identity()
        model.size_multiple = 1 if size == "a" else 2
        return model

    assert "test_identity" in available()
    assert MODELS.meta("test_identity")["default_size"] == "a"
    assert create("test_identity", size="b").size_multiple == 2
    assert factory().model_size == "a"  # the decorated function is the checked wrapper


def test_models_must_declare_size_multiple(scratch_names):
    scratch_names.append("test_bad")

    @register_model("test_bad", kind="img2img")
    def factory(size=None):
        return torch.nn.Identity()

    with pytest.raises(TypeError, match="size_multiple"):
        create("test_bad")


def test_bad_registrations_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        register_model("x", kind="detection")
    with pytest.raises(ValueError, match="default_size"):
        register_model("x", kind="img2img", sizes=("a",), default_size="b")


def test_bad_channels_are_config_errors():
    with pytest.raises(ConfigError, match="in_channels must be a positive integer"):
        create("unet", in_channels=0)
    with pytest.raises(ConfigError, match="classes must be a positive integer"):
        create("seg_unet", classes=0)
