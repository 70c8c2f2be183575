"""fastvit's models: the ViT family (and its variants), presets under timm's names, checkpoint
loading across resolutions, attention maps."""
from fastvit.models.vit import ViTConfig, VisionTransformer
from fastvit.models.presets import FAMILIES, PRESETS, create_model, get_preset, list_models, preset_config
from fastvit.models.checkpoint import load_checkpoint
from fastvit.models.pos_embed import resample_pos_embed
from fastvit.models.maps import attention_maps

__all__ = ["ViTConfig", "VisionTransformer", "FAMILIES", "PRESETS", "create_model", "get_preset", "list_models",
           "preset_config", "load_checkpoint", "resample_pos_embed", "attention_maps"]
