"""DeiT, Swin and PiT: configuration and resolution errors name the field or size, bad images are
refused with the ViT's typed errors, the models build on the meta device (as the benchmarks count
FLOPs there) and the families are registered with timm's preset names."""
import pytest
import torch

import fastvit
from fastvit import BackendError, DTypeError, ResolutionError, ShapeError, create_model
from fastvit.errors import ConfigError

DEIT, SWIN, PIT = "deit_tiny_distilled_patch16_224", "swin_tiny_patch4_window7_224", "pit_ti_224"
SWIN_SMALL = dict(img_size=64, embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4, num_classes=10)
PIT_SMALL = dict(img_size=32, patch_size=4, stride=2, base_dims=(8, 8, 8), depths=(1, 2, 1), num_heads=(1, 2, 4),
                 num_classes=10)


@pytest.mark.parametrize("preset,options,error,match", [
    (DEIT, {"distilled": "yes"}, ConfigError, r"DeiTConfig\.distilled must be True or False, got 'yes'"),
    (DEIT, {"embed_dim": 100, "num_heads": 3}, ConfigError,
     r"DeiTConfig\.embed_dim=100 is not divisible by num_heads=3"),
    (DEIT, {"depth": 0}, ConfigError, r"DeiTConfig\.depth must be positive, got 0"),
    (DEIT, {"img_size": 200}, ResolutionError, r"\(200, 200\).*patch size 16"),
    (SWIN, {"depths": (2, 0, 6, 2)}, ConfigError, r"SwinConfig\.depths must be positive, got \(2, 0, 6, 2\)"),
    (SWIN, {"depths": (2, 2.5, 6, 2)}, ConfigError, r"SwinConfig\.depths must be integers, got \(2, 2\.5, 6, 2\)"),
    (SWIN, {"num_heads": (3, 6, 12)}, ConfigError, r"SwinConfig\.num_heads=\(3, 6, 12\) must name one head count per "
                                                   r"stage of depths=\(2, 2, 6, 2\)"),
    (SWIN, {"num_heads": (3, 6, 10, 24)}, ConfigError, r"SwinConfig\.num_heads\[2\]=10 does not divide stage 2's "
                                                       r"width embed_dim \* 2\*\*2 = 384"),
    (SWIN, {"embed_dim": -96}, ConfigError, r"SwinConfig\.embed_dim must be positive, got -96"),
    (SWIN, {"window_size": 0}, ConfigError, r"SwinConfig\.window_size must be positive, got 0"),
    (SWIN, {"mlp_ratio": 0.0}, ConfigError, r"SwinConfig\.mlp_ratio must be positive, got 0\.0"),
    (SWIN, {"drop_path_rate": 1.0}, ConfigError, r"SwinConfig\.drop_path_rate must be in \[0, 1\), got 1\.0"),
    (SWIN, {"attn_drop_rate": -0.1}, ConfigError, r"SwinConfig\.attn_drop_rate must be in \[0, 1\), got -0\.1"),
    (SWIN, {"num_classes": -1}, ConfigError, r"SwinConfig\.num_classes must be a non-negative integer, got -1"),
    (SWIN, {"img_size": (224, 240)}, ResolutionError, r"img_size \(224, 240\) is not divisible by 32 \(patch size 4 "
                                                      r"x 2\^3"),
    (SWIN, {"img_size": 0}, ConfigError, r"SwinConfig\.img_size must be positive, got \(0, 0\)"),
    (SWIN, {"attn_backend": "flash"}, BackendError, r"unknown attention backend 'flash'"),
    (PIT, {"base_dims": (32, 0, 32)}, ConfigError, r"PiTConfig\.base_dims must be positive, got \(32, 0, 32\)"),
    (PIT, {"depths": (2, 6)}, ConfigError, r"PiTConfig\.depths=\(2, 6\), num_heads=\(2, 4, 8\) and base_dims=.*one "
                                           r"entry per stage"),
    (PIT, {"stride": 0}, ConfigError, r"PiTConfig\.stride must be positive, got 0"),
    (PIT, {"drop_rate": 2.0}, ConfigError, r"PiTConfig\.drop_rate must be in \[0, 1\), got 2\.0"),
    (PIT, {"img_size": 12}, ResolutionError,
     r"img_size \(12, 12\) is smaller than the stem's kernel \(patch size 16\)"),
    (PIT, {"norm_backend": "fused"}, BackendError, r"unknown norm backend 'fused'"),
], ids=lambda v: v if isinstance(v, str) and " " not in v else None)
def test_config_errors_name_field_and_value(preset, options, error, match):
    with pytest.raises(error, match=match):
        create_model(preset, **options)


