"""A linear-chain conditional random field: the output layer that scores whole label sequences.

A per-token softmax picks each label on its own and can emit ``O I-NP``; a CRF adds a learned score
for every label-to-label transition and decodes the best sequence with Viterbi. It is not attention;
it sits on top of any tagger (attention, BiLSTM, CNN) in the same way.

Symbol legend: B batch, T sentence length, K number of labels.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearChainCRF(nn.Module):
    r"""Linear-chain CRF over per-token emission scores, with start and end transition scores.

    .. math::
        s(y) = \text{start}_{y_1} + \sum_t e_{t, y_t} + \sum_{t>1} A_{y_{t-1}, y_t} + \text{end}_{y_T}

    Args:
        num_tags (int): number of labels K.

    Shapes:
        - emissions: (B, T, K), float
        - tags: (B, T), long (values at padded positions are ignored)
        - mask: (B, T), bool, True on real tokens; every sentence's real tokens form a prefix and
          every sentence has at least one
        - output of :meth:`forward`: (B,), the negative log-likelihood of each sentence
        - output of :meth:`decode`: (B, T), long, the Viterbi labels (0 at padded positions)
    """

    def __init__(self, num_tags: int):
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [from, to]
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``tags`` per sentence, (B,)."""
        return self.log_partition(emissions, mask) - self.score(emissions, tags, mask)

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unnormalised score s(y) of the given label sequences, (B,)."""
        B, T, K = emissions.shape
        tags = tags.clamp(min=0) * mask  # padding labels (possibly negative) become a harmless 0
        maskf = mask.to(emissions.dtype)
        emitted = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # (B, T)
        total = self.start[tags[:, 0]] + (emitted * maskf).sum(1)
        if T > 1:
            moves = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
            total = total + (moves * maskf[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)  # (B,)
        return total + self.end[last]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z, summed over all label sequences with the forward algorithm, (B,)."""
        alpha = self.start + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.shape[1]):
            # (B, K_from, 1) + (K_from, K_to) -> logsumexp over from -> (B, K_to)
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The highest-scoring label sequence of each sentence (Viterbi), (B, T)."""
        B, T, K = emissions.shape
        best = self.start + emissions[:, 0]  # (B, K)
        keep = torch.arange(K, device=emissions.device).expand(B, K)
        backpointers = []
        for t in range(1, T):
            scores, came_from = (best.unsqueeze(2) + self.transitions).max(dim=1)  # (B, K_to)
            real = mask[:, t].unsqueeze(1)
            best = torch.where(real, scores + emissions[:, t], best)
            # past the end of a sentence every label points to itself, so backtracking passes through
            backpointers.append(torch.where(real, came_from, keep))
        tag = (best + self.end).argmax(dim=1)  # (B,)
        path = [tag]
        for came_from in reversed(backpointers):
            tag = came_from.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        return torch.stack(path[::-1], dim=1) * mask
