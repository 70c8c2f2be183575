"""torchvision interop: torchvision ViT and Swin checkpoints into fastvit (``from_torchvision``, used by
``fastvit.load_checkpoint``), and torchvision's models with fastvit's weights (``to_torchvision``, the
peers). The key tables and the family facts are in :mod:`fastvit.models.tv.keys`; torchvision is
imported only inside :mod:`fastvit.models.tv.build`'s functions."""
from fastvit.models.tv.keys import (CLASSES, detect_torchvision, from_torchvision, interpolate_pos_embedding,
                                    timm_to_tv, tv_to_timm)
from fastvit.models.tv.build import builder_name, to_torchvision, torchvision_available

__all__ = ["CLASSES", "builder_name", "detect_torchvision", "from_torchvision", "interpolate_pos_embedding",
           "timm_to_tv", "to_torchvision", "torchvision_available", "tv_to_timm"]
