"""Packed sequences in the attention op (fastvit/ops/attention/packing.py): every backend that takes a
Packing gives, for each sequence, what attention over that sequence alone gives, forward and backward,
and no sequence sees another; the others refuse at admission with the reason. A backend that runs
packed sequences here forward only (flex on CPU) is held to the same forward, and isolation, without
gradients."""
import pytest
import torch

import fastvit
from fastvit import ATTENTION, ArgumentError, BackendError, DeviceError, Packing, ShapeError, attention
from fastvit.testing import assert_close

LENGTHS = (5, 1, 17, 9)  # a single token, lengths around a 16-row block


def _qkv(lengths=LENGTHS, H=2, D=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    return [torch.randn(1, H, T, D, generator=g, dtype=dtype) for _ in range(3)]


def _per_sequence_reference(q, k, v, lengths):
    """Each sequence alone through the float64 reference, concatenated."""
    parts = zip(*(t.double().split(lengths, dim=2) for t in (q, k, v)))
    return torch.cat([attention(a, b, c, backend="naive") for a, b, c in parts], dim=2)


def _packed_backend(name):
    """Skip unless ``name`` runs packed sequences on CPU, training (these tests run the backward)."""
    ok, reason = ATTENTION.availability(name, "cpu", torch.float32, head_dim=16, bias=False, packed=True, grad=True)
    if not ok:
        pytest.skip(f"{name} on cpu cannot train on packed sequences: {reason}")


@pytest.mark.parametrize("name", ATTENTION.names())
def test_packed_attention_equals_each_sequence_alone(name):
    _packed_backend(name)
    q, k, v = (t.requires_grad_() for t in _qkv())
    packing = Packing(LENGTHS)
    out = attention(q, k, v, backend=name, packing=packing)
    ref_inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = _per_sequence_reference(*ref_inputs, LENGTHS)
    assert_close(out, ref, name=f"{name} packed forward")
    do = torch.randn_like(out)
    out.backward(do)
    ref.backward(do.double())
    for t, r, what in zip((q, k, v), ref_inputs, "qkv"):
        assert_close(t.grad, r.grad, name=f"{name} packed d{what}")


@pytest.mark.parametrize("name", ATTENTION.names())
def test_changing_one_sequence_changes_no_other(name):
    """The mixing bug (a path that drops the block-diagonal mask) cannot pass: new tokens in sequence 2
    leave every other sequence's output and gradients bit for bit as they were."""
    _packed_backend(name)
    packing = Packing(LENGTHS)
    lo, hi = packing.offsets[2], packing.offsets[3]

    def run(seed_of_seq2):
        q, k, v = _qkv()
        q2, k2, v2 = _qkv(seed=seed_of_seq2)
        for t, t2 in zip((q, k, v), (q2, k2, v2)):
            t[:, :, lo:hi] = t2[:, :, lo:hi] * 3
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        out = attention(q, k, v, backend=name, packing=packing)
        out.sum().backward()
        return out.detach(), [t.grad for t in (q, k, v)]

    (a, grads_a), (b, grads_b) = run(1), run(2)
    keep = torch.ones(packing.total, dtype=torch.bool)
    keep[lo:hi] = False
    assert not torch.equal(a[:, :, lo:hi], b[:, :, lo:hi])
    assert torch.equal(a[:, :, keep], b[:, :, keep])
    for ga, gb in zip(grads_a, grads_b):
        assert torch.equal(ga[:, :, keep], gb[:, :, keep])


def _forward_only_packed() -> list[str]:
    return [n for n in ATTENTION.names()
            if ATTENTION.availability(n, "cpu", torch.float32, head_dim=16, packed=True)[0]
            and not ATTENTION.availability(n, "cpu", torch.float32, head_dim=16, packed=True, grad=True)[0]]


@pytest.mark.parametrize("name", _forward_only_packed() or [pytest.param(None, marks=pytest.mark.skip(
    reason="every backend that runs packed sequences on cpu trains on them too (the tests above)"))])
def test_forward_only_packed_attention_equals_each_sequence_alone(name):
    """Without gradients: each sequence's output is its attention alone (float64 reference), a new
    Packing of the same lengths gives the same bits, and new tokens in sequence 2 change no other
    sequence's output, bit for bit (all at one shape: a backend compiling per shape compiles once)."""
    q, k, v = _qkv()
    packing = Packing(LENGTHS)
    lo, hi = packing.offsets[2], packing.offsets[3]
    with torch.no_grad():
        out = attention(q, k, v, backend=name, packing=packing)
        assert_close(out, _per_sequence_reference(q, k, v, LENGTHS), name=f"{name} packed forward")
        assert torch.equal(attention(q, k, v, backend=name, packing=Packing(LENGTHS)), out)
        changed = [t.clone() for t in (q, k, v)]
        for t, t2 in zip(changed, _qkv(seed=2)):
            t[:, :, lo:hi] = t2[:, :, lo:hi] * 3
        other = attention(*changed, backend=name, packing=packing)
    keep = torch.ones(packing.total, dtype=torch.bool)
    keep[lo:hi] = False
    assert not torch.equal(other[:, :, lo:hi], out[:, :, lo:hi])
    assert torch.equal(other[:, :, keep], out[:, :, keep])


def test_one_sequence_packed_is_plain_attention():
    q, k, v = _qkv(lengths=(12,))
    torch.testing.assert_close(attention(q, k, v, backend="sdpa", packing=Packing([12])),
                               attention(q, k, v, backend="sdpa"))


def test_packing_records_lengths_and_offsets_on_its_device():
    p = Packing([3, 4, 2])
    assert p.offsets == (0, 3, 7, 9) and p.total == 9 and p.max_len == 4 and p.num_seqs == 3
    assert p.cu_seqlens.dtype == torch.int32 and p.cu_seqlens.tolist() == [0, 3, 7, 9]
    assert p.seq_ids.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    q = Packing.from_cu_seqlens(torch.tensor([0, 3, 7, 9]))
    assert q.lengths == (3, 4, 2) and p.to("cpu") is p
    bias = p.block_bias(torch.float32)
    assert bias.shape == (9, 9) and bias[0, 2] == 0 and bias[0, 3] == float("-inf")
    assert [t.shape[-1] for t in p.split(torch.zeros(1, 9), dim=1)] == [3, 4, 2]


@pytest.mark.parametrize("lengths", [(), (3, 0), (2.0,), (True,), torch.tensor([3, 4])])
def test_bad_lengths_are_argument_errors(lengths):
    with pytest.raises(ArgumentError, match="Packing"):
        Packing(lengths)


def test_bad_packed_calls_are_typed_errors():
    q, k, v = _qkv()
    packing = Packing(LENGTHS)
    with pytest.raises(ShapeError, match="T = 32"):
        attention(q[:, :, :30], k[:, :, :30], v[:, :, :30], packing=packing)
    with pytest.raises(ShapeError, match=r"\(1, H, T, D\)"):
        attention(*(torch.cat([t, t]) for t in (q, k, v)), packing=packing)
    with pytest.raises(ArgumentError, match="bias"):
        attention(q, k, v, packing=packing, bias=torch.zeros(32))
    with pytest.raises(ArgumentError, match="Packing"):
        attention(q, k, v, packing=[5, 1, 17, 9])
    with pytest.raises(ArgumentError, match="cu_seqlens"):
        Packing.from_cu_seqlens(torch.tensor([1, 3]))
    meta = Packing(LENGTHS, device="meta")
    with pytest.raises(DeviceError, match="meta"):
        attention(q, k, v, packing=meta)
    assert issubclass(ArgumentError, fastvit.FastViTError)


def test_a_backend_without_packing_refuses_with_the_reason():
    refusing = [n for n in ATTENTION.names() if not ATTENTION.get(n).takes_packing]
    if not refusing:
        pytest.skip("every registered attention backend takes packed sequences")
    q, k, v = _qkv()
    with pytest.raises(BackendError, match="takes no packed sequences"):
        attention(q, k, v, backend=refusing[0], packing=Packing(LENGTHS))
