"""The sweep's defaults per device type: the one home of every per-device setting."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceDefaults:
    model: str            # preset whose shapes the op-level rows use
    dtype: str
    batch: int
    time_budget: float    # seconds of timed rounds one configuration may take
    min_rounds: int
    max_rounds: int
    target_time: float    # seconds of timed rounds aimed at (fewer if the budget is smaller)
    warmup_rounds: int


DEFAULTS = {
    "cpu": DeviceDefaults(model="vit_tiny_patch16_224", dtype="fp32", batch=4, time_budget=30.0, min_rounds=3,
                          max_rounds=100, target_time=1.0, warmup_rounds=1),
    "cuda": DeviceDefaults(model="vit_base_patch16_224", dtype="bf16", batch=8, time_budget=10.0, min_rounds=10,
                           max_rounds=200, target_time=0.5, warmup_rounds=3),
}


def defaults_for(device) -> DeviceDefaults:
    return DEFAULTS[torch.device(device).type]
