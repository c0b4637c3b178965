"""The three g2p models: shapes, gradients, padding, stepping equals teacher forcing, additive attention."""

from __future__ import annotations

import pytest
import torch

from core.decoding import greedy_search
from text.g2p.data import BOS, EOS, PAD
from text.g2p.models import (AdditiveAttention, G2PEnsemble, LSTMConfig, TransformerG2PConfig, build_model,
                             default_config)
from text.g2p.train import max_output_length

NUM_LETTERS, NUM_PHONEMES = 30, 42
TINY = {
    "transformer": TransformerG2PConfig(dim=16, heads=2, encoder_layers=2, decoder_layers=2, ffn_dim=32),
    "lstm-attention": LSTMConfig(attention=True, embed_dim=8, hidden=12, attention_dim=10),
    "lstm": LSTMConfig(attention=False, embed_dim=8, hidden=12, attention_dim=10),
}


def tiny(name: str, dtype=torch.float32):
    torch.manual_seed(0)
    model = build_model(name, TINY[name], NUM_LETTERS, NUM_PHONEMES).to(dtype)
    for p in model.parameters():  # random biases too: a dropped or swapped bias must show
        torch.nn.init.normal_(p, std=0.3)
    return model


def batch(S=7, T=5, lengths=(7, 3, 5)):
    g = torch.Generator().manual_seed(1)
    letters = torch.randint(1, NUM_LETTERS, (len(lengths), S), generator=g)
    for b, n in enumerate(lengths):
        letters[b, n:] = PAD
    target_in = torch.randint(3, NUM_PHONEMES, (len(lengths), T), generator=g)
    target_in[:, 0] = BOS
    return letters, torch.tensor(lengths), target_in


@pytest.mark.parametrize("name", list(TINY))
def test_shapes_finite_and_every_parameter_learns(name):
    model = tiny(name).train()
    letters, lengths, target_in = batch()
    logits = model(letters, lengths, target_in)
    assert logits.shape == (3, 5, NUM_PHONEMES)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    for pname, p in model.named_parameters():
        if pname.endswith("embedding.weight") or pname.endswith("embed.weight"):
            continue  # rows of unused tokens get no gradient; the used rows are checked below
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: {pname} gets no gradient"
    emb = model.letter_embedding if hasattr(model, "letter_embedding") else model.src_embed
    assert emb.weight.grad[letters[0]].abs().sum() > 0


