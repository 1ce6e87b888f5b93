"""The Ray trainable a search runs, looked up by name, and how a trial is run.

The library does not import its entry points (the functions Ray runs, in ``trainables/``): a
trainable registers itself here (``@register_trainable("fewshot")`` on
:func:`trainables.fewshot.run_trial`) and the search driver asks for it by name. A name not yet
registered is loaded from the module :data:`PROVIDERS` names for it, by its dotted name (a
plug-in, like a package entry point), which registers it on import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from platform.registry import Registry

TRAINABLES = Registry("trainable")

DEFAULT_TRAINABLE = "fewshot"

# name -> module that registers it when imported.
PROVIDERS = {"fewshot": "trainables.fewshot"}


def register_trainable(name: str, **meta):
    """Decorator: register a Ray Tune function trainable under ``name``."""
    return TRAINABLES.register(name, **meta)


def get_trainable(name: str = DEFAULT_TRAINABLE) -> Callable[[dict], None]:
    """The trainable registered as ``name`` (its provider module imported first if need be)."""
    if name not in TRAINABLES and name in PROVIDERS:
        importlib.import_module(PROVIDERS[name])
    return TRAINABLES.get(name, where="trainable")


def uses_torch_trainer(resources: dict) -> bool:
    """Whether a trial with these ``resources`` runs as a Ray Train ``TorchTrainer`` (DDP, or
    ``mode: train``) rather than inside the Tune trial's own process."""
    mode = resources.get("mode", "auto")
    return mode == "train" or (mode == "auto" and int(resources.get("workers", 1)) > 1)