@pytest.mark.parametrize("preset,small,size,match", [
    (DEIT, {"img_size": 32}, 48, r"48x48 differs from the model's 32x32.*dynamic_img_size"),
    (DEIT, {"img_size": 32}, 40, r"40x40 is not divisible by the patch size 16"),
    (SWIN, SWIN_SMALL, 96, r"96x96 differs from the model's 64x64.*img_size=\(96, 96\)"),
    (SWIN, SWIN_SMALL, 72, r"72x72 is not divisible by 16 \(patch size 4 x 2\^2"),
    (PIT, PIT_SMALL, 48, r"48x48 differs from the model's 32x32.*img_size=\(48, 48\).*resamples pos_embed"),
])
def test_resolution_errors(preset, small, size, match):
    model = create_model(preset, **small).eval()
    with pytest.raises(ResolutionError, match=match):
        model(torch.randn(1, 3, size, size))


@pytest.mark.parametrize("preset,small", [(DEIT, {"img_size": 32}), (SWIN, SWIN_SMALL), (PIT, PIT_SMALL)],
                         ids=["deit", "swin", "pit"])
def test_bad_images(preset, small):
    model = create_model(preset, **small).eval()
    side = model.cfg.img_size[0]
    with pytest.raises(DTypeError, match=r"dtype torch\.float64 but the model's parameters torch\.float32"):
        model(torch.randn(1, 3, side, side, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"1 channels, the model expects 3"):
        model(torch.randn(1, 1, side, side))
    with pytest.raises(DTypeError, match=r"floating point"):
        model(torch.zeros(1, 3, side, side, dtype=torch.uint8))


def test_presets_registered_under_timm_names():
    assert fastvit.list_models("deit") == sorted(
        f"deit_{s}_{d}patch16_{r}" for s in ("tiny", "small", "base") for d in ("", "distilled_")
        for r in ((224, 384) if s == "base" else (224,)))
    assert fastvit.list_models("swin") == ["swin_base_patch4_window12_384", "swin_base_patch4_window7_224",
                                           "swin_small_patch4_window7_224", "swin_tiny_patch4_window7_224"]
    assert fastvit.list_models("pit") == ["pit_b_224", "pit_s_224", "pit_ti_224", "pit_xs_224"]


def test_plain_deit_is_the_vit():
    with torch.device("meta"):
        deit, vit = create_model("deit_small_patch16_224"), create_model("vit_small_patch16_224")
    assert {k: v.shape for k, v in deit.state_dict().items()} == {k: v.shape for k, v in vit.state_dict().items()}
    assert not deit.cfg.distilled and deit.num_prefix_tokens == 1 and not hasattr(deit, "dist_token")
    assert deit.op_shapes() == vit.op_shapes()


@pytest.mark.parametrize("preset,img_size", [("swin_base_patch4_window12_384", 384),
                                             ("swin_base_patch4_window12_384", 224), ("pit_b_224", 384),
                                             ("deit_base_distilled_patch16_384", 384)])
def test_builds_and_counts_flops_on_meta(preset, img_size):
    """The sweep builds each model on the meta device and counts its FLOPs there."""
    from fastvit.bench.work import model_flops

    flops = model_flops(lambda: create_model(preset, img_size=img_size), (2, 3, img_size, img_size))
    assert flops > 1e10


def test_swin_window_clamps_as_timm():
    """At 224 px the window-12 Swin's last stage (7x7) takes the map as its window, unshifted: a 13 x 13
    relative-position table, not 23 x 23 (so its 384 px weights do not load there)."""
    with torch.device("meta"):
        model = create_model("swin_base_patch4_window12_384", img_size=224)
    last = model.layers[3].blocks[1]
    assert (last.window, last.shift, last.attn_mask) == ((7, 7), (0, 0), None)
    assert last.attn.relative_position_bias_table.shape == (13 * 13, 32)
    assert model.layers[2].blocks[1].shift == (6, 6) and model.layers[2].blocks[1].attn_mask.shape == (4, 144, 144)


def test_swin_op_shapes():
    with torch.device("meta"):
        model = create_model("swin_tiny_patch4_window7_224")
    assert model.op_shapes() == {"attention": [{"head_dim": 32, "bias": True}],
                                 "norm": [{"hidden": h} for h in (96, 384, 192, 768, 1536)]}
