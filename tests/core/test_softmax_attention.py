"""`softmax_attention`: the one mask-softmax-dropout-sum that every scoring function shares."""

import math

import pytest
import torch
from torch import nn

from core.attention import scaled_dot_product_attention, softmax_attention, softmax_last
from core.capture import capture_attention
from core.masks import causal_mask, padding_mask


def _scores_v(B=2, H=3, T=4, S=6, Dv=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, H, T, S, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, H, S, Dv, generator=g, dtype=torch.float64, requires_grad=True)
    return scores, v


def _reference(scores, v, allowed):
    """Softmax over the allowed entries only, written out: exp / sum of exp."""
    e = torch.exp(scores - scores.amax(-1, keepdim=True)) * allowed
    w = e / e.sum(-1, keepdim=True)
    return w @ v, w


@pytest.mark.parametrize(
    "kind", ["none", "bool", "padding", "padding&bool", "float"],
)
def test_equals_the_written_out_softmax_forward_and_backward(kind):
    scores, v = _scores_v()
    B, H, T, S = scores.shape
    lengths = torch.tensor([6, 3])
    bool_mask = torch.rand(T, S, generator=torch.Generator().manual_seed(3)) > 0.3
    bool_mask[:, 0] = True  # every row keeps a key: the empty-row rule is tested below
    additive = torch.randn(B, 1, T, S, dtype=torch.float64)
    pad = torch.arange(S) < lengths.view(B, 1, 1, 1)  # (B, 1, 1, S)
    mask, allowed, ref_scores = {
        "none": (None, torch.ones(T, S, dtype=torch.bool), scores),
        "bool": (bool_mask, bool_mask, scores),
        "padding": (padding_mask(lengths, S), pad, scores),
        "padding&bool": (padding_mask(lengths, S) & bool_mask, pad & bool_mask, scores),
        "float": (additive, torch.ones(T, S, dtype=torch.bool), scores + additive),
    }[kind]
    out, w = softmax_attention(scores, v, mask, return_weights=True)
    ref_out, ref_w = _reference(ref_scores, v, allowed)
    assert torch.allclose(w, ref_w, atol=1e-12) and torch.allclose(out, ref_out, atol=1e-12)
    assert (w[~allowed.expand_as(w)] == 0).all()
    probe = torch.randn_like(out)
    grads = torch.autograd.grad((out * probe).sum(), (scores, v))
    ref_grads = torch.autograd.grad((ref_out * probe).sum(), (scores, v))
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-12)


def test_the_explicit_dot_product_path_is_scores_then_softmax_attention():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, L, 4, generator=g, dtype=torch.float64) for L in (5, 7, 7))
    mask = padding_mask(torch.tensor([7, 2]), 7)
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    out2, w2 = softmax_attention(q @ k.transpose(-2, -1) / math.sqrt(4), v, mask, return_weights=True)
    assert torch.equal(out, out2) and torch.equal(w, w2)


@pytest.mark.parametrize("how", ["mask", "minus_inf_scores"])
def test_a_row_with_nothing_to_attend_gives_zeros_and_zero_gradients(how):
    scores, v = _scores_v()
    lengths = torch.tensor([6, 0])  # batch element 1 has no keys at all
    if how == "mask":
        out, w = softmax_attention(scores, v, padding_mask(lengths, 6), return_weights=True)
    else:
        blocked = scores.masked_fill(torch.arange(6) >= lengths.view(2, 1, 1, 1), float("-inf"))
        out, w = softmax_attention(blocked, v, return_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert (out[1] == 0).all() and (w[1] == 0).all()
    out.sum().backward()
    assert torch.isfinite(scores.grad).all() and torch.isfinite(v.grad).all()
    assert (scores.grad[1] == 0).all() and (v.grad[1] == 0).all()
    assert scores.grad[0].abs().sum() > 0


def test_three_dim_scores_take_a_padding_mask_bahdanau_style():
    """An additive attention has one score per (query, key) and no heads: (B, T, S)."""
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(3, 1, 5, generator=g, dtype=torch.float64)
    values = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 4])
    out, w = softmax_attention(scores, values, padding_mask(lengths, 5), return_weights=True)
    assert out.shape == (3, 1, 4) and w.shape == (3, 1, 5)
    for b, n in enumerate(lengths.tolist()):
        ref = torch.softmax(scores[b, :, :n], -1)
        assert torch.allclose(w[b, :, :n], ref) and (w[b, :, n:] == 0).all()
        assert torch.allclose(out[b], ref @ values[b, :n])


def test_dropout_only_in_training_and_weights_are_before_dropout():
    scores, v = _scores_v()
    plain = softmax_attention(scores, v)
    assert torch.equal(softmax_attention(scores, v, dropout=0.5, training=False), plain)
    torch.manual_seed(0)
    dropped, w = softmax_attention(scores, v, dropout=0.5, training=True, return_weights=True)
    assert not torch.allclose(dropped, plain)
    assert torch.allclose(w.sum(-1), torch.ones((), dtype=w.dtype))


def test_capture_records_under_the_given_module_only_when_active():
    scores, v = _scores_v()
    model = nn.Sequential(nn.Identity())
    with capture_attention(model) as maps:
        softmax_attention(scores, v, record_as=model[0])
        softmax_attention(scores, v)  # not asked to record
    assert len(maps) == 1 and maps[0].name == "0" and maps[0].weights.shape == scores.shape
    softmax_attention(scores, v, record_as=model[0])  # outside a capture: nothing to record into


def test_bad_shapes_are_clear_errors():
    scores, v = _scores_v()
    with pytest.raises(ValueError, match="share S"):
        softmax_attention(scores, v[..., :5, :])
    with pytest.raises(ValueError, match="T=4 queries and S=6 keys"):
        softmax_attention(scores, v, causal_mask(6))


@pytest.mark.parametrize("S", [1, 2, 3, 4, 9, 15, 16, 17, 31, 40])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_softmax_last_is_the_softmax_at_every_row_length_forward_and_backward(S, dtype):
    g = torch.Generator().manual_seed(S)
    x = (3 * torch.randn(2, 3, 5, S, generator=g)).to(dtype)
    x[0, 1, 2, : S // 2] = float("-inf")  # masked keys, as attention hands them over (never a whole row here)
    grad = torch.randn(x.shape, generator=g).to(dtype)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = softmax_last(ours)
    ref = torch.softmax(theirs, dim=-1)
    tol = {torch.float64: {}, torch.float32: dict(atol=1e-6, rtol=1e-5), torch.bfloat16: dict(atol=1e-2, rtol=1e-2),
           torch.float16: dict(atol=1e-3, rtol=1e-3)}
    torch.testing.assert_close(out, ref, **tol[dtype])
    (out * grad).sum().backward()
    (ref * grad).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, **tol[dtype])
    # rows shorter than one 64-byte vector are padded to it (the result keeps the padded row stride); float64 never
    padded_to = {torch.float32: 16 if 2 <= S < 16 else None, torch.bfloat16: 32 if 4 <= S < 32 else None,
                 torch.float16: 32 if 6 <= S < 32 else None, torch.float64: None}[dtype]
    assert out.stride(-2) == (padded_to or S)


def test_softmax_last_leaves_a_row_with_nothing_to_attend_to_as_the_softmax_does():
    x = torch.full((2, 5), float("-inf"))
    x[1] = torch.arange(5.0)
    torch.testing.assert_close(softmax_last(x), torch.softmax(x, dim=-1), equal_nan=True)
    assert softmax_last(x)[0].isnan().all()  # masked_softmax guards such rows before calling it
