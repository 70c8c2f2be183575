"""HF transformers interop: HF ViT checkpoints into fastvit (``hf_vit_to_timm``), and HF models with
fastvit's weights (``to_hf``). The key tables and the family facts are in :mod:`fastvit.models.hf.keys`;
transformers is imported only inside :mod:`fastvit.models.hf.build`'s functions."""
from fastvit.models.hf.keys import (FAMILIES, HF_LAYER_NORM_EPS, detect_hf, eps_note, hf_to_timm, hf_vit_to_timm,
                                    is_hf_vit, timm_to_hf)
from fastvit.models.hf.build import hf_available, swin_padding_notes, to_hf

__all__ = ["FAMILIES", "HF_LAYER_NORM_EPS", "detect_hf", "eps_note", "hf_available", "hf_to_timm", "hf_vit_to_timm",
           "is_hf_vit", "swin_padding_notes", "timm_to_hf", "to_hf"]
