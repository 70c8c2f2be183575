"""ONNX export: ``torch.onnx.export(model, (x,), dynamo=True)`` of every family on every attention
backend that can be exported, the result run in onnxruntime and held to the fp32 rule against the
eager model's logits.

Small models with the canonical (sharp-attention) weights of the fixtures, so the whole file stays
within a minute on two cores (the exporter's registry of ONNX functions built once for the file).
Swin runs at 40 px, where block 1 is shifted (the mask in the bias), the maps are padded and one
patch merging runs.

Needs the ``onnx`` extra (onnx, onnxscript, onnxruntime); the file is skipped without it.
"""
import sys
import warnings
from pathlib import Path

import pytest
import torch

import fastvit
from fastvit import ATTENTION, BackendError
from fastvit.ops.attention.sdpa import PINNED
from fastvit.testing import assert_close

for _module in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(_module, reason=f"{_module} is not installed (pip install -e .[onnx])")
import onnx  # noqa: E402
import onnxruntime  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "data"))
import canonical_weights as cw  # noqa: E402

FAMILIES = {  # family: (preset, small config)
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, depth=1)),
    "deit": ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)),
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=40, embed_dim=16, depths=(2, 1), num_heads=(1, 2),
                                                  window_size=4)),
    "pit": ("pit_ti_224", dict(img_size=16, patch_size=4, stride=2, base_dims=(8, 8, 8), depths=(1, 1, 1),
                               num_heads=(1, 2, 4))),  # maps 7, 4, 2
}


@pytest.fixture(scope="module", autouse=True)
def _one_onnx_registry():
    """The exporter builds its registry of ONNX functions afresh in every export, about 4 s of the
    ~6 s a small model's export takes; this file builds it once (exports given no custom translation
    table only read it). Where that private classmethod has gone, every export builds its own."""
    try:
        from torch.onnx._internal.exporter._registration import ONNXRegistry
        build = ONNXRegistry.from_torchlib
    except (ImportError, AttributeError):
        yield
        return
    built = {}

    def cached(*args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = build(*args, **kwargs)
        return built[key]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ONNXRegistry, "from_torchlib", staticmethod(cached))
        yield


def _not_exported(backend) -> str | None:
    """Why an attention backend is left out of the matrix, or None."""
    if backend.own_kernel:
        return (f"{backend.name!r} runs fastvit's Triton kernel, a custom op (fastvit_kernels.flash_attn_fwd) "
                "that the ONNX exporter has no translation for (ConversionError)")
    if backend.name in PINNED:
        return (f"{backend.name!r} exports sdpa's program: torch.export records SDPA without its sdpa_kernel pin "
                "(tests/test_compile.py), so the ONNX graph is the one the sdpa case checks")
    return None


def model_for(family: str, backend: str):
    preset, config = FAMILIES[family]
    model = fastvit.create_model(preset, num_classes=10, attn_backend=backend, **config).eval()
    model.load_state_dict(cw.canonical_state_dict(cw.layout(model.state_dict()), 0), strict=False)
    return model


@pytest.mark.parametrize("backend", ATTENTION.names())
@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_export_matches_eager(family, backend):
    why = _not_exported(ATTENTION.get(backend))
    if why:
        pytest.skip(why)
    model = model_for(family, backend)
    images = torch.randn(2, 3, *model.cfg.img_size, generator=torch.Generator().manual_seed(1))
    try:
        model(images)  # grad mode, as the export traces: Swin's bias then needs its gradient
    except BackendError as err:
        pytest.skip(f"{family} on {backend!r} does not run here: {err}")
    with torch.no_grad():
        expected = model(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices of torch internals
        program = torch.onnx.export(model, (images,), dynamo=True, verbose=False)
    onnx.checker.check_model(program.model_proto)
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    assert_close(torch.from_numpy(logits), expected, name=f"{family} on {backend}: onnxruntime against eager")
