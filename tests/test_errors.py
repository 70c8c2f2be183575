"""Bad input raises a typed error (fastvit.errors) whose message names the problem."""
import pytest
import torch

import fastvit
from fastvit import (ATTENTION, ArgumentError, BackendError, CheckpointError, DeviceError, DTypeError, FastViTError,
                     ResolutionError, ShapeError, UnknownModelError, create_model, load_checkpoint)
from fastvit.errors import ConfigError

FIXTURE = "tests/data/timm_vit_fixture.pt"


@pytest.fixture(scope="module")
def model():
    return create_model("vit_tiny_patch16_224", img_size=32, num_classes=10).eval()


def fixture_model():
    cfg = torch.load(FIXTURE, weights_only=True)["config"]
    return create_model("vit_tiny_patch16_224", **cfg)


def fixture_state():
    return dict(torch.load(FIXTURE, weights_only=True)["state_dict"])


def qkv(*shapes):
    return [torch.randn(*s) for s in shapes]


# -- images ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("images,error,match", [
    (torch.randn(1, 3, 30, 32), ResolutionError, r"30x32 .*not divisible by the patch size 16"),
    (torch.randn(1, 1, 32, 32), ShapeError, r"1 channels.*expects 3"),
    (torch.randn(3, 32, 32), ShapeError, r"4-D.*\(3, 32, 32\)"),
    (torch.randn(1, 1, 3, 32, 32), ShapeError, r"4-D"),
    (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), DTypeError, r"floating point.*uint8"),
    (torch.randn(1, 3, 48, 48), ResolutionError, r"48x48 differs from the model's 32x32.*dynamic_img_size"),
], ids=["indivisible", "channels", "rank3", "rank5", "uint8", "wrong-resolution"])
def test_bad_images(model, images, error, match):
    with pytest.raises(error, match=match):
        model(images)


def test_error_hierarchy():
    assert issubclass(ResolutionError, ShapeError) and issubclass(ShapeError, ValueError)
    assert issubclass(DTypeError, TypeError) and issubclass(fastvit.MissingExtraError, ImportError)
    assert issubclass(ArgumentError, ValueError)
    for err in (ShapeError, DTypeError, ArgumentError, BackendError, UnknownModelError, CheckpointError, ConfigError,
                fastvit.ResultsError, fastvit.MissingExtraError, fastvit.DeviceError):
        assert issubclass(err, FastViTError)
    documented = open("README.md").read().split("## Errors")[1]
    for name in dir(fastvit.errors):
        obj = getattr(fastvit.errors, name)
        if isinstance(obj, type) and issubclass(obj, FastViTError):
            assert f"`{name}`" in documented, f"{name} is not in README's error table"


def test_img_size_not_divisible_at_construction():
    with pytest.raises(ResolutionError, match=r"\(30, 30\).*patch size 16"):
        create_model("vit_tiny_patch16_224", img_size=30)
    with pytest.raises(ResolutionError, match=r"\(32, 40\).*patch size 16"):
        create_model("vit_tiny_patch16_224", img_size=(32, 40))


# -- attention inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("shapes,match", [
    ([(1, 2, 5, 8), (1, 2, 6, 8), (1, 2, 5, 8)], r"q, k, v must have one shape.*\(1, 2, 6, 8\)"),
    ([(1, 2, 5, 8), (1, 2, 5, 8), (1, 2, 5, 4)], r"q, k, v must have one shape.*\(1, 2, 5, 4\)"),
    ([(2, 5, 8), (2, 5, 8), (2, 5, 8)], r"q must be 4-D"),
])
def test_attention_shape_errors(shapes, match):
    with pytest.raises(ShapeError, match=match):
        fastvit.attention(*qkv(*shapes))


def test_attention_dtype_error():
    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(DTypeError, match="floating-point.*int64"):
        fastvit.attention(q, q.long(), q)


