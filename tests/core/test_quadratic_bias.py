"""core.positional.QuadraticPositionBias2d and the fused path it takes: Cordonnier et al.'s quadratic
encoding, run as three extra query/key channels, equals the same bias built in full and added to the scores
(forward and every gradient, float64, random centres and sharpness, T != S, offsets, masks)."""

import math

import pytest
import torch

from core import attention
from core.attention import scaled_dot_product_attention
from core.masks import causal_mask, padding_mask
from core.positional import QuadraticPositionBias2d

WIDTH = 8


def random_bias(heads: int = 3, dtype=torch.float64, sharpness=(0.05, 1.0), seed: int = 0) -> QuadraticPositionBias2d:
    bias = QuadraticPositionBias2d(heads, WIDTH).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every head its own centre (off zero) and sharpness: no symmetry hides a sign
        bias.centre.copy_(torch.randn(heads, 2, generator=g, dtype=dtype) * 2)
        low, high = (math.log(x) for x in sharpness)
        bias.log_sharpness.copy_(low + (high - low) * torch.rand(heads, generator=g, dtype=dtype))
    return bias


def test_the_bias_is_minus_sharpness_times_squared_distance_to_the_centre():
    bias = random_bias()
    q, k = torch.tensor([[9]]), torch.tensor([[3, 27]])  # pixel (1, 1) to (0, 3) and (3, 3)
    got = bias(q, k)  # (H, 1, 2)
    alpha, (cy, cx) = bias.sharpness, bias.centre.T
    want = torch.stack([-alpha * ((-1 - cy) ** 2 + (2 - cx) ** 2), -alpha * ((2 - cy) ** 2 + (2 - cx) ** 2)], -1)
    assert torch.allclose(got[:, 0], want, atol=1e-12)


def test_factors_equal_the_bias_up_to_a_constant_per_query():
    bias = random_bias()
    q_idx, k_idx = torch.arange(13, 50), torch.arange(3, 64)  # T != S, offset grids
    fq, fk = bias.factors(q_idx, k_idx, torch.float64)
    assert fq.shape == (3, 37, 3) and fk.shape == (3, 61, 3)
    diff = fq @ fk.transpose(-1, -2) - bias(q_idx[:, None], k_idx[None, :])  # (H, T, S)
    assert diff.std(-1).max() < 1e-12  # the same shift across a query's row ...
    assert diff[..., 0].std() > 1e-3  # ... that differs between queries (the dropped query-only term)


def _both_paths(bias, q, k, v, **kw):
    fast = scaled_dot_product_attention(q, k, v, position_bias=bias, **kw)
    full, _ = scaled_dot_product_attention(q, k, v, position_bias=bias, return_weights=True, **kw)
    return fast, full


@pytest.mark.parametrize("value_dim", [4, 16, 24])  # values narrower, as wide as, wider than q/k + 3
@pytest.mark.parametrize("case", ["plain", "offsets", "causal", "padding"])
def test_fused_path_equals_the_bias_built_in_full_forward_and_backward(case, value_dim):
    torch.manual_seed(1)
    B, H, T, S, Dh = 2, 3, 40, 56, 13
    q_offset = 16 if case == "offsets" else 0
    if case != "offsets":
        T = S
    bias = random_bias(H)
    q = torch.randn(B, H, T, Dh, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, H, S, Dh, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, H, S, value_dim, dtype=torch.float64, requires_grad=True)
    mask = None
    if case == "causal":
        mask = causal_mask(T)
    elif case == "offsets":  # a bool tensor: each query sees the keys up to its own position
        mask = torch.arange(S)[None, :] <= torch.arange(T)[:, None] + q_offset
    elif case == "padding":
        mask = padding_mask(torch.tensor([S, S - 9]), S)
    calls = []
    bias.register_forward_hook(lambda *args: calls.append(1))
    fast, full = _both_paths(bias, q, k, v, mask=mask, q_offset=q_offset)
    assert len(calls) == 1  # the full bias was built for the explicit path only
    assert (fast - full).abs().max() < 1e-10
    weights = torch.randn_like(fast)
    params = [q, k, v, bias.centre, bias.log_sharpness]
    g_fast = torch.autograd.grad((fast * weights).sum(), params)
    g_full = torch.autograd.grad((full * weights).sum(), params)
    for name, a, b in zip(["q", "k", "v", "centre", "log_sharpness"], g_fast, g_full):
        assert (a - b).abs().max() < 1e-10, name
        assert b.abs().max() > 1e-6, name  # a gradient that exists, not two zeros agreeing


def test_a_sharp_bias_in_float32_is_built_in_full_instead():
    bias = random_bias(2, torch.float32, sharpness=(50.0, 100.0))
    idx = torch.arange(64)
    assert bias.factors(idx, idx, torch.float32) is None  # α ‖p‖² ≈ 1e3 · 25: float32 rounding is too coarse
    assert bias.factors(idx, idx, torch.float64) is not None
    assert random_bias(2, torch.float32).factors(idx, idx, torch.float32) is not None
    q, k, v = (torch.randn(1, 2, 64, 8) for _ in range(3))
    calls = []
    bias.register_forward_hook(lambda *args: calls.append(1))
    fast, full = _both_paths(bias, q, k, v)
    assert len(calls) == 2 and torch.allclose(fast, full, atol=1e-5)
    gentle = random_bias(2, torch.float32)
    gentle.register_forward_hook(lambda *args: calls.append(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bfloat16 would round the factors' products coarsely
        scaled_dot_product_attention(q, k, v, position_bias=gentle)
    assert len(calls) == 3


def test_the_fused_path_hands_the_kernel_no_score_sized_tensor(monkeypatch):
    seen = []
    kernel = attention.F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append((tuple(q.shape), tuple(k.shape), tuple(v.shape), attn_mask))
        return kernel(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    q, k, v = (torch.randn(2, 3, 64, 8, dtype=torch.float64) for _ in range(3))
    scaled_dot_product_attention(q, k, v, position_bias=random_bias())
    width = -(-11 // attention.FACTOR_CHANNEL_MULTIPLE) * attention.FACTOR_CHANNEL_MULTIPLE  # 8 + 3 channels
    assert seen == [((2, 3, 64, width),) * 3 + (None,)]


def test_bad_arguments_are_refused():
    for args, message in [((0, 4), "num_heads >= 1"), ((2, 0), "width >= 1"), ((2, 4, 0.0), "sharpness > 0")]:
        with pytest.raises(ValueError, match=message):
            QuadraticPositionBias2d(*args)
