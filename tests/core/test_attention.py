import math

import pytest
import torch
import torch.nn.functional as F

import core.attention
from core.attention import _explicit_attention, _sdpa, scaled_dot_product_attention
from core.masks import causal_mask, padding_mask, sliding_window_mask
from core.positional import RelativePositionBias


def _qkv(B=2, H=3, T=7, S=7, D=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda L: torch.randn(B, H, L, D, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return make(T), make(S), make(S)


def test_textbook_worked_example():
    q = torch.tensor([[1.0, 2.0]])
    k = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    out, w = scaled_dot_product_attention(q, k, k, return_weights=True)
    e1, e2 = math.exp(3 / math.sqrt(2)), math.exp(2 / math.sqrt(2))
    assert w[0].tolist() == pytest.approx([e1 / (e1 + e2), e2 / (e1 + e2)], abs=1e-6)
    assert w[0, 0].item() == pytest.approx(0.6698, abs=1e-4)
    assert out[0].tolist() == pytest.approx([w[0, 0].item(), 1.0], abs=1e-6)


def test_explicit_path_is_the_formula():
    q, k, v = _qkv()
    out, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    ref_w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    assert torch.allclose(w, ref_w)
    assert torch.allclose(out, ref_w @ v)


@pytest.mark.parametrize(
    "make_mask",
    [
        lambda: None,
        lambda: causal_mask(7),
        lambda: sliding_window_mask(7, 1, 2) & padding_mask(torch.tensor([7, 4]), 7),
        lambda: torch.rand(7, 7, generator=torch.Generator().manual_seed(1)) > 0.5,  # a plain bool tensor
        lambda: torch.randn(2, 1, 7, 7, dtype=torch.float64),  # an additive float mask
    ],
)
def test_fused_and_explicit_paths_agree_forward_and_backward(make_mask):
    mask = make_mask()
    q, k, v = _qkv()
    out_e, _ = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    grads_e = torch.autograd.grad((out_e * torch.arange(5.0, dtype=torch.float64)).sum(), (q, k, v))
    out_f = scaled_dot_product_attention(q, k, v, mask)
    grads_f = torch.autograd.grad((out_f * torch.arange(5.0, dtype=torch.float64)).sum(), (q, k, v))
    assert torch.allclose(out_e, out_f, atol=1e-12)
    for ge, gf in zip(grads_e, grads_f):
        assert torch.allclose(ge, gf, atol=1e-12)


def test_mask_really_masks():
    q, k, v = _qkv()
    _, w = scaled_dot_product_attention(q, k, v, causal_mask(7), return_weights=True)
    allowed = causal_mask(7).dense()
    assert (w[..., ~allowed] == 0).all() and (w[..., allowed] > 0).all()
    unmasked = scaled_dot_product_attention(q, k, v)
    masked = scaled_dot_product_attention(q, k, v, causal_mask(7))
    assert not torch.allclose(unmasked, masked)


def test_matches_torch_sdpa():
    q, k, v = _qkv(S=9)
    mask = torch.rand(7, 9, generator=torch.Generator().manual_seed(3)) > 0.3
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out, _ = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert torch.allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize("return_weights", [True, False])
def test_fully_masked_rows_give_zeros_not_nan(return_weights):
    q, k, v = _qkv()
    mask = torch.ones(7, 7, dtype=torch.bool)
    mask[2] = False  # query 2 may attend nothing
    result = scaled_dot_product_attention(q, k, v, mask, return_weights=return_weights)
    out = result[0] if return_weights else result
    assert torch.equal(out[:, :, 2], torch.zeros_like(out[:, :, 2]))
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[:, :, 2], torch.zeros_like(q.grad[:, :, 2]))


def test_padding_invariance():
    """Padding a sequence does not change the outputs at its real positions."""
    q, k, v = _qkv(B=1, T=5, S=5)
    short = scaled_dot_product_attention(q, k, v)
    pad = lambda x: torch.cat([x, torch.randn(1, 3, 4, 5, dtype=torch.float64)], dim=2)  # noqa: E731
    long = scaled_dot_product_attention(pad(q), pad(k), pad(v), padding_mask(torch.tensor([5]), 9))
    assert torch.allclose(long[:, :, :5], short, atol=1e-12)


def test_position_bias_is_added_to_scores_and_offsets_shift_it():
    q, k, v = _qkv(H=2)
    bias = RelativePositionBias(2, max_distance=3).double()
    with torch.no_grad():
        bias.bias.copy_(torch.randn_like(bias.bias))
    _, w = scaled_dot_product_attention(q, k, v, position_bias=bias, return_weights=True)
    idx = torch.arange(7)
    scores = q @ k.transpose(-2, -1) / math.sqrt(5) + bias(idx[:, None], idx[None, :])
    assert torch.allclose(w, torch.softmax(scores, -1))
    # a relative bias depends only on k - q: shifting both offsets equally changes nothing
    shifted = scaled_dot_product_attention(q, k, v, position_bias=bias, q_offset=10, k_offset=10)
    assert torch.allclose(shifted, scaled_dot_product_attention(q, k, v, position_bias=bias))


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 7, 5\).*\(2, 3, 7, 4\)"):
        scaled_dot_product_attention(torch.randn(2, 3, 7, 5), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4))
    with pytest.raises(ValueError, match="built for"):
        scaled_dot_product_attention(*_qkv(), causal_mask(6))


