"""Few-shot image-to-image and segmentation search platform.

This package is named ``platform`` (the layout is fixed by the user), which shadows
Python's standard-library module of the same name. Torch, Ray, MLflow and many other
libraries call ``platform.system()``, ``platform.python_version()`` and friends, so the
first thing this package does is load the real stdlib ``platform.py`` from disk and copy
every one of its names here. Code that does ``import platform`` therefore keeps getting
the standard behaviour, and ``platform.<submodule>`` gives ours.
"""

import importlib.util as _ilu
import os as _os
import sysconfig as _sysconfig


def _load_stdlib_platform():
    path = _os.path.join(_sysconfig.get_paths()["stdlib"], "platform.py")
    spec = _ilu.spec_from_file_location("_stdlib_platform", path)
    module = _ilu.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_stdlib = _load_stdlib_platform()
# Copy every name the stdlib module defines (public and the private helpers some
# libraries reach for, e.g. ``platform._syscmd_ver``), except module dunders.
for _name, _value in vars(_stdlib).items():
    if _name.startswith("__") and _name.endswith("__"):
        continue
    globals()[_name] = _value
STDLIB_PLATFORM = _stdlib

__version__ = "0.1.0"
