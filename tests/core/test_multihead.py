import pytest
import torch
from torch import nn

from core.capture import capture_attention
from core.masks import causal_mask, padding_mask, to_key_padding_mask
from core.multihead import MultiHeadAttention


@pytest.mark.parametrize("kdim", [None, 6])
@pytest.mark.parametrize("masking", ["padding", "causal", "both"])
def test_equals_nn_multihead_attention_with_transferred_weights(kdim, masking):
    torch.manual_seed(0)
    B, T, S, D, H = 3, 5, 5, 16, 4
    theirs = nn.MultiheadAttention(D, H, kdim=kdim, vdim=kdim, batch_first=True, dtype=torch.float64)
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(B, T, D, dtype=torch.float64)
    ctx = torch.randn(B, S, kdim or D, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 1])
    ours_mask, torch_kw = None, {}
    if masking in ("padding", "both"):
        ours_mask = padding_mask(lengths, S)
        torch_kw["key_padding_mask"] = to_key_padding_mask(lengths, S)
    if masking in ("causal", "both"):
        ours_mask = causal_mask(T) if ours_mask is None else ours_mask & causal_mask(T)
        torch_kw["attn_mask"] = ~causal_mask(T).dense()
    ref, ref_w = theirs(x, ctx, ctx, average_attn_weights=False, **torch_kw)
    out, w = ours(x, ctx, ctx, mask=ours_mask, return_weights=True)
    assert (out - ref).abs().max() < 1e-6
    assert (w - ref_w).abs().max() < 1e-6
    fused = ours(x, ctx, ctx, mask=ours_mask)
    assert (fused - ref).abs().max() < 1e-6


def test_weights_transfer_back_to_torch():
    ours = MultiHeadAttention(8, 2).double()
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    theirs = ours.to_torch()
    assert torch.allclose(theirs(x, x, x, need_weights=False)[0], ours(x), atol=1e-12)


def test_fully_masked_query_gives_zeros_and_finite_gradients_where_torch_gives_nan():
    """pytorch issue 41508: nn.MultiheadAttention returns NaN for a query with no allowed key."""
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(8, 2, batch_first=True)
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(1, 3, 8, requires_grad=True)
    blocked = torch.ones(3, 3, dtype=torch.bool)
    blocked[1] = False  # query 1 may attend nothing
    ref, _ = theirs(x, x, x, attn_mask=~blocked)
    assert torch.isnan(ref[0, 1]).all()  # the behaviour we do better than
    for need in (True, False):
        out = ours(x, mask=blocked, return_weights=need)
        out = out[0] if need else out
        assert torch.isfinite(out).all()
        assert torch.allclose(out[0, 1], ours.out_proj.bias)  # zero attention output, then the projection
        grads = torch.autograd.grad(out.sum(), [x, *ours.parameters()])
        assert all(torch.isfinite(g).all() for g in grads)


def test_every_parameter_gets_a_gradient_and_shapes_hold():
    mha = MultiHeadAttention(12, 3, kdim=5, vdim=7)
    q, k, v = torch.randn(2, 4, 12), torch.randn(2, 6, 5), torch.randn(2, 6, 7)
    out, w = mha(q, k, v, return_weights=True)
    assert out.shape == (2, 4, 12) and w.shape == (2, 3, 4, 6)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mha.parameters())


def test_capture_records_weights_only_inside_the_context():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(1, 5, 8)
    with capture_attention(mha) as maps:
        mha(x)
    assert len(maps) == 1 and maps[0].weights.shape == (1, 2, 5, 5)
    mha(x)
    assert len(maps) == 1


def test_bad_shapes_are_named():
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"query must be \(B, T, 8\), got \(2, 5, 7\)"):
        mha(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
