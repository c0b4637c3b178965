"""Incremental decoding with the key/value cache, and greedy / beam search over step functions."""

import functools
import itertools
import math

import pytest
import torch
from torch import nn

from core.decoding import (DecoderState, LayerCache, beam_search, ensemble_step, greedy_search, select_state,
                           state_device)
from core.transformer import EncoderDecoder

BOS, EOS, V = 1, 2, 5


def _model(norm_first=True, seed=0, vocab=V):
    """A tiny encoder–decoder in float64, every parameter random (biases and LayerNorms included)."""
    torch.manual_seed(seed)
    model = EncoderDecoder(7, vocab, dim=16, num_heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=24,
                           dropout=0.0, norm_first=norm_first, bos_id=BOS, eos_id=EOS).double().eval()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.4)
    return model


def _sources():
    g = torch.Generator().manual_seed(7)
    src = torch.randint(3, 7, (3, 6), generator=g)
    return src, torch.tensor([6, 2, 4])


@pytest.mark.parametrize("norm_first", [True, False])
def test_cached_steps_equal_the_full_causal_pass(norm_first):
    model = _model(norm_first)
    src, src_lengths = _sources()
    tgt_in = torch.randint(0, V, (3, 6), generator=torch.Generator().manual_seed(3))
    memory = model.encode(src, src_lengths)
    full = model.decode(tgt_in, memory, src_lengths)  # (B, T, V)
    state = model.init_state(memory, src_lengths)
    cross_k = state.layers[0].cross_k
    for t in range(tgt_in.shape[1]):
        logits, state = model.step(tgt_in[:, t], state)
        assert (logits - full[:, t]).abs().max() < 1e-6
        assert state.position == t + 1 and state.layers[1].self_k.shape == (3, 4, t + 1, 4)
        assert state.layers[0].cross_k is cross_k  # projected once, not per step
    assert cross_k.is_contiguous() and state.layers[0].cross_v.is_contiguous()  # laid out once for every step


@pytest.mark.parametrize("start", [0, 2])
def test_a_chunk_of_new_tokens_is_causal_among_itself(start):
    """Three tokens at once, as a prompt (start 0) or after two cached steps (start 2: the chunk's queries sit at
    positions 2-4, so a mask that forgot the cached prefix's length would hide keys it must see)."""
    model = _model()
    src, src_lengths = _sources()
    tgt_in = torch.randint(0, V, (3, 7), generator=torch.Generator().manual_seed(4))
    memory = model.encode(src, src_lengths)
    full = model.decode(tgt_in, memory, src_lengths)
    state = model.init_state(memory, src_lengths)
    for t in range(start):
        logits, state = model.step(tgt_in[:, t], state)
        assert (logits - full[:, t]).abs().max() < 1e-6
    x = model._embed(model.tgt_embed, tgt_in[:, start:start + 3], offset=start)
    y, state = model.decoder.step(x, state)
    assert (model.output(y) - full[:, start:start + 3]).abs().max() < 1e-6
    for t in range(start + 3, 7):
        logits, state = model.step(tgt_in[:, t], state)
        assert (logits - full[:, t]).abs().max() < 1e-6


def test_each_step_projects_only_the_new_token(monkeypatch):
    model = _model()
    src, src_lengths = _sources()
    state = model.init_state(model.encode(src, src_lengths), src_lengths)
    rows: list[int] = []
    linear = torch.nn.functional.linear

    def counting_linear(x, *args, **kwargs):
        rows.append(x.shape[:-1].numel())
        return linear(x, *args, **kwargs)

    tokens = torch.full((3,), BOS)
    for t in range(5):
        monkeypatch.setattr(torch.nn.functional, "linear", counting_linear)
        logits, state = model.step(tokens, state)
        monkeypatch.setattr(torch.nn.functional, "linear", linear)
        tokens = logits.argmax(-1)
        assert rows and set(rows) == {3}, f"step {t}: linear layers saw {sorted(set(rows))} rows, want B=3"
        rows.clear()