def test_head_dim_the_backend_cannot_take():
    ok, reason = ATTENTION.availability("triton", "cpu", torch.float32, head_dim=64)
    if not ok:
        pytest.skip(f"triton attention on cpu: {reason}")
    q = torch.randn(1, 1, 4, 300)
    with pytest.raises(BackendError, match=r"'triton'.*head.?dim.*300"):
        fastvit.attention(q, q, q, backend="triton")


# -- names -----------------------------------------------------------------------------------------
def test_unknown_preset_suggests_close_names():
    with pytest.raises(UnknownModelError, match=r"'vit_base_patch16_244'.*[Dd]id you mean.*vit_base_patch16_224"):
        create_model("vit_base_patch16_244")


def test_unknown_model_option():
    with pytest.raises(TypeError, match="emb_dim"):
        create_model("vit_tiny_patch16_224", emb_dim=10)


def test_unknown_backend():
    with pytest.raises(BackendError, match=r"unknown attention backend 'flash'.*known: .*naive"):
        create_model("vit_tiny_patch16_224", img_size=32, attn_backend="flash")


def test_cuda_only_backend_on_cpu_tensors():
    q = torch.randn(1, 2, 5, 64)
    with pytest.raises(BackendError, match=r"'xformers' cannot run on cpu.*CUDA"):
        fastvit.attention(q, q, q, backend="xformers")


# -- checkpoints -----------------------------------------------------------------------------------
def test_checkpoint_missing_and_unexpected_keys():
    state = fixture_state()
    del state["blocks.1.mlp.fc2.bias"]
    state["blocks.2.attn.qkv.weight"] = torch.zeros(144, 48)
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks.1.mlp.fc2.bias'\].*"
                                              r"unexpected keys \['blocks.2.attn.qkv.weight'\]"):
        load_checkpoint(fixture_model(), state)


def test_checkpoint_shape_mismatch():
    state = fixture_state()
    state["head.weight"] = torch.zeros(7, 48)
    with pytest.raises(CheckpointError, match=r"head.weight: checkpoint \(7, 48\) vs model \(10, 48\)"):
        load_checkpoint(fixture_model(), state)


def test_checkpoint_pos_embed_of_another_width():
    state = fixture_state()
    state["pos_embed"] = torch.zeros(1, 17, 64)
    with pytest.raises(CheckpointError, match=r"pos_embed shape \(1, 17, 64\)"):
        load_checkpoint(fixture_model(), state)


def test_checkpoint_that_is_not_a_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="list"):
        load_checkpoint(fixture_model(), path)


# -- model configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize("option,match", [
    ({"norm_position": "middle"}, r"norm_position must be one of 'pre', 'post', got 'middle'"),
    ({"mlp_act": "swish"}, r"mlp_act must be one of 'gelu', 'relu', got 'swish'"),
    ({"img_size": 0}, r"img_size must be positive, got \(0, 0\)"),
    ({"img_size": -32}, r"img_size must be positive, got \(-32, -32\)"),
    ({"img_size": (32, 0)}, r"img_size must be positive, got \(32, 0\)"),
    ({"patch_size": 0}, r"patch_size must be positive, got 0"),
    ({"patch_size": -16}, r"patch_size must be positive, got -16"),
    ({"depth": 0}, r"depth must be positive, got 0"),
    ({"num_heads": 0}, r"num_heads must be positive, got 0"),
    ({"embed_dim": -192}, r"embed_dim must be positive, got -192"),
    ({"mlp_ratio": 0.0}, r"mlp_ratio must be positive, got 0.0"),
    ({"mlp_ratio": -1}, r"mlp_ratio must be positive, got -1"),
    ({"embed_dim": 100}, r"embed_dim=100 is not divisible by num_heads=3"),
    ({"drop_rate": 1.0}, r"drop_rate must be in \[0, 1\), got 1.0"),
    ({"num_classes": -1}, r"num_classes must be a non-negative integer, got -1"),
], ids=lambda v: "-".join(f"{k}={v}" for k, v in v.items()) if isinstance(v, dict) else "")
def test_bad_config_values(option, match):
    with pytest.raises(ConfigError, match=match):
        create_model("vit_tiny_patch16_224", **{"img_size": 32, **option})


