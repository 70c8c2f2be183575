"""fastvit.distributed on gloo processes spawned here (one CPU thread each): ring attention against
single-device attention in float64 (forward and gradients, with and without a bias, fully masked rows,
N not divisible by P, every local backend, Triton through its interpreter), the sharded ViT and DeiT
against the single-process model (logits and every parameter's gradient), and clean errors: ranks
that disagree raise on every rank, a failing rank ends the run, never a hang.

Each world size is one spawned job that runs every case (starting processes costs seconds); the tests
read its results."""
from __future__ import annotations

import time

import pytest
import torch

import fastvit
from fastvit.distributed import (Shards, ShardedViT, gloo_available, ring_attention, spawn, split_sizes,
                                 ulysses_attention)
from fastvit.errors import DistributedError, ShapeError
from fastvit.testing import compare

from conftest import TRITON_INTERPRETER

ok, why = gloo_available()
pytestmark = pytest.mark.skipif(not ok, reason=why)

# (name, N, local backend, bias): bias None, "shared" (1, H, N, N) with fully and partly masked rows,
# trained, or "keys" (N,) a key-padding vector, constant
RING_CASES = [
    ("naive", 10, "naive", None),
    ("naive-bias", 11, "naive", "shared"),
    ("sdpa-flash", 9, "sdpa-flash", None),
    ("sdpa-flash-keys", 11, "sdpa-flash", "keys"),
    ("triton-bias", 11, "triton", "shared"),
]
ULYSSES_CASES = ["naive", "sdpa"]
VIT_CASES = [("vit-naive", False, "naive"), ("deit-sdpa-flash", True, "sdpa-flash"), ("vit-triton", False, "triton")]


def _reference(q, k, v, bias):
    s = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if bias is not None:
        s = s + bias
    dead = s.amax(-1, keepdim=True) == float("-inf")
    return (s.masked_fill(dead, 0.0).softmax(-1) @ v).masked_fill(dead, 0.0)


