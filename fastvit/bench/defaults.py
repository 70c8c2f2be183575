"""The sweep's defaults per device type: the one home of every per-device setting."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fastvit.bench.mixed import MixedImages


@dataclass(frozen=True)
class DeviceDefaults:
    model: str            # preset whose shapes the op-level rows use
    models: tuple         # presets of the whole-model rows (any family)
    resolutions: tuple    # square image sizes in px
    model_resolutions: tuple  # the sizes of the whole-model rows (a subset of the above)
    model_backends: tuple | None  # attention backends of the whole-model rows (None: every registered one)
    compile_at: tuple     # resolutions of the +compile rows of ``model``'s whole-model rows, added by default
    dtype: str
    batch: int
    time_budget: float    # seconds of timed rounds one comparison group may take after min_rounds
    min_rounds: int
    max_rounds: int
    warmup_rounds: int
    min_block: float      # seconds a member's measurement in one round lasts at least: shorter calls repeat
    mixed_models: tuple = ()  # ViT / DeiT presets of the mixed-resolution groups (padded, bucketed, packed)
    mixed: MixedImages | None = None  # their images
    model_time_budget: float | None = None  # time_budget of the whole-model and mixed groups (None: the same)
    peer_models: tuple | None = None  # presets given timm / HF / torchvision builds with --peers (None: all)
    train_resolutions: tuple | None = None  # whole-model sizes of the training step (None: model_resolutions)


DEFAULTS = {
    # A 2-core CPU: every family's smallest preset at sizes every family accepts (multiples of 32 and
    # of 16), the backends compared at op level up to 896 px, whole models on the default backend up
    # to 672 px forward and 448 px for a training step, the peers' builds of the ViT only. Each member
    # runs beside its baseline, so a round of the whole models costs about twice their calls: 1.3 s at
    # 224 px forward, 12 s at 672 px, 15 s for the training step at 448 px (38 s at 672 px). On a
    # machine whose speed drifts over seconds these groups need 15-25 rounds for an A/A median within
    # 2% of 1, hence their longer budget. The mixed-resolution groups: ViT-Ti/16 on 4 images of
    # 224-384 px (8 images of 224-512 px made a paired round of the training step take 23 s, too long
    # for 20 rounds; 16 images of 224-768 px hold many times the tokens).
    "cpu": DeviceDefaults(model="vit_tiny_patch16_224",
                          models=("vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
                                  "swin_tiny_patch4_window7_224", "pit_ti_224"),
                          resolutions=(224, 448, 672, 896), model_resolutions=(224, 448, 672),
                          model_backends=("sdpa",), compile_at=(224, 448), dtype="fp32", batch=1,
                          time_budget=30.0, min_rounds=5, max_rounds=400, warmup_rounds=1, min_block=0.02,
                          mixed_models=("vit_tiny_patch16_224",), mixed=MixedImages(4, 224, 384),
                          model_time_budget=90.0, peer_models=("vit_tiny_patch16_224",),
                          train_resolutions=(224, 448)),
    "cuda": DeviceDefaults(model="vit_base_patch16_224", models=("vit_base_patch16_224",),
                           resolutions=(224, 384, 512, 768, 1024), model_resolutions=(224, 384, 512, 768, 1024),
                           model_backends=None, compile_at=(224, 384), dtype="bf16", batch=8, time_budget=10.0,
                           min_rounds=10, max_rounds=400, warmup_rounds=3, min_block=0.0,
                           mixed_models=("vit_base_patch16_224", "deit_base_distilled_patch16_224"),
                           mixed=MixedImages(16, 224, 768)),
}


def defaults_for(device) -> DeviceDefaults:
    return DEFAULTS[torch.device(device).type]
