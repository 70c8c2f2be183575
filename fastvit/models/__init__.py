"""fastvit's models: the ViT family and its variants (DeiT, Swin, PiT), presets under timm's names,
checkpoint loading across resolutions, attention maps."""
from fastvit.models.vit import ViTConfig, VisionTransformer
from fastvit.models.deit import DeiT, DeiTConfig
from fastvit.models.swin import SwinConfig, SwinTransformer
from fastvit.models.pit import PiTConfig, PoolingVisionTransformer
from fastvit.models.presets import FAMILIES, PRESETS, create_model, get_preset, list_models, preset_config
from fastvit.models.checkpoint import load_checkpoint
from fastvit.models.pos_embed import resample_pos_embed, resample_pos_embed_map
from fastvit.models.maps import attention_maps

__all__ = ["ViTConfig", "VisionTransformer", "DeiTConfig", "DeiT", "SwinConfig", "SwinTransformer", "PiTConfig",
           "PoolingVisionTransformer", "FAMILIES", "PRESETS", "create_model", "get_preset", "list_models",
           "preset_config", "load_checkpoint", "resample_pos_embed", "resample_pos_embed_map", "attention_maps"]