def _bias_by_definition(rel: RelativePositionBias, T: int, S: int, q_offset: int, k_offset: int) -> torch.Tensor:
    """`(H, T, S)`: the relative bias entry by entry from its definition (offset j - i, clipped)."""
    M, table = rel.max_distance, rel.bias.detach()
    bias = torch.empty(table.shape[1], T, S, dtype=table.dtype)
    for i in range(T):
        for j in range(S):
            bias[:, i, j] = table[max(-M, min(M, (k_offset + j) - (q_offset + i))) + M]
    return bias


@pytest.mark.parametrize("return_weights", [True, False])
@pytest.mark.parametrize("q_offset, k_offset", [(6, 2), (0, 5), (3, 0)])
def test_unequal_position_offsets_against_the_bias_from_its_definition(return_weights, q_offset, k_offset):
    """Queries at absolute positions q_offset.., keys at k_offset..: both offsets must reach the bias."""
    q, k, v = _qkv(H=2, T=5, S=8)
    rel = RelativePositionBias(2, max_distance=4).double()
    with torch.no_grad():
        rel.bias.copy_(torch.randn(rel.bias.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    bias = _bias_by_definition(rel, 5, 8, q_offset, k_offset)
    mask = torch.rand(5, 8, generator=torch.Generator().manual_seed(8)) > 0.4
    mask[:, 3] = True
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.masked_fill(~mask, float("-inf")))
    result = scaled_dot_product_attention(
        q, k, v, mask, position_bias=rel, q_offset=q_offset, k_offset=k_offset, return_weights=return_weights
    )
    out = result[0] if return_weights else result
    assert (out - ref).abs().max() < 1e-12


@pytest.mark.parametrize("return_weights", [True, False])
def test_backward_equals_torch_sdpa_in_float64_with_bias_and_mask(return_weights, cpu_path):
    """Gradients of q, k, v and of the relative bias table equal those through torch's attention."""
    q, k, v = _qkv(H=2, T=6, S=9)
    rel = RelativePositionBias(2, max_distance=3).double()
    with torch.no_grad():
        rel.bias.copy_(torch.randn(rel.bias.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64))
    mask = torch.rand(2, 1, 6, 9, generator=torch.Generator().manual_seed(10)) > 0.4  # per batch element
    mask[..., 0] = True
    table = rel.bias.detach().clone().requires_grad_(True)
    idx = (torch.arange(9)[None, :] + 1 - torch.arange(6)[:, None] - 4).clamp(-3, 3) + 3  # (T, S), offsets 4 and 1
    additive = table[idx].permute(2, 0, 1).masked_fill(~mask, float("-inf"))  # (B, H, T, S)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=additive)
    weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    ref_grads = torch.autograd.grad((ref * weight).sum(), (q, k, v, table))
    result = scaled_dot_product_attention(q, k, v, mask, position_bias=rel, q_offset=4, k_offset=1,
                                          return_weights=return_weights)
    out = result[0] if return_weights else result
    grads = torch.autograd.grad((out * weight).sum(), (q, k, v, rel.bias))
    assert (out - ref).abs().max() < 1e-12
    for g, r in zip(grads, ref_grads):
        assert (g - r).abs().max() < 1e-10 and r.abs().sum() > 0


def test_default_scale_is_one_over_sqrt_head_dim():
    q, k, v = _qkv(D=16, S=9)
    ref = F.scaled_dot_product_attention(q, k, v)  # torch's default scale is 1/sqrt(Dh)
    assert (scaled_dot_product_attention(q, k, v) - ref).abs().max() < 1e-12
    assert (scaled_dot_product_attention(q, k, v, return_weights=True)[0] - ref).abs().max() < 1e-12
    halved = F.scaled_dot_product_attention(q, k, v, scale=0.5 / 4)
    assert (scaled_dot_product_attention(q, k, v, scale=0.5 / 4) - halved).abs().max() < 1e-12


# --------------------------------------------------------------------------- few keys on the CPU


@pytest.fixture(params=["explicit", "kernel"])
def cpu_path(request, monkeypatch):
    """Run a test once with few keys computed by the explicit steps (the CPU's default) and once with
    everything sent to torch's fused kernel."""
    if request.param == "kernel":
        monkeypatch.setattr(core.attention, "CPU_EXPLICIT_MAX_KEYS", 0)
    return request.param


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
@pytest.mark.parametrize("leading", [(2, 3), (4,)])
def test_explicit_steps_equal_the_fused_kernel_forward_and_backward_in_float64(mask_kind, leading):
    """`_explicit_attention` against `F.scaled_dot_product_attention` on the same inputs: T != S (a transpose
    bug fails), a non-default scale, a random bool mask (every row keeps a key) or a random float mask."""
    g = torch.Generator().manual_seed(21)
    q = torch.randn(*leading, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(*leading, 9, 6, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(*leading, 9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(*leading, 5, 9, generator=g) > 0.5
        mask[..., 2] = True
    elif mask_kind == "float":
        mask = torch.randn(5, 9, generator=g, dtype=torch.float64)
    weight = torch.randn(*leading, 5, 4, generator=g, dtype=torch.float64)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.37)
    out = _explicit_attention(q, k, v, mask, 0.0, 0.37)
    assert (out - ref).abs().max() < 1e-12
    ref_grads = torch.autograd.grad((ref * weight).sum(), (q, k, v))
    grads = torch.autograd.grad((out * weight).sum(), (q, k, v))
    for got, want in zip(grads, ref_grads):
        assert (got - want).abs().max() < 1e-12 and want.abs().sum() > 0


def test_explicit_steps_in_bfloat16_autocast_stay_near_float32():
    """Under bfloat16 autocast the explicit steps run in bfloat16 and stay within twice the kernel's own
    bfloat16 error of the float32 result."""
    g = torch.Generator().manual_seed(22)
    q, k, v = (torch.randn(64, 2, 12, 32, generator=g) for _ in range(3))
    exact = F.scaled_dot_product_attention(q, k, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = _explicit_attention(q, k, v, None, 0.0, 32**-0.5)
        theirs = F.scaled_dot_product_attention(q, k, v)
    assert ours.dtype == torch.bfloat16
    assert (ours.float() - exact).abs().max() <= 2 * (theirs.float() - exact).abs().max()


@pytest.mark.parametrize("dtype, autocast, head_dim, grad, keys, kernel_called", [
    # float32 (and float64): 2 keys a channel, at least 32, at most 64, whether or not a backward pass follows
    (torch.float32, False, 8, False, 32, False), (torch.float32, False, 8, True, 33, True),
    (torch.float32, False, 24, True, 48, False), (torch.float32, False, 24, False, 49, True),
    (torch.float32, False, 48, True, 64, False), (torch.float32, False, 48, False, 65, True),
    (torch.float64, False, 8, False, 4, False),
    # bfloat16, autocast included, a forward pass alone: 2 keys a channel, at least 32, at most 128
    (torch.bfloat16, False, 8, False, 32, False), (torch.float32, True, 8, False, 33, True),
    (torch.float32, True, 24, False, 48, False), (torch.float32, True, 24, False, 49, True),
    (torch.bfloat16, False, 80, False, 128, False), (torch.bfloat16, False, 80, False, 129, True),
    # bfloat16 with a backward pass to follow: 6 keys a channel, at least 128, at most 256
    (torch.float32, True, 8, True, 128, False), (torch.float32, True, 8, True, 129, True),
    (torch.float32, True, 24, True, 144, False), (torch.float32, True, 24, True, 145, True),
    (torch.bfloat16, False, 48, True, 256, False), (torch.bfloat16, False, 48, True, 257, True),
])
def test_the_cpu_sends_few_keys_to_the_explicit_steps(dtype, autocast, head_dim, grad, keys, kernel_called,
                                                      monkeypatch):
    """The CPU's rule (`cpu_explicit_max_keys`), at both sides of each boundary: how many keys skip the kernel
    depends on the head size, on the precision the arithmetic runs in and on whether a gradient is wanted."""
    calls, kernel = [], F.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
    g = torch.Generator().manual_seed(keys)
    q, k, v = (torch.randn(2, 2, keys, head_dim, generator=g, dtype=dtype).requires_grad_(grad) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = scaled_dot_product_attention(q, k, v, causal_mask(keys))
    assert bool(calls) == kernel_called
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    tol = 1e-6 if dtype != torch.bfloat16 and not autocast else 5e-2
    assert (out.double() - ref).abs().max() < tol
    if grad:  # the backward pass runs down the path the forward took
        out.float().sum().backward()
        assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_dropout_on_the_explicit_steps_drops_weights_and_keeps_the_expectation():
    """Dropout in training drops attention weights, not outputs, and rescales the rest by 1 / (1 - p). With the
    identity as values the output is the dropped weights: every entry is 0 or twice the weight (p = 0.5)."""
    g = torch.Generator().manual_seed(23)
    q, k = (torch.randn(1, 1, 6, 8, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.eye(6, dtype=torch.float64).expand(1, 1, 6, 6)
    weights = _sdpa(q, k, v, None, 0.0, 0.5)
    torch.manual_seed(0)
    draws = torch.stack([_sdpa(q, k, v, None, 0.5, 0.5) for _ in range(2000)])
    kept = (draws - 2 * weights).abs() < 1e-12
    assert (kept | (draws == 0)).all() and kept.any() and (draws == 0).any()
    assert (draws.mean(0) - weights).abs().max() < 0.05


@pytest.mark.parametrize("return_weights", [True, False])
def test_both_cpu_paths_zero_fully_masked_rows(cpu_path, return_weights):
    q, k, v = _qkv(T=5, S=9)
    mask = torch.rand(5, 9, generator=torch.Generator().manual_seed(24)) > 0.4
    mask[:, 0] = True
    mask[3] = False  # query 3 may attend nothing
    result = scaled_dot_product_attention(q, k, v, mask, return_weights=return_weights)
    out = result[0] if return_weights else result
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.masked_fill(~mask.any(-1, keepdim=True), True))
    assert torch.equal(out[:, :, 3], torch.zeros_like(out[:, :, 3]))
    keep = torch.tensor([0, 1, 2, 4])
    assert (out[:, :, keep] - ref[:, :, keep]).abs().max() < 1e-12
    out.sum().backward()
    assert torch.equal(q.grad[:, :, 3], torch.zeros_like(q.grad[:, :, 3]))
