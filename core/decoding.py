"""Generating sequences: the decoder's key/value cache, and greedy and beam search over any step function.

A decoder that emits one token at a time need not recompute its past. At step t the Transformer
decoder's self-attention needs the keys and values of tokens 0..t, and tokens 0..t-1 have not changed:
`LayerCache` keeps them, so each step projects only the new token and appends it. The cross-attention
keys and values are projections of the encoder output, the same at every step, so they are computed once
(`TransformerDecoder.init_state`).

The searches know nothing about Transformers. They drive a *step function*:

    step(tokens, state) -> (scores, state)
        tokens  LongTensor (N,): the token each of the N running hypotheses emitted last (BOS first)
        state   whatever the decoder carries between steps, batch-first (N, ...)
        scores  (N, V): logits or log-probabilities of the next token (the search applies log_softmax,
                which leaves log-probabilities unchanged)

and reorder the state with `select_state(state, index)` whenever hypotheses are dropped, kept or
duplicated. `select_state` handles a tensor, a (nested) tuple/list/dict of tensors (batch on dim 0), None,
and any object with an `index_select(index)` method (`DecoderState`). An LSTM decoder's state works as is
when batch first, e.g. `(h, c, encoder_outputs, source_lengths)` with `h, c (N, hidden)` from `nn.LSTMCell`
(`nn.LSTM`'s `(layers, N, hidden)` must be transposed, or it would be reordered along the layers);
`EncoderDecoder.step` is a step function too. `ensemble_step` makes one step function of several models':
their next-token log-probabilities averaged, their states carried side by side.

Legend: B sources, K beams, N = B·K running hypotheses, V vocabulary, L output length, H heads,
t tokens decoded so far, S memory length, Dh head dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from core.masks import PaddingMask, padding_mask

__all__ = [
    "LayerCache",
    "DecoderState",
    "SearchResult",
    "StepFunction",
    "select_state",
    "state_device",
    "greedy_search",
    "beam_search",
    "ensemble_step",
]

#: `step(tokens (N,), state) -> (scores (N, V), state)`; see the module docstring.
StepFunction = Callable[[Tensor, Any], "tuple[Tensor, Any]"]


@dataclass
class LayerCache:
    """One decoder layer's cached keys and values, already split into heads.

    Shapes:
        self_k, self_v `(N, H, t, Dh)`: the self-attention keys/values of the t tokens decoded so far.
        cross_k, cross_v `(N, H, S, Dh)`: the cross-attention keys/values of the memory (fixed).
    """

    self_k: Tensor
    self_v: Tensor
    cross_k: Tensor
    cross_v: Tensor

    def index_select(self, index: Tensor) -> LayerCache:
        """The cache of hypotheses `index` (LongTensor `(N',)`), in that order."""
        return LayerCache(*(t.index_select(0, index) for t in (self.self_k, self.self_v, self.cross_k, self.cross_v)))


@dataclass
class DecoderState:
    """What `TransformerDecoder.step` carries from one step to the next.

    Attributes:
        layers (list[LayerCache]): one cache per decoder layer.
        memory_lengths (LongTensor or None): `(N,)` true memory lengths (None: no memory padding).
        position (int): tokens decoded so far (the absolute position of the next one).
    """

    layers: list[LayerCache]
    memory_lengths: Tensor | None
    position: int

    def memory_mask(self) -> PaddingMask | None:
        """The cross-attention padding mask, `(N, 1, 1, S)` when dense."""
        if self.memory_lengths is None:
            return None
        return padding_mask(self.memory_lengths, self.layers[0].cross_k.shape[-2] if self.layers else None)

    def index_select(self, index: Tensor) -> DecoderState:
        """The state of hypotheses `index` (LongTensor `(N',)`), in that order."""
        lengths = None if self.memory_lengths is None else self.memory_lengths.index_select(0, index)
        return DecoderState([c.index_select(index) for c in self.layers], lengths, self.position)


def select_state(state: Any, index: Tensor) -> Any:
    """Keep (and reorder, or repeat) hypotheses `index` of a batch-first decoder state.

    Args:
        state: a tensor `(N, ...)`, None, a (nested) tuple/list/dict of those, or an object with an
            `index_select(index)` method.
        index (LongTensor): `(N',)` rows to keep, in order.
    """
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.index_select(0, index)
    if hasattr(state, "index_select"):
        return state.index_select(index)
    if isinstance(state, tuple):
        return type(state)(*(select_state(s, index) for s in state)) if hasattr(state, "_fields") else tuple(
            select_state(s, index) for s in state
        )
    if isinstance(state, list):
        return [select_state(s, index) for s in state]
    if isinstance(state, dict):
        return {k: select_state(v, index) for k, v in state.items()}
    if isinstance(state, (int, float, str, bool)):
        return state
    raise TypeError(
        f"select_state cannot reorder a {type(state).__name__}; give it an index_select(index) method or "
        "use tensors / tuples / lists / dicts of tensors with the batch on dim 0"
    )


def state_device(state: Any) -> torch.device:
    """Where a decoder state lives: the device of the first tensor found in it (a tensor, an object with
    tensor attributes such as `DecoderState`, or a nested tuple/list/dict of those), else the CPU. The searches
    make their token tensors there unless told otherwise."""
    found = _first_tensor(state, depth=8)
    return torch.device("cpu") if found is None else found.device


def _first_tensor(state: Any, depth: int) -> Tensor | None:
    if isinstance(state, Tensor):
        return state
    if depth == 0:
        return None
    if isinstance(state, dict):
        items = state.values()
    elif isinstance(state, (tuple, list)):
        items = state
    elif hasattr(state, "__dict__"):
        items = vars(state).values()
    else:
        return None
    for item in items:
        found = _first_tensor(item, depth - 1)
        if found is not None:
            return found
    return None


@dataclass
class SearchResult:
    """The sequences a search found, one per source.

    Attributes:
        tokens (LongTensor): `(B, L)` generated tokens (BOS not included); EOS where it was emitted,
            and `eos_id` fills the positions after it.
        lengths (LongTensor): `(B,)` output length, EOS not counted.
        log_probs (Tensor): `(B,)` sum of the token log-probabilities, EOS included.
        scores (Tensor): `(B,)` the ranking score, `log_probs / (tokens incl. EOS) ** length_penalty`
            (equal to `log_probs` for greedy search and `length_penalty=0`).
        finished (BoolTensor): `(B,)` the sequence ended with EOS within `max_len` steps.
    """

    tokens: Tensor
    lengths: Tensor
    log_probs: Tensor
    scores: Tensor
    finished: Tensor

    def sequences(self) -> list[list[int]]:
        """The outputs as lists of token ids, EOS and filler removed."""
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths.tolist())]


def _check_search_args(batch_size: int, max_len: int, bos_id: int, eos_id: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1 (tokens generated, EOS included), got {max_len}")
    if bos_id < 0 or eos_id < 0:
        raise ValueError(f"bos_id and eos_id must be token ids >= 0, got {bos_id} and {eos_id}")


def _log_probs(scores: Tensor, N: int) -> Tensor:
    if scores.dim() != 2 or scores.shape[0] != N:
        raise ValueError(f"the step function must return scores (N={N}, V), got {tuple(scores.shape)}")
    return torch.log_softmax(scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores, dim=-1)


@torch.no_grad()
def greedy_search(
    step: StepFunction,
    state: Any,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    max_len: int,
    device: torch.device | str | None = None,
) -> SearchResult:
    """Emit the most probable next token until EOS or `max_len` tokens, for a batch of sources at once.

    Finished sources leave the batch: once at least an eighth of the running rows have emitted EOS, the
    state is cut down to the others with `select_state` (until then the finished rows are stepped with EOS
    and ignored), so a batch costs what its words need, not what its longest word needs. The loop stops
    when every source has finished.

    Args:
        step (callable): `step(tokens (N,), state) -> (scores (N, V), state)`; see the module docstring.
        state: the decoder state for the B sources (e.g. `EncoderDecoder.init_state`).
        batch_size (int): B.
        bos_id (int): the start token fed at the first step.
        eos_id (int): the end token.
        max_len (int): most tokens generated per source, EOS included.
        device (torch.device, optional): where the token tensors live. (default: the state's device,
            `state_device(state)`)

    Returns:
        `SearchResult` with `tokens (B, L <= max_len)`.
    """
    _check_search_args(batch_size, max_len, bos_id, eos_id)
    device = state_device(state) if device is None else torch.device(device)
    B = batch_size
    out = torch.full((B, max_len), eos_id, dtype=torch.long, device=device)  # (B, max_len)
    total: Tensor | None = None
    rows = torch.arange(B, device=device)  # (N,): the source of each row still in the batch
    tokens = torch.full((B,), bos_id, dtype=torch.long, device=device)  # (N,)
    done = torch.zeros(B, dtype=torch.bool, device=device)  # (N,): rows that have emitted EOS
    steps = 0
    for t in range(max_len):
        scores, state = step(tokens, state)
        best, tokens = _log_probs(scores, len(rows)).max(dim=-1)  # (N,), (N,)
        tokens = tokens.masked_fill(done, eos_id)
        if total is None:
            total = torch.zeros(B, dtype=best.dtype, device=device)
        total.index_add_(0, rows, best.masked_fill(done, 0.0))
        out[rows, t] = tokens
        steps = t + 1
        done = done | (tokens == eos_id)
        finished = int(done.sum())
        if finished == len(rows):
            break
        if finished and finished * 8 >= len(rows):  # drop the finished rows from the batch
            keep = (~done).nonzero().squeeze(1)  # (N',)
            state = select_state(state, keep)
            rows, tokens, done = rows[keep], tokens[keep], done[keep]
    seq = out[:, :steps]  # (B, L)
    is_eos = seq == eos_id
    ended = is_eos.any(1)
    lengths = torch.where(ended, is_eos.int().argmax(1), torch.full((B,), steps, device=device)).long()
    return SearchResult(seq, lengths, total, total.clone(), ended)


@torch.no_grad()
def beam_search(
    step: StepFunction,
    state: Any,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    max_len: int,
    num_beams: int = 4,
    length_penalty: float = 0.0,
    device: torch.device | str | None = None,
) -> SearchResult:
    """Keep the `num_beams` best partial sequences per source; return the best finished one.

    Each step extends every live hypothesis by every token and ranks the extensions by log-probability.
    Those among the best `num_beams` that end in EOS become finished hypotheses, scored by
    `log_prob / length ** length_penalty` (length = tokens including EOS; `length_penalty=0` scores by total
    log-probability, 1 by the mean per token); the best `num_beams` that do not end stay live. A source is
    done when it holds `num_beams` finished hypotheses and no live one can still beat the worst of them (an
    exact bound: log-probabilities only fall, and for `length_penalty > 0` the most a longer hypothesis can
    gain is the division by `max_len ** length_penalty`). Hypotheses still live after `max_len` steps
    compete unfinished. Sources and beams run as one batch; once at least an eighth of the sources in it are
    done, they leave it (`select_state`).

    With `num_beams=1` and `length_penalty=0` this is greedy search (an EOS outside the best `num_beams`
    does not finish). With `num_beams >= V ** (max_len - 1)` nothing is ever cut and the search is exact:
    the best sequence over all outputs.

    Args:
        step (callable): `step(tokens (N,), state) -> (scores (N, V), state)`, N = B·K; see the module docstring.
        state: the decoder state for the B sources; it is repeated K times (`select_state`).
        batch_size (int): B.
        bos_id (int): the start token.
        eos_id (int): the end token.
        max_len (int): most tokens generated per hypothesis, EOS included.
        num_beams (int, optional): K. (default: 4)
        length_penalty (float, optional): the exponent α of the length normalisation. (default: 0.0)
        device (torch.device, optional): where the token tensors live. (default: the state's device,
            `state_device(state)`)

    Returns:
        `SearchResult` with the best hypothesis per source, `tokens (B, L <= max_len)`.
    """
    _check_search_args(batch_size, max_len, bos_id, eos_id)
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
    device = state_device(state) if device is None else torch.device(device)
    B, K = batch_size, num_beams
    neg_inf = float("-inf")

    def norm(logp: Tensor, length: int | Tensor) -> Tensor:
        return logp / (length**length_penalty) if length_penalty else logp

    # The K best finished hypotheses per source, best first; -inf marks an empty slot.
    fin_score = torch.full((B, K), neg_inf, dtype=torch.float64, device=device)  # (B, K)
    fin_logp = torch.full((B, K), neg_inf, dtype=torch.float64, device=device)  # (B, K)
    fin_tokens = torch.full((B, K, max_len), eos_id, dtype=torch.long, device=device)  # (B, K, max_len)
    fin_len = torch.zeros(B, K, dtype=torch.long, device=device)  # tokens, EOS included
    fin_ended = torch.zeros(B, K, dtype=torch.bool, device=device)  # ended with EOS

    def merge(rows: Tensor, score: Tensor, logp: Tensor, tokens: Tensor, length: int, ended: bool) -> None:
        """Merge candidate finished hypotheses of sources `rows (R,)` — `score/logp (R, C)`, `tokens (R, C,
        length)` — into their K best."""
        R, C = score.shape
        padded = torch.full((R, C, max_len), eos_id, dtype=torch.long, device=device)
        padded[:, :, :length] = tokens
        fin_score[rows], pick = torch.cat((fin_score[rows], score), 1).topk(K, dim=1)  # (R, K)
        fin_logp[rows] = torch.cat((fin_logp[rows], logp), 1).gather(1, pick)
        picked = torch.arange(R, device=device).unsqueeze(1), pick
        fin_tokens[rows] = torch.cat((fin_tokens[rows], padded), 1)[picked]  # (R, K, max_len)
        fin_len[rows] = torch.cat((fin_len[rows], torch.full_like(score, length, dtype=torch.long)), 1)[picked]
        fin_ended[rows] = torch.cat((fin_ended[rows], torch.full_like(score, ended, dtype=torch.bool)), 1)[picked]

    # The running batch holds the sources `active` (finished ones leave it), K_live rows each; the first step
    # runs on the sources themselves (K copies would be identical).
    active = torch.arange(B, device=device)  # (B_a,)
    live_logp = torch.zeros(B, 1, dtype=torch.float64, device=device)  # (B_a, K_live); -inf: an empty slot
    live_tokens = torch.empty(B, 1, 0, dtype=torch.long, device=device)  # (B_a, K_live, t - 1)
    tokens = torch.full((B,), bos_id, dtype=torch.long, device=device)  # (B_a·K_live,)
    done = torch.zeros(B, dtype=torch.bool, device=device)  # (B_a,)
    for t in range(1, max_len + 1):
        scores, state = step(tokens, state)
        B_a, K_live = live_logp.shape
        logp = _log_probs(scores, B_a * K_live).double().view(B_a, K_live, -1)  # (B_a, K_live, V)
        V = logp.shape[-1]
        cand = (live_logp.unsqueeze(-1) + logp).view(B_a, K_live * V)  # (B_a, K_live·V)
        # At most K of the best 2K extensions end in EOS (one per live slot), so K others remain.
        top_logp, top_idx = cand.topk(min(2 * K, K_live * V), dim=1)  # (B_a, 2K)
        parent, token = top_idx // V, top_idx % V  # (B_a, 2K)
        prefix = live_tokens.gather(1, parent.unsqueeze(-1).expand(-1, -1, t - 1))  # (B_a, 2K, t - 1)
        extended = torch.cat((prefix, token.unsqueeze(-1)), dim=-1)  # (B_a, 2K, t)
        # An EOS extension finishes only if it ranks among the K best (so K=1 is greedy search).
        ranks = torch.arange(top_idx.shape[1], device=device)  # (2K,)
        ends = (token == eos_id) & (top_logp > neg_inf) & (ranks < K)
        eos_logp = top_logp.masked_fill(~ends, neg_inf)
        merge(active, norm(eos_logp, t), eos_logp, extended, t, True)
        # The K best extensions that do not end stay live, in order.
        live_logp, keep = top_logp.masked_fill(token == eos_id, neg_inf).topk(min(K, top_logp.shape[1]), dim=1)
        live_tokens = extended.gather(1, keep.unsqueeze(-1).expand(-1, -1, t))  # (B_a, K, t)
        live_parent = parent.gather(1, keep)  # (B_a, K)
        tokens = token.gather(1, keep)  # (B_a, K): what each live hypothesis emitted last
        # A source is done once it holds K finished hypotheses that no live one can overtake: log-probs only
        # fall, and with length_penalty > 0 the most a longer hypothesis gains is the division by max_len**α.
        best_live, worst_kept = live_logp[:, 0], fin_score[active, -1]
        bound = norm(best_live, max_len if length_penalty > 0 else t)
        done = done | (best_live == neg_inf) | ((worst_kept > neg_inf) & (bound <= worst_kept))
        live_logp = live_logp.masked_fill(done.unsqueeze(1), neg_inf)
        if bool(done.all()) or t == max_len:
            break
        sources = torch.arange(B_a, device=device)  # (B_a',): the sources that stay in the batch
        finished = int(done.sum())
        if finished and finished * 8 >= B_a:  # drop the finished sources from the batch
            sources = (~done).nonzero().squeeze(1)
            active, done = active[sources], done[sources]
            live_logp, live_tokens, live_parent, tokens = (
                live_logp[sources], live_tokens[sources], live_parent[sources], tokens[sources]
            )
        index = (sources.unsqueeze(1) * K_live + live_parent).view(-1)  # (B_a'·K,): rows of the running batch
        state = select_state(state, index)
        tokens = tokens.reshape(-1)  # (B_a'·K,)
    # Hypotheses still live after max_len steps compete unfinished.
    if t == max_len:
        merge(active, norm(live_logp, max_len), live_logp, live_tokens, max_len, False)

    # Slot 0 holds the best (a source whose every continuation scored -inf gets an empty, unfinished output).
    length, ended = fin_len[:, 0], fin_ended[:, 0]
    L = max(1, int(length.max()))
    return SearchResult(fin_tokens[:, 0, :L], length - ended.long(), fin_logp[:, 0], fin_score[:, 0], ended)


def ensemble_step(steps: Sequence[StepFunction]) -> StepFunction:
    """One step function that decodes with several models at once, as an ensemble.

    At every step each member scores the next token; the ensemble's distribution is the normalised geometric
    mean of the members' (a product of experts: `log_softmax` of the mean log-probability). The members may
    differ in architecture and state, but must share the output vocabulary. The ensemble's state is the
    tuple of the members' states (`select_state` reorders each), so greedy and beam search drive it as
    they drive one model:

        step = ensemble_step([a.step, b.step])
        result = greedy_search(step, (a.start(x, n), b.start(x, n)), B, bos_id=..., eos_id=..., max_len=...)

    Args:
        steps: the members' step functions, `step(tokens (N,), state) -> (scores (N, V), state)`.

    Returns:
        `step(tokens (N,), states: tuple) -> (log-probabilities (N, V), tuple of the new states)`.

    Raises:
        ValueError: no members; members whose scores differ in shape; a state that is not a tuple of one
            state per member.
    """
    steps = list(steps)
    if not steps:
        raise ValueError("ensemble_step needs at least one member step function")

    def step(tokens: Tensor, states: Any) -> tuple[Tensor, tuple]:
        if not isinstance(states, tuple) or len(states) != len(steps):
            got = f"a tuple of {len(states)}" if isinstance(states, tuple) else type(states).__name__
            raise ValueError(f"the ensemble's state must be a tuple of {len(steps)} member states, got {got}")
        total, new_states = None, []
        for i, (member, state) in enumerate(zip(steps, states)):
            scores, state = member(tokens, state)
            log_probs = _log_probs(scores, tokens.shape[0])  # (N, V)
            if total is not None and log_probs.shape != total.shape:
                raise ValueError(f"ensemble member {i} scores {tuple(log_probs.shape)}, member 0 "
                                 f"{tuple(total.shape)}: the members must share the vocabulary")
            total = log_probs if total is None else total + log_probs
            new_states.append(state)
        return torch.log_softmax(total / len(steps), dim=-1), tuple(new_states)

    return step
