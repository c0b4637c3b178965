"""Every attention path on every device this machine has: the CPU always, CUDA where there is one.

Each test runs a path as a user would on that device (float32, or bfloat16 where autocast would; the fused
and blocked kernels) and checks it against the explicit path in float64 on the CPU, forward and backward,
with every parameter random (biases and position biases included) and queries unequal to keys in number
where the path allows it. On a CPU-only machine (CI) these check the fast paths against the float64 oracle;
on a GPU machine (`.ci/device-check`) they also catch a tensor made on the wrong device, a kernel whose mask
or bias handling differs there, or a cache that drifts (docs/core-api.md).
"""

from __future__ import annotations

import pytest
import torch

import core.attention
import core.local
import core.attention
from core.attention import _sdpa, scaled_dot_product_attention
from core.masks import AndMask, DenseMask, causal_mask, padding_mask, sliding_window_mask, window2d_mask
from core.positional import QuadraticPositionBias2d, RelativePositionBias, RelativePositionBias2d
from core.transformer import EncoderDecoder

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
TOL = dict(atol=2e-4, rtol=2e-3)  # float32 (fused kernels, any summation order) against float64


def _random(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _spy(monkeypatch, module, name: str) -> list[int]:
    """Count the calls of `module.name` (a path the dispatcher should take)."""
    calls, real = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _randomise(module: torch.nn.Module, seed: int, scale: float = 0.5) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def _check(device, q, k, v, mask_on, make_bias=None, **kwargs):
    """`scaled_dot_product_attention` on `device` in float32 (its own path) against the explicit path in
    float64 on the CPU (`return_weights=True`): outputs and the gradients of q, k, v and the bias's parameters.
    `mask_on(device)` builds the mask there; `make_bias()` a fresh position bias (random parameters, the same
    on both sides)."""
    dev = torch.device(device)
    upstream = _random(*q.shape[:-1], v.shape[-1], seed=99)

    def run(dtype, where, explicit):
        leaves = [t.detach().to(where, dtype).clone().requires_grad_() for t in (q, k, v)]
        b = None if make_bias is None else _randomise(make_bias(), 5).to(where, dtype)
        out = scaled_dot_product_attention(*leaves, mask_on(where), position_bias=b, return_weights=explicit,
                                           **kwargs)
        out = out[0] if explicit else out
        (out * upstream.to(where, dtype)).sum().backward()
        grads = [t.grad for t in leaves] + ([] if b is None else [p.grad for p in b.parameters()])
        return out.detach(), grads

    want, want_grads = run(torch.float64, torch.device("cpu"), explicit=True)
    got, got_grads = run(torch.float32, dev, explicit=False)
    assert got.device.type == dev.type
    torch.testing.assert_close(got.cpu().double(), want, **TOL)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g.cpu().double(), w, **TOL)


@pytest.mark.parametrize("device", DEVICES)
def test_cross_attention_with_padding_and_a_dense_mask(device):
    B, H, T, S, Dh = 2, 3, 11, 17, 8  # T != S: a transposed score matrix cannot pass
    q, k, v = _random(B, H, T, Dh, seed=1), _random(B, H, S, Dh, seed=2), _random(B, H, S, Dh + 2, seed=3)
    lengths = torch.tensor([17, 9])
    dense = torch.rand(T, S, generator=torch.Generator().manual_seed(4)) > 0.3
    _check(device, q, k, v, lambda where: AndMask(padding_mask(lengths.to(where), S), DenseMask(dense.to(where))))


@pytest.mark.parametrize("device", DEVICES)
def test_causal_self_attention_with_a_relative_bias_and_offsets(device):
    B, H, T, Dh = 2, 4, 24, 8
    q, k, v = (_random(B, H, T, Dh, seed=s) for s in (11, 12, 13))
    def bias():
        return RelativePositionBias(H, max_distance=5)

    # unequal offsets (a streaming chunk) shift the bias; equal ones would hide an offset bug
    _check(device, q, k, v, lambda where: None, bias, q_offset=7, k_offset=3)
    _check(device, q, k, v, lambda where: causal_mask(T), bias)


@pytest.mark.parametrize("device", DEVICES)
def test_sliding_window_takes_the_blocked_path_with_padding_and_bias(device, monkeypatch):
    B, H, T, Dh = 2, 2, 96, 8
    q, k, v = (_random(B, H, T, Dh, seed=s) for s in (21, 22, 23))
    lengths = torch.tensor([96, 70])
    blocked = _spy(monkeypatch, core.local, "local_attention")
    _check(device, q, k, v, lambda where: AndMask(sliding_window_mask(T, 5, 2), padding_mask(lengths.to(where), T)),
           lambda: RelativePositionBias(H, max_distance=6))
    assert blocked == [1]  # the fast side only