def _ring_case(rank, world, N, backend, bias_kind):
    torch.manual_seed(0)
    B, H, D = 2, 2, 16
    q, k, v = (torch.randn(B, H, N, D, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = None
    if bias_kind == "shared":
        bias = torch.randn(1, H, N, N, dtype=torch.float64)
        bias[..., 2, :] = float("-inf")  # a fully masked row
        bias[..., 3, 1:N - 1] = float("-inf")
        bias.requires_grad_(True)
    elif bias_kind == "keys":
        bias = torch.zeros(N, dtype=torch.float64)
        bias[N - 4:] = float("-inf")  # keys of the last shard (and more) masked
    ref = _reference(q, k, v, bias)
    dout = torch.randn_like(ref)
    leaves = (q, k, v) + ((bias,) if bias is not None and bias.requires_grad else ())
    grads = torch.autograd.grad(ref, leaves, dout)
    shards = Shards(split_sizes(N, world), rank)
    ql, kl, vl = (shards.cut(t, 2).detach().float().requires_grad_(True) for t in (q, k, v))
    bl = None
    if bias is not None:
        bl = (shards.cut(bias, 2) if bias.dim() == 4 else bias).detach().float().requires_grad_(bias.requires_grad)
    out = ring_attention(ql, kl, vl, backend=backend, bias=bl)
    out.backward(shards.cut(dout, 2).float())
    got = {"out": (out, ref), "dq": (ql.grad, grads[0]), "dk": (kl.grad, grads[1]), "dv": (vl.grad, grads[2])}
    if bl is not None and bl.requires_grad:
        got["dbias"] = (bl.grad, grads[3])
    return {name: compare(o, shards.cut(r, 2)) for name, (o, r) in got.items()}


def _ulysses_case(rank, world, N, backend):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 6, N, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ref = _reference(q, k, v, None)
    dout = torch.randn_like(ref)
    grads = torch.autograd.grad(ref, (q, k, v), dout)
    shards = Shards(split_sizes(N, world), rank)
    ql, kl, vl = (shards.cut(t, 2).detach().float().requires_grad_(True) for t in (q, k, v))
    out = ulysses_attention(ql, kl, vl, backend=backend)
    out.backward(shards.cut(dout, 2).float())
    got = {"out": (out, ref), "dq": (ql.grad, grads[0]), "dk": (kl.grad, grads[1]), "dv": (vl.grad, grads[2])}
    return {name: compare(o, shards.cut(r, 2)) for name, (o, r) in got.items()}


def _model(distilled: bool, backend: str | None = "naive", img_size=(48, 32)):
    torch.manual_seed(0)
    name = "deit_tiny_distilled_patch16_224" if distilled else "vit_tiny_patch16_224"
    model = fastvit.create_model(name, img_size=img_size, embed_dim=64, depth=2, num_heads=2, num_classes=7,
                                 attn_backend=backend)
    with torch.no_grad():  # weights far from the initialisation's near-uniform attention
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _vit_case(rank, world, distilled, backend):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 48, 32)  # a 3 x 2 patch grid: 2 + 1 rows on 2 ranks, 1 + 1 + 1 on 3
    ref = _model(distilled).double()
    logits_ref = ref(images.double())
    logits_ref.square().sum().backward()
    model = _model(distilled)
    sharded = ShardedViT(model, backend=backend)
    logits = sharded(images)
    logits.square().sum().backward()
    sharded.sync_grads()
    out = {"logits": compare(logits, logits_ref)}
    for (name, p), p_ref in zip(model.named_parameters(), ref.parameters()):
        out[name] = compare(p.grad, p_ref.grad)
    return out


def _error_case(rank, world, kind):
    """The error every rank raises: (type name, message)."""
    try:
        if kind == "ranks-disagree":
            q = torch.randn(1 + rank, 2, 4, 16)  # the batch differs between ranks
            ring_attention(q, q, q, backend="naive")
        elif kind == "no-lse":
            q = torch.randn(1, 2, 4, 16)
            ring_attention(q, q, q, backend="sdpa")
        elif kind == "heads-indivisible":
            q = torch.randn(1, 5, 4, 16)
            ulysses_attention(q, q, q)
        elif kind == "too-few-rows":
            rows = world - 1  # one patch row too few
            ShardedViT(_model(False, img_size=(16 * rows, 32)))(torch.randn(1, 3, 16 * rows, 32))
    except Exception as err:  # noqa: BLE001  (returned to the test)
        return type(err).__name__, str(err)
    return None


def _job(rank, world, cases):
    out = {}
    for name, fn, args in cases:
        try:
            out[name] = fn(rank, world, *args)
        except Exception as err:  # noqa: BLE001  (a case's failure is its test's, not the job's)
            out[name] = f"{type(err).__name__}: {err}"
    return out


def _cases(world):
    """Every case at both world sizes, but the Triton kernel's (slow in the interpreter): its ring
    case (tails, bias) on 3 ranks, its sharded ViT on 2."""
    def runs(name, backend):
        return backend != "triton" or (TRITON_INTERPRETER and (world == 3) == name.startswith("triton"))
    cases = [(f"ring-{n}", _ring_case, (N, b, bias)) for n, N, b, bias in RING_CASES if runs(n, b)]
    cases += [(f"ulysses-{b}", _ulysses_case, (11, b)) for b in ULYSSES_CASES]
    cases += [(n, _vit_case, (d, b)) for n, d, b in VIT_CASES if runs(n, b)]
    cases += [(f"error-{k}", _error_case, (k,)) for k in ("ranks-disagree", "no-lse", "heads-indivisible",
                                                          "too-few-rows")]
    return cases


@pytest.fixture(scope="module", params=[2, 3], ids=lambda p: f"P{p}")
def job(request):
    world = request.param
    return world, spawn(_job, world, (_cases(world),), timeout_s=240)


def _results(job, name):
    world, ranks = job
    if name not in ranks[0]:
        pytest.skip(f"the Triton kernel's case runs at one world size only (interpreter time), not at {world}"
                    if TRITON_INTERPRETER else
                    "the Triton kernels run on CPU only under Triton's interpreter (TRITON_INTERPRET=1)")
    for rank, res in enumerate(ranks):
        assert not isinstance(res[name], str), f"rank {rank} of {world}: {res[name]}"
    return ranks


@pytest.mark.parametrize("case", [c[0] for c in RING_CASES])
def test_ring_attention_equals_single_device(job, case):
    for rank, res in enumerate(_results(job, f"ring-{case}")):
        for name, cmp in res[f"ring-{case}"].items():
            assert cmp.ok, f"rank {rank} of {job[0]}: " + cmp.describe(name)


@pytest.mark.parametrize("backend", ULYSSES_CASES)
def test_ulysses_attention_equals_single_device(job, backend):
    for rank, res in enumerate(_results(job, f"ulysses-{backend}")):
        for name, cmp in res[f"ulysses-{backend}"].items():
            assert cmp.ok, f"rank {rank} of {job[0]}: " + cmp.describe(name)


@pytest.mark.parametrize("case", [c[0] for c in VIT_CASES])
def test_sharded_vit_equals_single_process(job, case):
    for rank, res in enumerate(_results(job, case)):
        bad = [cmp.describe(name) for name, cmp in res[case].items() if not cmp.ok]
        assert not bad, f"rank {rank} of {job[0]}: " + "; ".join(bad)


@pytest.mark.parametrize("kind, error, words", [
    ("ranks-disagree", "ShapeError", ("batch", "rank 0: 1", "rank 1: 2")),
    ("no-lse", "BackendError", ("'sdpa'", "log-sum-exp", "naive, sdpa-flash, triton")),
    ("heads-indivisible", "ShapeError", ("5 heads", "world size")),
    ("too-few-rows", "ShapeError", ("patch rows", "world size")),
])
def test_errors_raised_on_every_rank(job, kind, error, words):
    world, ranks = job
    for rank, res in enumerate(_results(job, f"error-{kind}")):
        assert res[f"error-{kind}"] is not None, f"rank {rank} of {world} raised nothing"
        name, message = res[f"error-{kind}"]
        assert name == error, f"rank {rank}: {name}: {message}"
        assert all(w in message for w in words), message


def _fail_on_rank_1(rank, world):
    if rank == 1:
        raise ValueError("rank 1 gives up")
    q = torch.randn(1, 2, 4, 16)
    return ring_attention(q, q, q, backend="naive")  # blocks on rank 1, which never comes


def test_failing_rank_ends_the_run():
    start = time.monotonic()
    with pytest.raises(DistributedError, match="rank 1: ValueError: rank 1 gives up"):
        spawn(_fail_on_rank_1, 2, timeout_s=120)
    assert time.monotonic() - start < 60  # the survivors were ended, not waited for


def test_shards_and_errors_without_a_group():
    assert split_sizes(197, 3) == (66, 66, 65)
    shards = Shards((3, 2, 2), 1)
    assert shards.offsets == (0, 3, 5) and shards.total == 7 and shards.longest == 3
    assert shards.cut(torch.arange(7), 0).tolist() == [3, 4]
    with pytest.raises(ShapeError, match="world size 4"):
        split_sizes(3, 4)
    with pytest.raises(fastvit.ArgumentError, match="process group"):
        ring_attention(torch.randn(1, 1, 2, 8), torch.randn(1, 1, 2, 8), torch.randn(1, 1, 2, 8))


def test_comm_bytes():
    shards = Shards((66, 66, 65), 0)
    block = 2 * 1 * 3 * 66 * 64  # k and v of the longest shard
    assert fastvit.distributed.comm_bytes(1, 3, shards, 64, torch.float32) == 2 * block * 4
    assert fastvit.distributed.comm_bytes(1, 3, shards, 64, torch.float16, "train") == 2 * 2 * block * 2 + 3 * block * 4
    assert fastvit.distributed.comm_bytes(1, 3, Shards((197,), 0), 64, torch.float32, "train") == 0


def _row(op, world, res, mem, ms=10.0):
    return {"op": op, "backend": "sdpa-flash", "pass": "train", "world_size": world, "resolution": res,
            "tokens": (res // 16) ** 2 + 1, "status": "ok", "peak_mem_bytes": mem, "median_s": ms / 1e3,
            "comm_bytes": 2 ** 20 * (world - 1), "threads_per_rank": 1}


def test_beyond_one_device_section():
    from fastvit.report.beyond import largest_fitting, section

    rows = [_row("sharded_model", p, r, int(2 ** 20 * (r / 224) ** 2 * 64 / p)) for p in (1, 2, 4) for r in (224, 448)]
    rows.append({**_row("sharded_model", 4, 896, 1), "status": "oom"})
    points = {r["resolution"]: r for r in rows if r["world_size"] == 2 and r["status"] == "ok"}
    measured, extrapolated = largest_fitting(points, budget=512 * 2 ** 20)
    assert measured == 448 and extrapolated == 896  # memory ~ resolution^2: 32 MiB at 224 px, 512 at 896
    text = section(rows, {"device": "cpu", "device_name": "a CPU"}, budget_gib=1.0)
    assert section(list(rows), {"device": "cpu", "device_name": "a CPU"}, budget_gib=1.0) == text
    assert "## Beyond one device" in text and "resolution^2.00" in text
    assert "| 448 | 785 | 256.0 | 10.0 | 0.0 | 128.0 | 10.0 | 1.0 | 64.0 | 10.0 | 3.0 |" in text
    assert "at 448 px (785 tokens): P=1 256.0 MiB / 10 ms, P=2 128.0 MiB / 10 ms, P=4 64.0 MiB / 10 ms" in text
