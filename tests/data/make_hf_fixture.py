"""The HF transformers half of make_variant_fixtures.py: writes tests/data/hf_vit_fixture.pt.

Run it through that script (``python tests/data/make_variant_fixtures.py hf``, see its docstring for
the environment and what the file holds); it needs transformers, timm and safetensors.
"""
import copy
import pathlib
import sys
import tempfile

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import canonical_weights as cw  # noqa: E402

HF_OUT = HERE / "hf_vit_fixture.pt"


def make_hf(log):
    import timm
    import transformers
    from safetensors.torch import load_file
    from timm.models.vision_transformer import VisionTransformer
    from transformers import ViTConfig, ViTForImageClassification, ViTModel

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                       intermediate_size=192, num_labels=10)
    model = ViTForImageClassification(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "layernorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
            else:
                p.copy_(0.3 * noise)
    state_v5 = {k: v.clone() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        saved = load_file(str(pathlib.Path(tmp) / "model.safetensors"))
        reloaded = ViTForImageClassification.from_pretrained(tmp).eval()
    x32 = cw.image_batch(32, 32, batch=3)
    x48 = cw.image_batch(48, 48, batch=3)
    inputs = {r: {"seed": r, "batch": 3, "shape": list(x.shape), "sha256": cw.sha256([x])}
              for r, x in ((32, x32), (48, x48))}
    with torch.no_grad():
        logits32 = model(x32).logits
        assert torch.equal(reloaded(x32).logits, logits32)
        logits48 = model(x48, interpolate_pos_encoding=True).logits
        model.set_attn_implementation("eager")
        eager_diff = (model(x32).logits - logits32).abs().max().item()
        model.set_attn_implementation("sdpa")

    # the same weights under timm's VisionTransformer names: q, k, v concatenated in that order
    timm_state = {
        "cls_token": saved["vit.embeddings.cls_token"],
        "pos_embed": saved["vit.embeddings.position_embeddings"],
        "patch_embed.proj.weight": saved["vit.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": saved["vit.embeddings.patch_embeddings.projection.bias"],
    }
    for i in range(config.num_hidden_layers):
        p = f"vit.encoder.layer.{i}."
        t = f"blocks.{i}."
        timm_state[t + "norm1.weight"] = saved[p + "layernorm_before.weight"]
        timm_state[t + "norm1.bias"] = saved[p + "layernorm_before.bias"]
        timm_state[t + "attn.qkv.weight"] = torch.cat(
            [saved[p + f"attention.attention.{n}.weight"] for n in ("query", "key", "value")], dim=0)
        timm_state[t + "attn.qkv.bias"] = torch.cat(
            [saved[p + f"attention.attention.{n}.bias"] for n in ("query", "key", "value")], dim=0)
        timm_state[t + "attn.proj.weight"] = saved[p + "attention.output.dense.weight"]
        timm_state[t + "attn.proj.bias"] = saved[p + "attention.output.dense.bias"]
        timm_state[t + "norm2.weight"] = saved[p + "layernorm_after.weight"]
        timm_state[t + "norm2.bias"] = saved[p + "layernorm_after.bias"]
        timm_state[t + "mlp.fc1.weight"] = saved[p + "intermediate.dense.weight"]
        timm_state[t + "mlp.fc1.bias"] = saved[p + "intermediate.dense.bias"]
        timm_state[t + "mlp.fc2.weight"] = saved[p + "output.dense.weight"]
        timm_state[t + "mlp.fc2.bias"] = saved[p + "output.dense.bias"]
    timm_state["norm.weight"] = saved["vit.layernorm.weight"]
    timm_state["norm.bias"] = saved["vit.layernorm.bias"]
    timm_state["head.weight"] = saved["classifier.weight"]
    timm_state["head.bias"] = saved["classifier.bias"]
    timm_kwargs = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0, num_classes=10)
    from functools import partial

    vit = VisionTransformer(**timm_kwargs, norm_layer=partial(torch.nn.LayerNorm, eps=1e-12)).eval()
    vit.load_state_dict(timm_state, strict=True)
    vit6 = VisionTransformer(**timm_kwargs).eval()
    vit6.load_state_dict(timm_state, strict=True)
    with torch.no_grad():
        timm_diff = (vit(x32) - logits32).abs().max().item()
        eps_1e6_diff = (vit6(x32) - logits32).abs().max().item()
        dyn = VisionTransformer(**timm_kwargs, norm_layer=partial(torch.nn.LayerNorm, eps=1e-12),
                                dynamic_img_size=True).eval()
        dyn.load_state_dict(timm_state)
        timm_dynamic48_diff = (dyn(x48) - logits48).abs().max().item()
    assert timm_diff < 1e-5, timm_diff

    # the module's (transformers 5) names for the saved tensors, matched by value
    module_to_saved = {}
    for k, v in state_v5.items():
        match = [s for s, t in saved.items() if t.shape == v.shape and torch.equal(t, v)]
        assert len(match) == 1, (k, match)
        module_to_saved[k] = match[0]
    module_state = {k: saved[s] for k, s in module_to_saved.items()}

    bare = ViTModel(copy.deepcopy(config))
    bare_nopool = ViTModel(copy.deepcopy(config), add_pooling_layer=False)
    with tempfile.TemporaryDirectory() as tmp:
        bare.save_pretrained(tmp)
        bare_saved = list(load_file(str(pathlib.Path(tmp) / "model.safetensors")))
    with tempfile.TemporaryDirectory() as tmp:
        bare_nopool.save_pretrained(tmp)
        bare_nopool_saved = list(load_file(str(pathlib.Path(tmp) / "model.safetensors")))

    fixture = {
        "transformers_version": transformers.__version__, "timm_version": timm.__version__,
        "torch_version": str(torch.__version__),
        "config": {k: getattr(config, k) for k in (
            "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "hidden_act", "layer_norm_eps", "qkv_bias", "num_labels", "hidden_dropout_prob",
            "attention_probs_dropout_prob")},
        "config_json": config.to_json_string(),
        "state_dict": dict(saved),  # names as save_pretrained writes them (and as hub checkpoints have them)
        # names of ViTForImageClassification.state_dict() in transformers 5 (the same tensors, stored once)
        "state_dict_module": module_state,
        "module_to_saved_keys": module_to_saved,
        "inputs": inputs,  # canonical_weights.image_batch(r, seed, batch)
        "logits32": logits32, "logits48_interpolate_pos_encoding": logits48,
        "timm_state_dict": timm_state, "timm_kwargs": {**timm_kwargs, "norm_eps": 1e-12},
        "timm_max_abs_diff32": timm_diff, "timm_eps1e6_max_abs_diff32": eps_1e6_diff,
        "timm_dynamic48_max_abs_diff": timm_dynamic48_diff, "eager_vs_sdpa_max_abs_diff32": eager_diff,
        "vit_model_keys_saved": bare_saved, "vit_model_keys_saved_no_pooler": bare_nopool_saved,
        "vit_model_keys_module": list(bare.state_dict()),
        "vit_model_keys_module_no_pooler": list(bare_nopool.state_dict()),
        "vit_model_pooler_shapes": {k: list(v.shape) for k, v in bare.state_dict().items() if "pooler" in k},
    }
    torch.save(fixture, HF_OUT)
    log(f"wrote {HF_OUT} ({HF_OUT.stat().st_size} bytes); timm-vs-HF {timm_diff:.2e}, eps 1e-6 instead: "
        f"{eps_1e6_diff:.2e}, timm dynamic vs HF interpolate at 48 px: {timm_dynamic48_diff:.2e}")
