import pytest
import torch

from core.attention import scaled_dot_product_attention
from core.local import local_attention
from core.masks import causal_mask, chunked_mask, padding_mask, sliding_window_mask
from core.positional import RelativePositionBias

T = 203  # not a multiple of any block size


def _qkv(B=2, H=2, D=8):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, H, T, D, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]


MASKS = {
    "window": lambda: sliding_window_mask(T, 7, 3),
    "window-symmetric": lambda: sliding_window_mask(T, 16, 16),
    "chunked": lambda: chunked_mask(T, 10, 2),
    "chunked-lookahead": lambda: chunked_mask(T, 8, 1, right=3),
    "window+padding": lambda: sliding_window_mask(T, 5, 5) & padding_mask(torch.tensor([T, 120])),
    "chunked+padding": lambda: chunked_mask(T, 16, 1) & padding_mask(torch.tensor([90, T])),
}


@pytest.mark.parametrize("name", sorted(MASKS))
def test_local_equals_dense_forward_and_backward(name):
    mask = MASKS[name]()
    q, k, v = _qkv()
    dense = scaled_dot_product_attention(q, k, v, mask.dense())
    local = local_attention(q, k, v, mask)
    assert (local - dense).abs().max() < 1e-10
    w = torch.randn_like(dense)
    g_dense = torch.autograd.grad((dense * w).sum(), (q, k, v))
    g_local = torch.autograd.grad((local * w).sum(), (q, k, v))
    for a, b in zip(g_dense, g_local):
        assert (a - b).abs().max() < 1e-10


@pytest.mark.parametrize("q_offset, k_offset", [(0, 0), (40, 40), (11, 4), (3, 9)])
@pytest.mark.parametrize("name", ["window", "chunked+padding"])
def test_local_with_relative_bias_equals_dense_forward_and_backward(name, q_offset, k_offset):
    """A random relative bias at (unequal) offsets: outputs and the gradients of q, k, v and the table."""
    q, k, v = _qkv()
    bias = RelativePositionBias(2, max_distance=8).double()
    with torch.no_grad():
        bias.bias.copy_(torch.randn(bias.bias.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    mask = MASKS[name]()
    kw = dict(position_bias=bias, q_offset=q_offset, k_offset=k_offset)
    dense = scaled_dot_product_attention(q, k, v, mask.dense(), **kw)
    local = local_attention(q, k, v, mask, **kw)
    assert (local - dense).abs().max() < 1e-10
    w = torch.randn(dense.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    g_dense = torch.autograd.grad((dense * w).sum(), (q, k, v, bias.bias))
    g_local = torch.autograd.grad((local * w).sum(), (q, k, v, bias.bias))
    for a, b in zip(g_dense, g_local):
        assert (a - b).abs().max() < 1e-10
    assert g_dense[-1].abs().sum() > 0


def test_local_validates_its_inputs():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="needs a core.masks.Mask"):
        local_attention(q, k, v, sliding_window_mask(T, 2, 2).dense())
    with pytest.raises(ValueError, match="batch of 3 but attention has a batch of 2"):
        local_attention(q, k, v, sliding_window_mask(T, 2, 2) & padding_mask(torch.tensor([T, 5, 9])))
    with pytest.raises(ValueError, match="one length and batch"):
        local_attention(q, k[:1], v[:1], sliding_window_mask(T, 2, 2))
    with pytest.raises(ValueError, match="block >= 1"):
        local_attention(q, k, v, sliding_window_mask(T, 2, 2), span=(0, 2, 2))


def test_local_path_is_chosen_automatically_for_long_windows(monkeypatch):
    import core.local

    calls = []
    real = core.local.local_attention
    monkeypatch.setattr(core.local, "local_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q, k, v = _qkv()
    scaled_dot_product_attention(q, k, v, sliding_window_mask(T, 4, 4))
    assert calls == [1]
    scaled_dot_product_attention(q, k, v, sliding_window_mask(T, 4, 4), return_weights=True)  # needs weights
    scaled_dot_product_attention(q, k, v, sliding_window_mask(T, 100, 100))  # window too wide to pay off
    assert calls == [1]


def test_padded_queries_with_no_keys_give_zeros_not_nan():
    q, k, v = _qkv()
    mask = sliding_window_mask(T, 2, 2) & padding_mask(torch.tensor([T, 50]))
    out = local_attention(q, k, v, mask)
    assert torch.equal(out[1, :, 60:], torch.zeros_like(out[1, :, 60:]))  # their whole window is padding
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_unbounded_mask_is_refused():
    with pytest.raises(ValueError, match="unbounded"):
        local_attention(*_qkv(), causal_mask(T))


def test_memory_of_local_path_is_linear_in_length():
    """The largest tensor the local path allocates grows linearly with T (no T×T anywhere)."""
    from torch.profiler import ProfilerActivity, profile

    def peak_bytes(length):
        q = torch.randn(1, 1, length, 8)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            local_attention(q, q, q, sliding_window_mask(length, 8, 8))
        return max(e.cpu_memory_usage for e in prof.key_averages())

    small, large = peak_bytes(2048), peak_bytes(8192)
    assert large < 5 * small  # 4× the length; quadratic would be 16×
