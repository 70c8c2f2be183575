"""fastvit's Triton kernels: flash attention (also over packed sequences), fused residual-add +
LayerNorm, fused patch embedding.

This package stands alone (it never imports ``fastvit``). Every public function is differentiable
and runs on CUDA tensors, or on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1 set
before triton is imported). Importing it touches no GPU. Each kernel is also a PyTorch custom op,
forward and backward (``torch.ops.fastvit_kernels.*``, with fake implementations and autograd
formulas), which torch.compile and torch.export trace without a graph break.

``python -m kernels.audit`` compiles every launch the launchers make for fastvit's model shapes
(ViTs, Swin's window attention with its bias, DeiT's two prefix rows, packed mixed-resolution
sequences) ahead of time for sm_90 and sm_80 (no GPU needed) and reports shared memory, registers,
spills and the MMA instructions of each configuration.
"""
from kernels._common import interpreter_enabled, runnable_on
from kernels.flash_attention import flash_attention, attention_ref, flash_attention_varlen, attention_varlen_ref
from kernels.layer_norm import layer_norm, add_layer_norm, layer_norm_ref, add_layer_norm_ref
from kernels.patch_embed import patch_embed, patch_embed_ref

__all__ = [
    "flash_attention", "attention_ref", "flash_attention_varlen", "attention_varlen_ref",
    "layer_norm", "add_layer_norm", "layer_norm_ref", "add_layer_norm_ref",
    "patch_embed", "patch_embed_ref",
    "interpreter_enabled", "runnable_on",
]
