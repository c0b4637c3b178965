import pytest
import torch

from core.capture import capture_attention
from core.masks import causal_mask, padding_mask, sliding_window_mask, to_key_padding_mask
from core.positional import RelativePositionBias
from core.transformer import TransformerEncoder, TransformerEncoderLayer


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_shapes_gradients_and_no_nan(norm_first):
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 4, 2, dropout=0.0, norm_first=norm_first)
    rel = RelativePositionBias(4, 8)
    x = torch.randn(3, 9, 16)
    out = enc(x, padding_mask(torch.tensor([9, 4, 1]), 9), rel)
    assert out.shape == (3, 9, 16) and torch.isfinite(out).all()
    out[0].sum().backward()
    params = list(enc.parameters()) + list(rel.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert rel.bias.grad.abs().sum() > 0


def test_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    enc = TransformerEncoder(8, 2, 2, dropout=0.0).eval()
    x = torch.randn(1, 5, 8)
    padded = torch.cat([x, torch.randn(1, 4, 8)], dim=1)
    assert torch.allclose(enc(padded, padding_mask(torch.tensor([5]), 9))[:, :5], enc(x), atol=1e-6)


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random: fresh biases are zeros and fresh LayerNorms the identity, which hide
    swapped or dropped biases and misplaced norms."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            p.copy_(1 + 0.3 * noise if "norm" in name and name.endswith("weight") else 0.4 * noise)


# our parameter names -> nn.TransformerEncoderLayer's
_TORCH_NAMES = {
    "attn.": "self_attn.", "ffn.0.": "linear1.", "ffn.3.": "linear2.", "norm1.": "norm1.", "norm2.": "norm2.",
}


def _torch_name(name: str) -> str:
    prefix = next(p for p in _TORCH_NAMES if name.startswith(p))
    return _TORCH_NAMES[prefix] + name[len(prefix):]


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("masking", ["none", "padding", "causal+padding+bias"])
def test_matches_torch_encoder_layer_forward_and_backward(norm_first, masking):
    """All parameters random (LayerNorm too), float64; outputs and the gradients of input and parameters."""
    B, T, D, H = 3, 6, 8, 2
    theirs = torch.nn.TransformerEncoderLayer(D, H, 16, dropout=0.0, activation="gelu", batch_first=True,
                                              norm_first=norm_first, dtype=torch.float64)
    _randomize(theirs, seed=0)
    ours = TransformerEncoderLayer(D, H, ffn_dim=16, dropout=0.0, norm_first=norm_first).double()
    ours.load_state_dict({name: theirs.state_dict()[_torch_name(name)] for name in ours.state_dict()})
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 2, 4])
    mask, position_bias, torch_kw = None, None, {}
    if masking != "none":
        mask = padding_mask(lengths, T)
        torch_kw["src_key_padding_mask"] = to_key_padding_mask(lengths, T)
    if masking == "causal+padding+bias":
        mask = mask & causal_mask(T)
        position_bias = RelativePositionBias(H, max_distance=3).double()
        _randomize(position_bias, seed=1)
        idx = torch.arange(T)
        bias = position_bias(idx[:, None], idx[None, :]).detach()  # (H, T, T)
        torch_kw["src_mask"] = bias.masked_fill(~causal_mask(T).dense(), float("-inf")).repeat(B, 1, 1)
        padded = torch_kw["src_key_padding_mask"]  # torch wants both masks float when one is
        torch_kw["src_key_padding_mask"] = torch.zeros(padded.shape, dtype=torch.float64).masked_fill(
            padded, float("-inf")
        )
    ref = theirs(x, **torch_kw)
    out = ours(x, mask, position_bias)
    assert (out - ref).abs().max() < 1e-10
    weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    names = [name for name, _ in ours.named_parameters()]
    ref_grads = torch.autograd.grad((ref * weight).sum(), [x] + [theirs.get_parameter(_torch_name(n)) for n in names])
    grads = torch.autograd.grad((out * weight).sum(), [x] + [ours.get_parameter(n) for n in names])
    for name, g, r in zip(["x"] + names, grads, ref_grads):
        assert (g - r).abs().max() < 1e-9, name


@pytest.mark.parametrize("norm_first", [True, False])
def test_context_argument_reproduces_full_pass_for_a_query_block(norm_first):
    """Queries 4..7 against the whole sequence as context (so q_offset=4, k_offset=0) equal rows 4..7 of
    the full pass, with a random relative bias and random parameters."""
    layer = TransformerEncoderLayer(8, 2, dropout=0.0, norm_first=norm_first).double().eval()
    rel = RelativePositionBias(2, 4).double()
    _randomize(layer, seed=3)
    _randomize(rel, seed=4)
    x = torch.randn(1, 8, 8, dtype=torch.float64)
    full = layer(x, position_bias=rel)
    part = layer(x[:, 4:], position_bias=rel, context=x, q_offset=4, k_offset=0)
    assert (part - full[:, 4:]).abs().max() < 1e-12
    window = layer(x[:, 4:], position_bias=rel, context=x[:, 2:], q_offset=4, k_offset=2,
                   mask=sliding_window_mask(8, 2, 8).dense()[4:, 2:])  # keys 2.. only: rows see i-2..
    ref = layer(x, sliding_window_mask(8, 2, 8), rel)[:, 4:]
    assert (window - ref).abs().max() < 1e-12


def test_capture_returns_one_map_per_layer():
    enc = TransformerEncoder(8, 2, 3, dropout=0.0)
    x = torch.randn(2, 300, 8)
    with capture_attention(enc) as maps:
        enc(x, sliding_window_mask(300, 4, 4))  # long + windowed: would take the local path uncaptured
    assert [m.name for m in maps] == ["layers.0.attn", "layers.1.attn", "layers.2.attn"]
    assert all(m.weights.shape == (2, 2, 300, 300) for m in maps)
    assert (maps[0].weights[0, 0, 100, 110:] == 0).all()  # the window holds