def _naive_greedy(model, src, src_lengths, max_len):
    """Greedy decoding by recomputing the whole prefix each step: no cache, no search code."""
    memory = model.encode(src, src_lengths)
    tgt = torch.full((src.shape[0], 1), BOS)
    total, ended = torch.zeros(src.shape[0], dtype=torch.float64), torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_len):
        best, nxt = torch.log_softmax(model.decode(tgt, memory, src_lengths)[:, -1], -1).max(-1)
        total += best * ~ended
        ended |= nxt == EOS
        tgt = torch.cat((tgt, nxt.unsqueeze(1)), 1)
    return tgt[:, 1:], total


def test_greedy_with_the_cache_equals_recomputing_the_prefix():
    model = _model(seed=0)
    with torch.no_grad():
        model.output.bias[EOS] += 0.7  # words end at different steps, so finished ones leave the batch
    g = torch.Generator().manual_seed(11)
    src, src_lengths = torch.randint(3, 7, (20, 6), generator=g), torch.randint(1, 7, (20,), generator=g)
    result = model.generate(src, src_lengths, max_len=8)
    naive, naive_log_probs = _naive_greedy(model, src, src_lengths, 8)
    assert result.finished.any() and len(set(result.lengths.tolist())) > 2
    assert torch.allclose(result.log_probs, naive_log_probs, atol=1e-9)
    for b in range(20):
        n = int(result.lengths[b])
        assert result.tokens[b, :n].tolist() == naive[b, :n].tolist()
        assert bool(result.finished[b]) == (n < 8 and int(naive[b, n]) == EOS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_of_one_is_greedy(seed):
    model = _model(seed=seed)
    src, src_lengths = _sources()
    greedy = model.generate(src, src_lengths, max_len=5)
    beam = model.generate(src, src_lengths, max_len=5, num_beams=1, length_penalty=0.0)
    beam1 = beam_search(model.step, model.init_state(model.encode(src, src_lengths), src_lengths), 3,
                        bos_id=BOS, eos_id=EOS, max_len=5, num_beams=1)
    assert greedy.sequences() == beam1.sequences() == beam.sequences()
    assert torch.allclose(greedy.log_probs.double(), beam1.log_probs)
    assert torch.equal(greedy.finished, beam1.finished)


def _all_outputs(max_len):
    """Every output of at most `max_len` tokens: n non-EOS tokens then EOS (n < max_len), or max_len
    non-EOS tokens (unfinished). Yields (tokens, finished)."""
    others = [t for t in range(V) if t != EOS]
    for n in range(max_len):
        for seq in itertools.product(others, repeat=n):
            yield list(seq) + [EOS], True
    for seq in itertools.product(others, repeat=max_len):
        yield list(seq), False


def _brute_force_best(model, src, src_lengths, max_len, length_penalty):
    """The best output per source, each candidate scored by one teacher-forced pass."""
    outputs = list(_all_outputs(max_len))
    best = []
    for b in range(src.shape[0]):
        n = len(outputs)
        tgt_in = torch.full((n, max_len), BOS)
        target = torch.full((n, max_len), EOS)
        lengths = torch.tensor([len(seq) for seq, _ in outputs])
        for i, (seq, _) in enumerate(outputs):
            tgt_in[i, 1 : len(seq)] = torch.tensor(seq[:-1], dtype=torch.long)
            target[i, : len(seq)] = torch.tensor(seq)
        memory = model.encode(src[b : b + 1, : src_lengths[b]]).expand(n, -1, -1)
        logp = torch.log_softmax(model.decode(tgt_in, memory), -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        logp = (logp * (torch.arange(max_len) < lengths.unsqueeze(1))).sum(1)  # (n,)
        score = logp / lengths.double() ** length_penalty
        i = int(score.argmax())
        best.append((outputs[i][0], float(score[i])))
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_finds_the_brute_force_best(length_penalty):
    model = _model(seed=3)
    src, src_lengths = _sources()
    max_len = 3
    wide = V ** (max_len - 1)  # every extension of every prefix ranks within the beam: exhaustive
    with torch.no_grad():
        best = _brute_force_best(model, src, src_lengths, max_len, length_penalty)
        result = model.generate(src, src_lengths, max_len=max_len, num_beams=wide, length_penalty=length_penalty)
        narrow = model.generate(src, src_lengths, max_len=max_len, num_beams=3, length_penalty=length_penalty)
    for b, (seq, score) in enumerate(best):
        got = result.tokens[b, : len(seq)].tolist()
        assert got == seq, (b, got, seq)
        assert result.scores[b].item() == pytest.approx(score, abs=1e-9)
        assert narrow.scores[b].item() <= score + 1e-9  # a narrow beam can only do as well


def test_batched_padded_sources_search_as_if_alone():
    model = _model(seed=3)
    with torch.no_grad():
        model.output.bias[EOS] += 0.6  # sources finish at different steps, so finished ones leave the batch
    g = torch.Generator().manual_seed(11)
    src, src_lengths = torch.randint(3, 7, (12, 6), generator=g), torch.randint(1, 7, (12,), generator=g)
    rows = []

    def step(tokens, state):
        rows.append(len(tokens))
        return model.step(tokens, state)

    state = model.init_state(model.encode(src, src_lengths), src_lengths)
    together = beam_search(step, state, 12, bos_id=BOS, eos_id=EOS, max_len=8, num_beams=3)
    assert rows[0] == 12 and rows[1] == 36 and rows[-1] < 36  # done sources left the batch
    assert len(set(together.lengths.tolist())) > 2
    for b in range(12):
        alone = model.generate(src[b : b + 1, : src_lengths[b]], None, max_len=8, num_beams=3)
        assert alone.sequences() == [together.sequences()[b]]
        assert alone.scores[0].item() == pytest.approx(together.scores[b].item(), abs=1e-9)
        assert alone.finished[0] == together.finished[b]


# --- a scripted step function: the searches know nothing about Transformers --------------------

A, Bt = 3, 4  # two ordinary tokens


def _scripted_step(tokens, state):
    """Next-token probabilities from (position, last token); state: (position (N,), last (N,)) tuple."""
    position, _ = state
    probs = torch.full((len(tokens), V), 1e-6, dtype=torch.float64)
    for i, (pos, tok) in enumerate(zip(position.tolist(), tokens.tolist())):
        if pos == 0:
            probs[i, EOS], probs[i, A] = 0.5, 0.5  # stop now, or ...
        elif tok == A:
            probs[i, Bt], probs[i, EOS] = 0.9, 0.1  # ... go on: A B EOS has 0.5·0.9·0.9
        else:
            probs[i, EOS], probs[i, Bt] = 0.9, 0.1
    return probs.log(), (position + 1, tokens)


def test_length_normalisation_changes_the_winner_and_eos_is_handled():
    state = (torch.zeros(1, dtype=torch.long), torch.full((1,), BOS))
    raw = beam_search(_scripted_step, state, 1, bos_id=BOS, eos_id=EOS, max_len=6, num_beams=2)
    assert raw.sequences() == [[]] and raw.finished.tolist() == [True]
    assert raw.log_probs.item() == pytest.approx(math.log(0.5), abs=1e-5)
    normed = beam_search(_scripted_step, state, 1, bos_id=BOS, eos_id=EOS, max_len=6, num_beams=2,
                         length_penalty=1.0)
    assert normed.sequences() == [[A, Bt]] and normed.tokens[0].tolist() == [A, Bt, EOS]
    assert normed.scores.item() == pytest.approx(math.log(0.5 * 0.9 * 0.9) / 3, abs=1e-5)


def test_a_beam_stays_full_when_its_best_extension_ends():
    """K=1: EOS is the best first token, yet one live hypothesis must go on; it wins once normalised."""

    def step(tokens, state):
        logits, state = _scripted_step(tokens, state)
        first = state[0] == 1
        logits[first, EOS], logits[first, A] = math.log(0.6), math.log(0.4)
        return logits, state

    state = (torch.zeros(1, dtype=torch.long), torch.full((1,), BOS))
    result = beam_search(step, state, 1, bos_id=BOS, eos_id=EOS, max_len=6, num_beams=1, length_penalty=1.0)
    assert result.sequences() == [[A, Bt]]


def test_greedy_stops_at_eos_per_source_and_at_max_len():
    batch_sizes = []

    def step(tokens, state):
        position, never_stop = state
        batch_sizes.append(len(tokens))
        logits = torch.zeros(len(tokens), V)
        logits[:, A] = 1.0
        logits[(position == 1) & ~never_stop, EOS] = 5.0  # source 0 ends after one token
        return logits, (position + 1, never_stop)

    state = (torch.zeros(2, dtype=torch.long), torch.tensor([False, True]))
    result = greedy_search(step, state, 2, bos_id=BOS, eos_id=EOS, max_len=4)
    assert result.tokens.tolist() == [[A, EOS, EOS, EOS], [A, A, A, A]]
    assert result.lengths.tolist() == [1, 4] and result.finished.tolist() == [True, False]
    assert result.sequences() == [[A], [A, A, A, A]]
    assert batch_sizes == [2, 2, 1, 1]  # the finished source left the batch
    step_logp = torch.log_softmax(torch.tensor([0.0, 0, 0, 1, 0]), -1)[A]
    assert result.log_probs[1].item() == pytest.approx(4 * step_logp.item(), abs=1e-6)


class _LSTMDecoder(nn.Module):
    """An LSTM decoder with dot-product attention over encoder states: the protocol with a tuple state."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.embed, self.cell, self.out = nn.Embedding(V, 8), nn.LSTMCell(8 + 8, 8), nn.Linear(16, V)

    def step(self, tokens, state):
        h, c, context, enc = state  # (N, 8), (N, 8), (N, 8), (N, S, 8)
        h, c = self.cell(torch.cat((self.embed(tokens), context), -1), (h, c))
        weights = torch.softmax((enc @ h.unsqueeze(-1)).squeeze(-1), -1)  # (N, S)
        context = (weights.unsqueeze(-1) * enc).sum(1)  # (N, 8)
        return self.out(torch.cat((h, context), -1)), (h, c, context, enc)


def test_an_lstm_step_function_uses_the_same_searches():
    dec = _LSTMDecoder().double().eval()
    enc = torch.randn(2, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    zeros = torch.zeros(2, 8, dtype=torch.float64)
    state = (zeros, zeros, zeros, enc)
    with torch.no_grad():
        greedy = greedy_search(dec.step, state, 2, bos_id=BOS, eos_id=EOS, max_len=4)
        beam1 = beam_search(dec.step, state, 2, bos_id=BOS, eos_id=EOS, max_len=4, num_beams=1)
        wide = beam_search(dec.step, state, 2, bos_id=BOS, eos_id=EOS, max_len=3, num_beams=V**2)
        assert greedy.sequences() == beam1.sequences()
        for b in range(2):  # brute force, scoring every output by stepping the decoder alone
            one = select_state(state, torch.tensor([b]))
            best = None
            for seq, _ in _all_outputs(3):
                s, total, prev = one, 0.0, BOS
                for tok in seq:
                    logits, s = dec.step(torch.tensor([prev]), s)
                    total += torch.log_softmax(logits, -1)[0, tok].item()
                    prev = tok
                best = max(best or (total, seq), (total, seq))
            assert wide.tokens[b, : len(best[1])].tolist() == best[1]
            assert wide.log_probs[b].item() == pytest.approx(best[0], abs=1e-9)


def test_select_state_handles_nested_structures_and_refuses_others():
    state = {"a": (torch.arange(3), [torch.arange(3) * 2, None]), "n": 7}
    picked = select_state(state, torch.tensor([2, 0]))
    assert picked["a"][0].tolist() == [2, 0] and picked["a"][1][0].tolist() == [4, 0] and picked["n"] == 7
    assert isinstance(select_state(DecoderState([], torch.tensor([3, 4]), 2), torch.tensor([1])), DecoderState)
    with pytest.raises(TypeError, match="index_select"):
        select_state(object(), torch.tensor([0]))


def test_bad_search_arguments_are_clear_errors():
    state = (torch.zeros(1, dtype=torch.long), torch.full((1,), BOS))
    with pytest.raises(ValueError, match="max_len"):
        greedy_search(_scripted_step, state, 1, bos_id=BOS, eos_id=EOS, max_len=0)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(_scripted_step, state, 1, bos_id=BOS, eos_id=EOS, max_len=3, num_beams=0)
    with pytest.raises(ValueError, match=r"scores \(N=2, V\)"):
        greedy_search(lambda t, s: (torch.zeros(1, V), s), state, 2, bos_id=BOS, eos_id=EOS, max_len=3)


# --- ensembles


def _ensemble_log_probs(models, src, src_lengths, tgt_in):
    """(B, T, V) the ensemble's log-probabilities, the normalised mean of the members', every prefix by one
    teacher-forced pass per member."""
    return torch.log_softmax(torch.stack([torch.log_softmax(m.decode(tgt_in, m.encode(src, src_lengths), src_lengths), -1)
                                          for m in models]).mean(0), -1)


def _ensemble(models, src, src_lengths):
    step = ensemble_step([m.step for m in models])
    return step, tuple(m.init_state(m.encode(src, src_lengths), src_lengths) for m in models)


def test_ensemble_greedy_equals_recomputing_every_members_prefix():
    models = [_model(seed=0), _model(seed=5, norm_first=False)]
    with torch.no_grad():
        for m in models:
            m.output.bias[EOS] += 0.7  # sources finish at different steps: the tuple state is cut down
    g = torch.Generator().manual_seed(11)
    src, src_lengths = torch.randint(3, 7, (20, 6), generator=g), torch.randint(1, 7, (20,), generator=g)
    step, state = _ensemble(models, src, src_lengths)
    result = greedy_search(step, state, 20, bos_id=BOS, eos_id=EOS, max_len=8)
    tgt, total, ended = torch.full((20, 1), BOS), torch.zeros(20, dtype=torch.float64), torch.zeros(20, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(8):
            best, nxt = _ensemble_log_probs(models, src, src_lengths, tgt)[:, -1].max(-1)
            total += best * ~ended
            ended |= nxt == EOS
            tgt = torch.cat((tgt, nxt.unsqueeze(1)), 1)
    assert result.finished.any() and len(set(result.lengths.tolist())) > 2
    assert torch.allclose(result.log_probs, total, atol=1e-9)
    singles = [m.generate(src, src_lengths, max_len=8).sequences() for m in models]
    assert result.sequences() != singles[0] and result.sequences() != singles[1]  # the ensemble is neither member
    for b in range(20):
        n = int(result.lengths[b])
        assert result.tokens[b, :n].tolist() == tgt[b, 1 : n + 1].tolist()


def test_ensemble_beam_search_finds_the_brute_force_best():
    models = [_model(seed=3), _model(seed=4)]
    src, src_lengths = _sources()
    max_len = 3
    outputs = list(_all_outputs(max_len))
    n = len(outputs)
    tgt_in, target = torch.full((n, max_len), BOS), torch.full((n, max_len), EOS)
    for i, (seq, _) in enumerate(outputs):
        tgt_in[i, 1 : len(seq)] = torch.tensor(seq[:-1], dtype=torch.long)
        target[i, : len(seq)] = torch.tensor(seq)
    lengths = torch.tensor([len(seq) for seq, _ in outputs])
    step, state = _ensemble(models, src, src_lengths)
    with torch.no_grad():
        result = beam_search(step, state, 3, bos_id=BOS, eos_id=EOS, max_len=max_len, num_beams=V ** (max_len - 1))
        for b in range(3):
            logp = _ensemble_log_probs(models, src[b : b + 1, : src_lengths[b]].expand(n, -1), None, tgt_in)
            logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            total = (logp * (torch.arange(max_len) < lengths.unsqueeze(1))).sum(1)  # (n,)
            i = int(total.argmax())
            assert result.tokens[b, : len(outputs[i][0])].tolist() == outputs[i][0]
            assert result.log_probs[b].item() == pytest.approx(float(total[i]), abs=1e-9)


def test_an_ensemble_of_one_is_the_member():
    model = _model(seed=2)
    src, src_lengths = _sources()
    step, state = _ensemble([model], src, src_lengths)
    alone = model.generate(src, src_lengths, max_len=5, num_beams=3)
    ensemble = beam_search(step, state, 3, bos_id=BOS, eos_id=EOS, max_len=5, num_beams=3)
    assert ensemble.sequences() == alone.sequences()
    assert torch.allclose(ensemble.scores, alone.scores)


def test_an_ensemble_averages_log_probabilities_not_probabilities():
    # member a is sure of token 0; member b splits between 1 and 3. Mean probability prefers 0 (0.46),
    # mean log-probability prefers 1: the product of experts keeps a token only both members allow.
    a = torch.tensor([[0.9, 0.05, 0.0, 0.05]]).log()
    b = torch.tensor([[0.02, 0.49, 0.0, 0.49]]).log()
    b[0, 1] += 1e-3  # break the tie between 1 and 3
    step = ensemble_step([lambda t, s: (a, s), lambda t, s: (b + 5.0, s)])  # b as unnormalised logits
    scores, states = step(torch.tensor([BOS]), ("x", "y"))
    assert states == ("x", "y")
    assert torch.allclose(scores, torch.log_softmax((torch.log_softmax(a, -1) + torch.log_softmax(b, -1)) / 2, -1))
    assert torch.allclose(scores.exp().sum(), torch.tensor(1.0))
    assert int(scores.argmax()) == 1


def test_bad_ensembles_are_clear_errors():
    with pytest.raises(ValueError, match="at least one"):
        ensemble_step([])
    step = ensemble_step([lambda t, s: (torch.zeros(1, 4), s), lambda t, s: (torch.zeros(1, 5), s)])
    with pytest.raises(ValueError, match="share the vocabulary"):
        step(torch.tensor([BOS]), (None, None))
    with pytest.raises(ValueError, match="tuple of 2 member states"):
        step(torch.tensor([BOS]), [None, None])


class _Stop(Exception):
    pass


@pytest.mark.parametrize("search", ["greedy", "beam"])
@pytest.mark.parametrize("told", [None, "cpu"])
def test_the_searches_make_their_tokens_on_the_states_device_unless_told(search, told):
    # a state on another device ("meta" stands in for a GPU on a machine without one): the first tokens must be
    # made there, as a step function on that device needs them, unless the caller names a device
    meta = torch.zeros(3, 2, 0, 4, device="meta")
    state = DecoderState([LayerCache(meta, meta, meta, meta)], None, 0)
    assert state_device(state) == torch.device("meta")
    assert state_device({"h": (None, torch.zeros(1, device="meta"))}) == torch.device("meta")
    assert state_device({"nothing": None}) == torch.device("cpu")
    seen = []

    def step(tokens, state):
        seen.append(tokens.device)
        raise _Stop

    run = greedy_search if search == "greedy" else functools.partial(beam_search, num_beams=2)
    with pytest.raises(_Stop):
        run(step, state, 3, bos_id=1, eos_id=2, max_len=4, device=told)
    assert seen == [torch.device(told or "meta")]
