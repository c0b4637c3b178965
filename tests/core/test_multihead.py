import pytest
import torch
from torch import nn

from core.capture import capture_attention
from core.masks import causal_mask, padding_mask, to_key_padding_mask
from core.multihead import MultiHeadAttention
from core.positional import RelativePositionBias


def _randomize(module: nn.Module, seed: int = 0) -> None:
    """Every parameter random and non-zero: fresh projection biases are zeros, and a test with zero
    biases cannot see a swapped or dropped one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _grads(out, inputs, module):
    """Gradients of a fixed random projection of `out` w.r.t. the inputs and the named parameters."""
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    names, params = zip(*module.named_parameters())
    grads = torch.autograd.grad((out * weight).sum(), [*inputs, *params])
    return grads[: len(inputs)], dict(zip(names, grads[len(inputs):]))


def _assert_same_forward_and_backward(ours, theirs, x, ctx, ours_mask, torch_kw, self_attention):
    """Ours (explicit and fused path) against `nn.MultiheadAttention`, outputs, weights and gradients."""
    inputs = (x,) if self_attention else (x, ctx)
    ref, ref_w = theirs(x, *(2 * [x] if self_attention else 2 * [ctx]), average_attn_weights=False, **torch_kw)
    ref_g, ref_pg = _grads(ref, inputs, theirs)
    ours_args = () if self_attention else (ctx, ctx)
    out, w = ours(x, *ours_args, mask=ours_mask, return_weights=True)
    fused = ours(x, *ours_args, mask=ours_mask)
    assert (out - ref).abs().max() < 1e-10 and (fused - ref).abs().max() < 1e-10
    assert (w - ref_w).abs().max() < 1e-10
    for result in (out, fused):
        g, pg = _grads(result, inputs, ours)
        assert set(pg) == set(ref_pg)
        for a, b in zip(g, ref_g):
            assert (a - b).abs().max() < 1e-9
        for name in ref_pg:
            assert (pg[name] - ref_pg[name]).abs().max() < 1e-9, name


@pytest.mark.parametrize("masking", ["none", "padding", "causal", "both"])
def test_self_attention_equals_nn_multihead_attention_forward_and_backward(masking):
    """The packed self-attention path, all parameters random, in float64."""
    B, T, D, H = 3, 5, 16, 4
    theirs = nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64)
    _randomize(theirs)
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3, 1])
    ours_mask, torch_kw = None, {}
    if masking in ("padding", "both"):
        ours_mask = padding_mask(lengths, T)
        torch_kw["key_padding_mask"] = to_key_padding_mask(lengths, T)
    if masking in ("causal", "both"):
        ours_mask = causal_mask(T) if ours_mask is None else ours_mask & causal_mask(T)
        torch_kw["attn_mask"] = ~causal_mask(T).dense()
    _assert_same_forward_and_backward(ours, theirs, x, None, ours_mask, torch_kw, self_attention=True)


@pytest.mark.parametrize("kdim", [None, 6])  # packed weights on the cross path, separate q/k/v weights
@pytest.mark.parametrize("masking", ["none", "padding", "structure+padding"])
def test_cross_attention_equals_nn_multihead_attention_forward_and_backward(kdim, masking):
    """Cross-attention with S != T, all parameters random, in float64."""
    B, T, S, D, H = 3, 4, 7, 16, 4
    theirs = nn.MultiheadAttention(D, H, kdim=kdim, vdim=kdim, batch_first=True, dtype=torch.float64)
    _randomize(theirs, seed=2)
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    ctx = torch.randn(B, S, kdim or D, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([7, 2, 5])
    structure = torch.rand(T, S, generator=torch.Generator().manual_seed(3)) > 0.5
    structure[:, 0] = True  # every query keeps a key (torch gives NaN otherwise)
    ours_mask, torch_kw = None, {}
    if masking != "none":
        ours_mask = padding_mask(lengths, S)
        torch_kw["key_padding_mask"] = to_key_padding_mask(lengths, S)
    if masking == "structure+padding":
        ours_mask = ours_mask & structure
        torch_kw["attn_mask"] = ~structure
    _assert_same_forward_and_backward(ours, theirs, x, ctx, ours_mask, torch_kw, self_attention=False)


@pytest.mark.parametrize("self_attention", [True, False])
def test_position_bias_with_unequal_offsets_equals_torch_with_the_bias_as_float_mask(self_attention):
    """Queries at absolute positions 9.., keys at 4..: the relative bias must see k - q with both offsets.

    The oracle builds the bias table entry by entry from its definition (offset j - i, clipped) and hands
    it to `nn.MultiheadAttention` as a float `attn_mask`.
    """
    B, T, D, H, M = 2, 5, 8, 2, 3
    S = T if self_attention else 7
    q_offset, k_offset = 9, 4
    theirs = nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64)
    _randomize(theirs, seed=4)
    ours = MultiHeadAttention.from_torch(theirs)
    rel = RelativePositionBias(H, max_distance=M).double()
    _randomize(rel, seed=5)
    table = rel.bias.detach()  # (2M+1, H): row r is offset r - M
    bias = torch.empty(H, T, S, dtype=torch.float64)
    for i in range(T):
        for j in range(S):
            offset = max(-M, min(M, (k_offset + j) - (q_offset + i)))
            bias[:, i, j] = table[offset + M]
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    ctx = x if self_attention else torch.randn(B, S, D, dtype=torch.float64, requires_grad=True)
    ref, _ = theirs(x, ctx, ctx, attn_mask=bias.repeat(B, 1, 1))  # (B*H, T, S)
    kv = () if self_attention else (ctx, ctx)
    for want_weights in (True, False):
        out = ours(x, *kv, position_bias=rel, q_offset=q_offset, k_offset=k_offset, return_weights=want_weights)
        out = out[0] if want_weights else out
        assert (out - ref).abs().max() < 1e-10
    # the bias table's gradient: the same scores with the table as a leaf give the same gradient
    table_leaf = table.clone().requires_grad_(True)
    idx = (torch.arange(S)[None, :] + k_offset - torch.arange(T)[:, None] - q_offset).clamp(-M, M) + M  # (T, S)
    ref2, _ = theirs(x, ctx, ctx, attn_mask=table_leaf[idx].permute(2, 0, 1).repeat(B, 1, 1))
    (ref_grad,) = torch.autograd.grad((ref2 * ref2).sum(), table_leaf)
    out = ours(x, *kv, position_bias=rel, q_offset=q_offset, k_offset=k_offset)
    (grad,) = torch.autograd.grad((out * out).sum(), rel.bias)
    assert (grad - ref_grad).abs().max() < 1e-9 and ref_grad.abs().sum() > 0


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


@pytest.mark.parametrize("args, kwargs, message", [
    ((8, -2), {}, "num_heads must be an integer >= 1, got -2"),
    ((8, 0), {}, "num_heads must be an integer >= 1, got 0"),
    ((8, 2.0), {}, "num_heads must be an integer"),
    ((0, 1), {}, "dim must be an integer >= 1"),
    ((10, 3), {}, r"dim \(10\) must be divisible by num_heads \(3\)"),
    ((8, 2), {"kdim": 0}, "kdim must be an integer >= 1, got 0"),
    ((8, 2), {"vdim": -1}, "vdim must be"),
    ((8, 2), {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ((8, 2), {"dropout": -0.1}, "dropout must be"),
])
def test_constructor_arguments_are_validated(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(*args, **kwargs)