@pytest.mark.parametrize("device", DEVICES)
def test_global_attention_with_the_factorised_quadratic_bias(device, monkeypatch):
    """The quadratic 2-D bias runs on the fused kernel as extra query/key features, never as a (T, S) table."""
    B, H, side, Dh = 2, 2, 6, 8
    T = side * side
    q, k, v = (_random(B, H, T, Dh, seed=s) for s in (41, 42, 43))
    lengths = torch.tensor([T, 20])
    factored = _spy(monkeypatch, core.attention, "_fused_with_factors")
    _check(device, q, k, v, lambda where: padding_mask(lengths.to(where), T),
           lambda: QuadraticPositionBias2d(H, width=side))
    assert factored == [1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias_cls", [RelativePositionBias2d, QuadraticPositionBias2d])
def test_2d_window_takes_the_blocked_path_with_a_2d_bias(device, bias_cls, monkeypatch):
    B, H, side, Dh = 1, 2, 32, 8  # 32 x 32: small enough a window for the blocked path
    T = side * side
    q, k, v = (_random(B, H, T, Dh, seed=s) for s in (31, 32, 33))
    init = dict(num_heads=H, max_distance=3, width=side) if bias_cls is RelativePositionBias2d else dict(
        num_heads=H, width=side)
    blocked = _spy(monkeypatch, core.local, "local_attention_2d")
    _check(device, q, k, v, lambda where: window2d_mask(side, side, 5), lambda: bias_cls(**init))
    assert blocked == [1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_decoder_cache_and_greedy_search(device, norm_first):
    """The full pass, the cached steps and greedy search on `device` (float32) against the CPU in float64."""
    torch.manual_seed(0)
    model = EncoderDecoder(9, 7, dim=16, num_heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=24, dropout=0.0,
                           norm_first=norm_first, bos_id=1, eos_id=2)
    _randomise(model, 8, scale=0.4).eval()
    g = torch.Generator().manual_seed(9)
    src, src_lengths = torch.randint(3, 9, (3, 6), generator=g), torch.tensor([6, 2, 4])
    tgt_in = torch.randint(0, 7, (3, 5), generator=g)
    oracle = model.double()
    with torch.no_grad():
        want = oracle.decode(tgt_in, oracle.encode(src, src_lengths), src_lengths)
        want_tokens = oracle.generate(src, src_lengths, max_len=8).tokens
    dev = torch.device(device)
    model = model.float().to(dev)
    src, src_lengths, tgt_in = src.to(dev), src_lengths.to(dev), tgt_in.to(dev)
    with torch.no_grad():
        memory = model.encode(src, src_lengths)
        full = model.decode(tgt_in, memory, src_lengths)
        state, steps = model.init_state(memory, src_lengths), []
        for t in range(tgt_in.shape[1]):
            logits, state = model.step(tgt_in[:, t], state)
            steps.append(logits)
        tokens = model.generate(src, src_lengths, max_len=8).tokens
    torch.testing.assert_close(full.cpu().double(), want, **TOL)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert tokens.device.type == dev.type and torch.equal(tokens.cpu(), want_tokens)


@pytest.mark.parametrize("mask_shape", [None, (13, 3, 5, 7), (1, 3, 5, 7), (5, 7)])
def test_cutting_a_long_batch_into_kernel_calls_changes_nothing(mask_shape, monkeypatch):
    """`_sdpa` with a row limit (what CUDA gets) equals one call: a mask with the full first dim is cut with
    the batch, a broadcast one is shared by every call; 13 × 3 rows in calls of at most 6 rows (2 entries)."""
    monkeypatch.setattr(core.attention, "CPU_EXPLICIT_MAX_KEYS", 0)  # 7 keys would take the explicit steps
    q, k, v = _random(13, 3, 5, 8, seed=51), _random(13, 3, 7, 8, seed=52), _random(13, 3, 7, 4, seed=53)
    mask = None if mask_shape is None else _random(*mask_shape, seed=54)
    one = _sdpa(q, k, v, mask, 0.0, 0.3)
    calls, kernel = [], torch.nn.functional.scaled_dot_product_attention

    def counted(q, *args, **kwargs):
        calls.append(q.shape[0] * q.shape[1])
        return kernel(q, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
    cut = _sdpa(q, k, v, mask, 0.0, 0.3, max_rows=6)
    assert calls == [6] * 6 + [3]  # 13 entries of 3 heads: 2 per call, the last alone
    torch.testing.assert_close(cut, one, atol=1e-12, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_more_rows_than_one_cuda_launch_takes_in_bfloat16(device):
    """70,000 windows of 16 pixels, one head: what vision's 4 × 4 windows make of 1,094 32 × 32 images, more rows
    than one CUDA launch takes (`core.attention.CUDA_MAX_ROWS`; an H200 refused them in bfloat16). bfloat16, as
    autocast trains; rows on both sides of the first cut are checked against float64 on the CPU."""
    rows = 70_000
    q, k, v = (_random(rows, 1, 16, 16, seed=s) * 0.5 for s in (61, 62, 63))
    dev = torch.device(device)
    leaves = [t.to(dev, torch.bfloat16).requires_grad_() for t in (q, k, v)]
    out = scaled_dot_product_attention(*leaves)
    out.float().square().sum().backward()
    picked = torch.tensor([0, 1, 65_534, 65_535, 65_536, rows - 1])
    want_leaves = [t[picked].clone().requires_grad_() for t in (q, k, v)]
    want = scaled_dot_product_attention(*want_leaves, return_weights=True)[0]
    want.square().sum().backward()
    torch.testing.assert_close(out.detach()[picked.to(dev)].cpu().double(), want, atol=3e-2, rtol=3e-2)
    for got, w in zip(leaves, want_leaves):
        torch.testing.assert_close(got.grad[picked.to(dev)].cpu().double(), w.grad, atol=6e-2, rtol=6e-2)