@pytest.mark.parametrize("name", list(TINY))
def test_padding_does_not_change_a_word(name):
    model = tiny(name, torch.float64).eval()
    letters, lengths, target_in = batch()
    full = model(letters, lengths, target_in)
    for b, n in enumerate(lengths.tolist()):  # the same word alone, unpadded
        alone = model(letters[b:b + 1, :n], lengths[b:b + 1], target_in[b:b + 1])
        torch.testing.assert_close(full[b:b + 1], alone, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", list(TINY))
def test_stepping_equals_teacher_forcing(name):
    model = tiny(name, torch.float64).eval()
    letters, lengths, target_in = batch()
    full = model(letters, lengths, target_in)
    state = model.start(letters, lengths)
    for t in range(target_in.shape[1]):
        step_logits, state = model.step(target_in[:, t], state)
        torch.testing.assert_close(step_logits, full[:, t], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", list(TINY))
def test_core_greedy_search_equals_a_hand_written_argmax_loop(name):
    model = tiny(name, torch.float64).eval()
    letters, lengths, _ = batch()
    max_len = max_output_length(letters.shape[1])
    result = greedy_search(model.step, model.start(letters, lengths), 3, bos_id=BOS, eos_id=EOS, max_len=max_len)
    state, tokens, rows = model.start(letters, lengths), torch.full((3,), BOS), [[] for _ in range(3)]
    done = [False] * 3
    for _ in range(max_len):
        logits, state = model.step(tokens, state)
        tokens = logits.argmax(-1)
        for b in range(3):
            if not done[b]:
                done[b] = tokens[b].item() == EOS
                if not done[b]:
                    rows[b].append(tokens[b].item())
    assert result.sequences() == rows


def test_an_ensemble_steps_as_the_normalised_mean_of_its_members_teacher_forced():
    members = [tiny("transformer", torch.float64).eval(), tiny("lstm-attention", torch.float64).eval()]
    ensemble = G2PEnsemble(members)
    letters, lengths, target_in = batch()
    forced = torch.stack([torch.log_softmax(m(letters, lengths, target_in), -1) for m in members])  # (2, B, T, V)
    expected = torch.log_softmax(forced.mean(0), -1)
    state = ensemble.start(letters, lengths)
    for t in range(target_in.shape[1]):
        log_probs, state = ensemble.step(target_in[:, t], state)
        torch.testing.assert_close(log_probs, expected[:, t], rtol=1e-9, atol=1e-9)
        assert not torch.allclose(log_probs, forced[0, :, t]) and not torch.allclose(log_probs, forced[1, :, t])
    with pytest.raises(ValueError, match="at least one member"):
        G2PEnsemble([])


def test_additive_attention_is_bahdanau_written_out():
    torch.manual_seed(0)
    attn = AdditiveAttention(query_dim=5, key_dim=4, dim=3).double()
    for p in attn.parameters():
        torch.nn.init.normal_(p)
    query, keys = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 6, 4, dtype=torch.float64)
    allowed = torch.tensor([[True] * 6, [True] * 4 + [False] * 2]).view(2, 1, 6)
    context, weights = attn(query, attn.precompute(keys), keys, allowed)
    W, U, b, v = attn.query.weight, attn.key.weight, attn.key.bias, attn.v.weight
    for i, n in enumerate((6, 4)):
        scores = torch.stack([v @ torch.tanh(W @ query[i] + U @ keys[i, j] + b) for j in range(n)]).squeeze(-1)
        expected = torch.softmax(scores, dim=0)
        torch.testing.assert_close(weights[i, :n], expected)
        assert weights[i, n:].abs().sum() == 0  # padded letters get no weight
        torch.testing.assert_close(context[i], expected @ keys[i, :n])


def test_the_lstm_without_attention_ignores_all_but_its_fixed_vector():
    model = tiny("lstm", torch.float64).eval()
    letters, lengths, target_in = batch()
    state = model.start(letters, lengths)
    state["memory"] = torch.randn_like(state["memory"])  # the per-letter outputs never reach its decoder
    logits, _ = model.step(target_in[:, 0], state)
    ref, _ = model.step(target_in[:, 0], model.start(letters, lengths))
    torch.testing.assert_close(logits, ref)
    assert "keys" not in state


def test_default_configs_and_unknown_names():
    assert default_config("lstm").attention is False and default_config("lstm-attention").attention is True
    with pytest.raises(ValueError, match="unknown model"):
        build_model("gru", LSTMConfig(), NUM_LETTERS, NUM_PHONEMES)
    with pytest.raises(ValueError, match="attention=True"):
        build_model("lstm-attention", LSTMConfig(attention=False), NUM_LETTERS, NUM_PHONEMES)


@pytest.mark.parametrize("name", list(TINY))
def test_bf16_training_loss_and_gradients_follow_fp32(name):
    """--precision bf16 changes the arithmetic, not the objective: same loss and gradient direction as fp32
    (loss within 2%, gradient cosine > 0.98), and the loss reaching the optimiser is float32."""
    from core.lab.harness import bf16_supported
    from text.g2p.data import Batch
    from text.g2p.train import _loss

    cpu = torch.device("cpu")
    if not bf16_supported(cpu):
        with pytest.raises(ValueError, match="no native bfloat16"):
            _loss(tiny(name), None, cpu, 0.1, "bf16")
        return
    letters, lengths, target_in = batch()
    target_out = torch.roll(target_in, -1, dims=1)
    target_out[:, -1] = EOS
    data = Batch(letters=letters, lengths=lengths, target_in=target_in, target_out=target_out, words=["w"] * 3)
    losses, grads = {}, {}
    for precision in ("fp32", "bf16"):
        model = tiny(name).eval()  # no dropout: the two passes see the same network
        loss = _loss(model, data, cpu, 0.1, precision)
        assert loss.dtype == torch.float32
        loss.backward()
        losses[precision] = loss.item()
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    assert torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0) > 0.98
