"""Mixed-resolution forwards (fastvit/models/mixed.py): images of many sizes packed into one sequence
or padded to the longest give each image the logits, and the input gradients, it gets alone; on every
attention backend that runs them here (triton through the interpreter)."""
import pytest
import torch

from fastvit import ATTENTION, ArgumentError, DTypeError, ResolutionError, ShapeError, create_model
from fastvit.models.mixed import buckets, padded_fraction
from fastvit.testing import assert_close

SIZES = [(32, 48), (16, 16), (48, 32), (32, 32)]  # aspect ratios 2:3 to 3:2, one image of 1 patch
SMALL = dict(embed_dim=32, depth=2, num_heads=2, num_classes=5)


def _model(name, backend, dtype=torch.float32):
    torch.manual_seed(0)
    return create_model(name, img_size=32, patch_size=16, attn_backend=backend, **SMALL).to(dtype).eval()


def _images(dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=g, dtype=dtype) for h, w in SIZES]


def _alone(model, images):
    """Each image alone through the float64 model with the reference attention (dynamic size)."""
    model.cfg.dynamic_img_size = True
    try:
        return torch.cat([model(img[None]) for img in images])
    finally:
        model.cfg.dynamic_img_size = False


def _runs(name, way):
    ok, reason = ATTENTION.availability(name, "cpu", torch.float32, head_dim=16, bias=way == "padded",
                                        packed=way == "packed", grad=True)  # a training step's input gradients
    if not ok:
        pytest.skip(f"{name} on cpu cannot run the {way} forward: {reason}")


@pytest.mark.parametrize("family", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
@pytest.mark.parametrize("way", ["packed", "padded"])
@pytest.mark.parametrize("name", ATTENTION.names())
def test_each_image_gets_its_own_logits_and_input_gradients(family, way, name):
    _runs(name, way)
    model = _model(family, name)
    reference = _model(family, "naive", torch.float64)
    images = [img.requires_grad_() for img in _images()]
    images64 = [img.detach().double().requires_grad_() for img in images]
    logits = getattr(model, f"forward_{way}")(images)
    expected = _alone(reference, images64)
    assert logits.shape == (len(SIZES), SMALL["num_classes"])
    assert_close(logits, expected, name=f"{family} {way} {name} logits")
    weights = torch.randn_like(logits)
    (logits * weights).sum().backward()
    (expected * weights.double()).sum().backward()
    for i, (img, img64) in enumerate(zip(images, images64)):
        assert_close(img.grad, img64.grad, name=f"{family} {way} {name} image {i} input gradient")


@pytest.mark.parametrize("name", ["naive", "sdpa"])
def test_changing_one_image_changes_no_other_logits(name):
    model = _model("vit_tiny_patch16_224", name)
    images = _images()
    other = list(images)
    other[2] = torch.randn_like(images[2]) * 3
    with torch.no_grad():
        a, b = model.forward_packed(images), model.forward_packed(other)
    assert not torch.equal(a[2], b[2])
    assert torch.equal(a[[0, 1, 3]], b[[0, 1, 3]])


def test_swin_and_pit_refuse_image_lists():
    for name in ("swin_tiny_patch4_window7_224", "pit_ti_224"):
        model = create_model(name, num_classes=3)
        for way in ("packed", "padded"):
            with pytest.raises(ArgumentError, match="mixed-resolution"):
                getattr(model, f"forward_{way}")(_images())


def test_bad_image_lists_are_typed_errors():
    model = _model("vit_tiny_patch16_224", "sdpa")
    with pytest.raises(ArgumentError, match="non-empty list"):
        model.forward_packed([])
    with pytest.raises(ArgumentError, match="non-empty list"):
        model.forward_packed(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ShapeError, match=r"image 1 must be 3-D"):
        model.forward_packed([torch.zeros(3, 32, 32), torch.zeros(1, 3, 32, 32)])
    with pytest.raises(ResolutionError, match="image 0 of size 30x32"):
        model.forward_padded([torch.zeros(3, 30, 32)])
    with pytest.raises(DTypeError, match="image 0 is a list"):
        model.forward_packed([[0.0]])
    with pytest.raises(DTypeError, match="dtype"):
        model.forward_packed([torch.zeros(3, 32, 32, dtype=torch.float64)])


def test_buckets_group_similar_sizes_and_count_padding():
    counts = [10, 50, 12, 48, 11]
    groups = buckets(counts, 2)
    assert sorted(sum(groups, [])) == list(range(5)) and groups == [[0, 4], [2, 3, 1]]
    assert padded_fraction(counts) == pytest.approx(1 - 131 / 250)
    assert padded_fraction(counts, groups) == pytest.approx(1 - 131 / (2 * 11 + 3 * 50))
    assert padded_fraction([7, 7]) == 0.0
    with pytest.raises(ArgumentError):
        buckets(counts, 0)


def test_packed_forward_compiles_in_one_graph():
    """The packing's offsets are Python ints made with it: nothing is read back from a tensor, so the
    packed forward compiles with no graph break (fullgraph=True raises on one)."""
    torch._dynamo.reset()
    model = _model("vit_tiny_patch16_224", "sdpa")
    images = _images()
    compiled = torch.compile(lambda imgs: model.forward_packed(imgs), fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        assert_close(compiled(images), _alone(_model("vit_tiny_patch16_224", "naive", torch.float64),
                                              [i.double() for i in images]), name="compiled packed logits")