# -- images against the model ----------------------------------------------------------------------
def test_images_of_another_dtype(model):
    with pytest.raises(DTypeError, match=r"images have dtype torch.float64 but the model's parameters torch.float32"):
        model(torch.randn(1, 3, 32, 32, dtype=torch.float64))


def test_images_of_another_dtype_are_fine_under_autocast(model):
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_images_on_another_device(model):
    with pytest.raises(DeviceError, match=r"images are on meta but the model's parameters on cpu"):
        model(torch.randn(1, 3, 32, 32, device="meta"))


# -- attention arguments, validated once before any backend -------------------------------------------
@pytest.mark.parametrize("backend", ATTENTION.names())
@pytest.mark.parametrize("kwargs,error,match", [
    ({"dropout_p": 1.0}, ArgumentError, r"dropout_p must be in \[0, 1\), got 1.0"),
    ({"dropout_p": 1.5}, ArgumentError, r"dropout_p must be in \[0, 1\), got 1.5"),
    ({"dropout_p": -0.1}, ArgumentError, r"dropout_p must be in \[0, 1\), got -0.1"),
    ({"scale": 0.0}, ArgumentError, r"scale must be a positive finite number or None, got 0.0"),
    ({"scale": -1.0}, ArgumentError, r"scale must be a positive finite number or None, got -1.0"),
    ({"scale": float("nan")}, ArgumentError, r"scale must be a positive finite number or None, got nan"),
    ({"scale": float("inf")}, ArgumentError, r"scale must be a positive finite number or None, got inf"),
    ({"scale": "x"}, ArgumentError, r"scale must be a positive finite number or None, got 'x'"),
    ({"bias": torch.zeros(1, 2, 5, 4)}, ShapeError, r"bias of shape \(1, 2, 5, 4\) does not broadcast"),
    ({"bias": torch.zeros(2, 1, 2, 5, 5)}, ShapeError, r"bias of shape \(2, 1, 2, 5, 5\) does not broadcast"),
    ({"bias": torch.zeros(5, 5, dtype=torch.float64)}, DTypeError, r"bias dtype torch.float64 differs"),
    ({"bias": [[0.0] * 5] * 5}, DTypeError, r"bias must be a torch.Tensor or None, got list"),
], ids=["p=1", "p=1.5", "p<0", "scale=0", "scale<0", "scale=nan", "scale=inf", "scale=str", "bias-shape",
        "bias-rank5", "bias-dtype", "bias-list"])
def test_bad_attention_arguments(backend, kwargs, error, match):
    """Every bad argument raises a FastViTError subclass (ArgumentError and ShapeError are ValueErrors,
    DTypeError a TypeError), the same for every backend: validated before any backend runs."""
    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(error, match=match) as err:
        fastvit.attention(q, q, q, backend=backend, **kwargs)
    assert isinstance(err.value, FastViTError)
    assert isinstance(err.value, TypeError if error is DTypeError else ValueError)


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_attention_operands_that_are_not_tensors(which):
    q = torch.randn(1, 2, 5, 8)
    args = {"q": q, "k": q, "v": q, which: q.numpy()}
    with pytest.raises(DTypeError, match=rf"{which} must be a torch.Tensor, got ndarray"):
        fastvit.attention(args["q"], args["k"], args["v"])


def test_attention_mixed_dtypes_and_devices():
    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(DTypeError, match=r"one dtype; got torch.float32, torch.float64, torch.float32"):
        fastvit.attention(q, q.double(), q)
    with pytest.raises(DeviceError, match=r"one device; got cpu, cpu, meta"):
        fastvit.attention(q, q, q.to("meta"))
    with pytest.raises(DeviceError, match=r"bias is on meta, q on cpu"):
        fastvit.attention(q, q, q, bias=torch.zeros(5, 5, device="meta"))
