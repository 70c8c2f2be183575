"""Importing the optional libraries fastvit compares itself with (the ``peers`` extra).

torchvision (which timm needs, and which transformers imports whenever it is installed) on PyPI is
a CUDA build; beside a CPU build of torch its compiled ops (NMS and friends, which none of these
models use) fail to load, and ``import torchvision`` fails while registering their fake kernels.
:func:`import_torchvision` then declares those two operator schemas, without any kernel, and imports
again: the models work, and calling ``torchvision.ops.nms`` still fails with no kernel.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

import torch

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
_declared: list = []


def import_torchvision():
    """``import torchvision``, also where its compiled ops cannot load (see the module docstring)."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::" not in str(err) or "does not exist" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        lib.define(schema)
    _declared.append(lib)  # the declarations live as long as the library object
    return importlib.import_module("torchvision")


def import_peer(name: str):
    """Import ``name`` (timm, transformers, torchvision) after making torchvision importable, if installed."""
    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision()
    return importlib.import_module(name)
