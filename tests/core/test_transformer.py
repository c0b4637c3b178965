import pytest
import torch

from core.capture import capture_attention
from core.masks import padding_mask, sliding_window_mask
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


def test_matches_torch_encoder_layer_with_same_weights():
    torch.manual_seed(0)
    for norm_first in (True, False):
        theirs = torch.nn.TransformerEncoderLayer(8, 2, 32, dropout=0.0, activation="gelu",
                                                  batch_first=True, norm_first=norm_first).double().eval()
        ours = TransformerEncoderLayer(8, 2, ffn_dim=32, dropout=0.0, norm_first=norm_first).double().eval()
        ours.attn.load_state_dict(theirs.self_attn.state_dict())
        ours.ffn[0].load_state_dict(theirs.linear1.state_dict())
        ours.ffn[3].load_state_dict(theirs.linear2.state_dict())
        ours.norm1.load_state_dict(theirs.norm1.state_dict())
        ours.norm2.load_state_dict(theirs.norm2.state_dict())
        x = torch.randn(2, 6, 8, dtype=torch.float64)
        assert torch.allclose(ours(x), theirs(x), atol=1e-10)


def test_context_argument_reproduces_full_pass_for_a_query_block():
    """Queries 4..7 against the whole sequence as context equal rows 4..7 of the full pass."""
    torch.manual_seed(0)
    layer = TransformerEncoderLayer(8, 2, dropout=0.0).eval()
    rel = RelativePositionBias(2, 4)
    x = torch.randn(1, 8, 8)
    full = layer(x, position_bias=rel)
    part = layer(x[:, 4:], position_bias=rel, context=x, q_offset=4, k_offset=0)
    assert torch.allclose(part, full[:, 4:], atol=1e-6)


def test_capture_returns_one_map_per_layer():
    enc = TransformerEncoder(8, 2, 3, dropout=0.0)
    x = torch.randn(2, 300, 8)
    with capture_attention(enc) as maps:
        enc(x, sliding_window_mask(300, 4, 4))  # long + windowed: would take the local path uncaptured
    assert [m.name for m in maps] == ["layers.0.attn", "layers.1.attn", "layers.2.attn"]
    assert all(m.weights.shape == (2, 2, 300, 300) for m in maps)
    assert (maps[0].weights[0, 0, 100, 110:] == 0).all()  # the window holds
