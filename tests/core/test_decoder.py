"""The Transformer decoder against `nn.TransformerDecoderLayer`, and the encoder–decoder model."""

import pytest
import torch
from torch import nn

from core.capture import capture_attention
from core.masks import to_key_padding_mask
from core.transformer import EncoderDecoder, TransformerDecoder, TransformerDecoderLayer, decoder_masks

B, T, S, D, H, F = 3, 5, 7, 8, 2, 16


def _randomise(module: nn.Module, seed: int = 0) -> None:
    """Every parameter random, biases and LayerNorm gains included (fresh ones are 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)


def _load_from_torch(ours: TransformerDecoderLayer, theirs: nn.TransformerDecoderLayer) -> None:
    ours.self_attn.load_state_dict(theirs.self_attn.state_dict())
    ours.cross_attn.load_state_dict(theirs.multihead_attn.state_dict())
    ours.ffn[0].load_state_dict(theirs.linear1.state_dict())
    ours.ffn[3].load_state_dict(theirs.linear2.state_dict())
    for i in (1, 2, 3):
        getattr(ours, f"norm{i}").load_state_dict(getattr(theirs, f"norm{i}").state_dict())


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(B, S, D, generator=g, dtype=torch.float64, requires_grad=True)
    tgt_lengths, memory_lengths = torch.tensor([5, 3, 4]), torch.tensor([7, 2, 5])
    return x, memory, tgt_lengths, memory_lengths


def _torch_masks(tgt_lengths, memory_lengths):
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)  # torch's bool masks: True = blocked
    return dict(tgt_mask=causal, tgt_key_padding_mask=to_key_padding_mask(tgt_lengths, T),
                memory_key_padding_mask=to_key_padding_mask(memory_lengths, S))


def _check_equal(ours_out, theirs_out, ours_params, theirs_params, inputs):
    assert torch.allclose(ours_out, theirs_out, atol=1e-10)
    probe = torch.randn(ours_out.shape, generator=torch.Generator().manual_seed(9), dtype=ours_out.dtype)
    g_ours = torch.autograd.grad((ours_out * probe).sum(), [*inputs, *ours_params])
    g_theirs = torch.autograd.grad((theirs_out * probe).sum(), [*inputs, *theirs_params])
    for a, b in zip(g_ours, g_theirs):
        assert torch.allclose(a, b, atol=1e-10)


def _ours_params_in_torch_order(layer: TransformerDecoderLayer) -> list[torch.Tensor]:
    return [
        *layer.self_attn.parameters(), *layer.cross_attn.parameters(),
        *layer.ffn[0].parameters(), *layer.ffn[3].parameters(),
        *layer.norm1.parameters(), *layer.norm2.parameters(), *layer.norm3.parameters(),
    ]


def _theirs_params(layer: nn.TransformerDecoderLayer) -> list[torch.Tensor]:
    return [
        *layer.self_attn.parameters(), *layer.multihead_attn.parameters(),
        *layer.linear1.parameters(), *layer.linear2.parameters(),
        *layer.norm1.parameters(), *layer.norm2.parameters(), *layer.norm3.parameters(),
    ]


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_layer_equals_torch_decoder_layer_forward_and_backward(norm_first, activation):
    theirs = nn.TransformerDecoderLayer(D, H, F, dropout=0.0, activation=activation, batch_first=True,
                                        norm_first=norm_first).double()
    _randomise(theirs)
    ours = TransformerDecoderLayer(D, H, ffn_dim=F, dropout=0.0, activation=activation,
                                   norm_first=norm_first).double()
    _load_from_torch(ours, theirs)
    x, memory, tgt_lengths, memory_lengths = _inputs()
    self_mask, memory_mask = decoder_masks(T, S, tgt_lengths, memory_lengths)
    ours_out = ours(x, memory, self_mask, memory_mask)
    theirs_out = theirs(x, memory, **_torch_masks(tgt_lengths, memory_lengths))
    _check_equal(ours_out, theirs_out, _ours_params_in_torch_order(ours), _theirs_params(theirs), (x, memory))


@pytest.mark.parametrize("norm_first", [True, False])
def test_stack_equals_torch_decoder_with_final_norm(norm_first):
    layer = nn.TransformerDecoderLayer(D, H, F, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=norm_first)
    theirs = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(D) if norm_first else None).double()
    _randomise(theirs, seed=4)
    ours = TransformerDecoder(D, H, 2, ffn_dim=F, dropout=0.0, norm_first=norm_first).double()
    for o, t in zip(ours.layers, theirs.layers):
        _load_from_torch(o, t)
    if norm_first:
        ours.norm.load_state_dict(theirs.norm.state_dict())
    x, memory, tgt_lengths, memory_lengths = _inputs(seed=5)
    ours_out = ours(x, memory, tgt_lengths=tgt_lengths, memory_lengths=memory_lengths)
    theirs_out = theirs(x, memory, **_torch_masks(tgt_lengths, memory_lengths))
    _check_equal(ours_out, theirs_out, list(ours.parameters()), list(theirs.parameters()), (x, memory))


def test_decoder_is_causal_and_padding_invariant():
    torch.manual_seed(0)
    dec = TransformerDecoder(D, H, 2, ffn_dim=F, dropout=0.0).double().eval()
    _randomise(dec, seed=2)
    x, memory, _, _ = _inputs()
    x, memory = x.detach()[:1], memory.detach()[:1]
    out = dec(x, memory)
    changed = x.clone()
    changed[:, 3:] += torch.randn(1, T - 3, D, dtype=torch.float64)  # the future changes
    assert torch.allclose(dec(changed, memory)[:, :3], out[:, :3], atol=1e-12)
    assert not torch.allclose(dec(changed, memory)[:, 3:], out[:, 3:])
    # Padding the target and the memory with junk leaves the real positions unchanged.
    x_pad = torch.cat((x, torch.randn(1, 2, D, dtype=torch.float64)), 1)
    mem_pad = torch.cat((memory, torch.randn(1, 4, D, dtype=torch.float64)), 1)
    padded = dec(x_pad, mem_pad, tgt_lengths=torch.tensor([T]), memory_lengths=torch.tensor([S]))
    assert torch.allclose(padded[:, :T], out, atol=1e-12)


def _tiny_model(**kw):
    torch.manual_seed(0)
    return EncoderDecoder(11, 9, dim=16, num_heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=32, **kw)


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_decoder_shapes_gradients_and_no_nan(norm_first):
    model = _tiny_model(norm_first=norm_first, dropout=0.1)
    src, src_lengths = torch.randint(3, 11, (3, 6)), torch.tensor([6, 2, 4])
    tgt_in, tgt_lengths = torch.randint(0, 9, (3, 5)), torch.tensor([5, 1, 3])
    logits = model(src, src_lengths, tgt_in, tgt_lengths)
    assert logits.shape == (3, 5, 9) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_encoder_decoder_source_padding_invariance_and_capture_names():
    model = _tiny_model().eval()
    src, tgt_in = torch.randint(3, 11, (1, 4)), torch.randint(0, 9, (1, 3))
    alone = model(src, torch.tensor([4]), tgt_in)
    padded_src = torch.cat((src, torch.randint(3, 11, (1, 3))), 1)
    with capture_attention(model) as maps:
        padded = model(padded_src, torch.tensor([4]), tgt_in)
    assert torch.allclose(alone, padded, atol=1e-5)
    names = [m.name for m in maps]
    assert "decoder.layers.1.cross_attn" in names and "decoder.layers.0.self_attn" in names
    cross = next(m for m in maps if m.name == "decoder.layers.0.cross_attn").weights
    assert cross.shape == (1, 4, 3, 7) and (cross[..., 4:] == 0).all()


def test_bad_token_ids_are_clear_errors():
    with pytest.raises(ValueError, match="eos_id=9"):
        EncoderDecoder(5, 9, dim=8, num_heads=2, eos_id=9)


def test_encoder_decoder_embeddings_start_on_the_scale_of_the_positions():
    """Scaled by sqrt(D), the token embeddings should be about as large as the sinusoidal positions (|x| <= 1),
    not sqrt(D) times larger (nn.Embedding's N(0, 1) start would drown the positions)."""
    from core.transformer import EncoderDecoder

    torch.manual_seed(0)
    model = EncoderDecoder(50, 40, dim=64, num_heads=4, encoder_layers=1, decoder_layers=1)
    for embedding in (model.src_embed, model.tgt_embed):
        scaled = embedding.weight * 64 ** 0.5
        assert 0.8 < scaled.std().item() < 1.2
