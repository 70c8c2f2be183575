"""The sweep's peers: the same architectures as timm, HF transformers and torchvision build them, with
the same weights, and CNN baselines from torchvision, as whole-model rows timed by the same harness.

Each peer is built from a fastvit model: timm's model of the same preset name loads fastvit's state
dict unchanged (the keys are timm's); HF's is converted by :mod:`fastvit.models.hf`, torchvision's
ViT and Swin (``VisionTransformer`` and ``SwinTransformer`` built from the preset's config: vit_b_16,
swin_t, ... for the paper sizes) by :mod:`fastvit.models.tv`. A library that is not installed, does
not import, or has no such architecture, makes its rows ``skipped`` with the reason
(``pip install 'fastvit[peers]'``). Every peer runs its library's own attention, named in the row's
``attention_impl`` column (torchvision's ViT: ``nn.MultiheadAttention``; its Swin:
``shifted_window_attention``).

The libraries are imported through :mod:`fastvit.optional`, which copes with a torchvision built
for another torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from fastvit.models import get_preset
from fastvit.optional import import_peer

LIBRARIES = ("timm", "transformers", "torchvision")
CNNS = {"resnet50": "resnet50", "convnext_tiny": "convnext_tiny"}  # model name -> torchvision builder
INSTALL = "pip install 'fastvit[peers]' (scripts/setup_venv.sh pins torchvision to the installed torch)"
def available(library: str) -> tuple[bool, str]:
    """Whether ``library`` ("timm", "transformers", "torchvision") imports here, and why not."""
    try:
        import_peer(library)
    except Exception as err:  # any import failure makes the peer unavailable, with its reason
        return False, f"{library} is not importable ({type(err).__name__}: {str(err)[:160]}); {INSTALL}"
    return True, ""


@dataclass
class Peer:
    """A peer model ready to run: images (B, C, H, W) -> logits, and the attention it runs."""

    module: nn.Module
    attention: str  # the library's attention implementation, e.g. "sdpa" or "eager"; "none" for a CNN


class _Logits(nn.Module):
    """An HF model behind fastvit's calling convention: images -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).logits


def _timm(name: str, model: nn.Module) -> Peer:
    timm = import_peer("timm")

    cfg = model.cfg
    peer = timm.create_model(name, pretrained=False, img_size=cfg.img_size, num_classes=cfg.num_classes)
    peer.load_state_dict(model.state_dict())  # strict: fastvit's keys are timm's
    fused = {getattr(m, "fused_attn") for m in peer.modules() if hasattr(m, "fused_attn")}
    return Peer(peer, "sdpa" if fused == {True} else "eager" if fused == {False} else "mixed")


def _transformers(name: str, model: nn.Module) -> Peer:
    from fastvit.models.hf import to_hf

    family = get_preset(name).family.name
    if family in ("vit", "deit"):  # HF's DeiT classes are the distilled architecture; plain DeiT is a ViT
        family = "deit" if getattr(model.cfg, "distilled", False) else "vit"
    peer, impl = to_hf(family, model.cfg, model.state_dict(), attn_implementation="sdpa")
    return Peer(_Logits(peer), impl)


def _torchvision(name: str, model: nn.Module) -> Peer:
    from fastvit.models.tv import to_torchvision

    peer, attention = to_torchvision(get_preset(name).family.name, model.cfg, model.state_dict())
    return Peer(peer, attention)


BUILDERS: dict[str, Callable[[str, nn.Module], Peer]] = {"timm": _timm, "transformers": _transformers,
                                                         "torchvision": _torchvision}
# the families each library builds (HF transformers has no PiT; torchvision has the ViT and Swin V1)
FAMILIES = {"timm": ("vit", "deit", "swin", "pit"), "transformers": ("vit", "deit", "swin"),
            "torchvision": ("vit", "swin")}


def unavailable(library: str, family: str) -> str | None:
    """Why ``library`` cannot serve as a peer for a model of ``family`` here (or None)."""
    ok, reason = available(library)
    if not ok:
        return reason
    if family not in FAMILIES[library]:
        return f"{library} has no {family} architecture"
    return None


def build(library: str, name: str, model: nn.Module) -> Peer:
    """``library``'s build of preset ``name``, with the weights of the fastvit model ``model``."""
    return BUILDERS[library](name, model)


def build_cnn(name: str, num_classes: int = 1000) -> Peer:
    """A torchvision CNN baseline, freshly initialised."""
    tv = import_peer("torchvision")
    return Peer(getattr(tv.models, CNNS[name])(num_classes=num_classes), "none")
