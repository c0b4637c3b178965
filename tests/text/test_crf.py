import itertools

import torch

from text.crf import LinearChainCRF


def random_crf(num_tags: int, seed: int = 0) -> LinearChainCRF:
    torch.manual_seed(seed)
    crf = LinearChainCRF(num_tags).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def brute_force(crf, emissions, length):
    """Every label sequence of one sentence, with its score."""
    K = crf.num_tags
    out = {}
    for seq in itertools.product(range(K), repeat=length):
        tags = torch.tensor([list(seq)])
        mask = torch.ones(1, length, dtype=torch.bool)
        out[seq] = crf.score(emissions[:1, :length], tags, mask).item()
    return out


def test_log_partition_and_viterbi_match_enumeration_with_padding():
    K, T = 3, 4
    crf = random_crf(K)
    emissions = torch.randn(2, T, K, dtype=torch.float64)
    lengths = [T, 2]
    mask = torch.tensor([[True] * n + [False] * (T - n) for n in lengths])
    log_z = crf.log_partition(emissions, mask)
    best = crf.decode(emissions, mask)
    for b, n in enumerate(lengths):
        scores = brute_force(crf, emissions[b : b + 1], n)
        expected = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0)
        assert torch.allclose(log_z[b], expected)
        argmax = max(scores, key=scores.get)
        assert best[b, :n].tolist() == list(argmax)
        assert best[b, n:].eq(0).all()


def test_padding_does_not_change_the_likelihood_and_gradients_flow():
    K, T = 4, 5
    crf = random_crf(K, seed=1)
    emissions = torch.randn(1, 3, K, dtype=torch.float64, requires_grad=True)
    tags = torch.tensor([[1, 3, 2]])
    short = crf(emissions, tags, torch.ones(1, 3, dtype=torch.bool))
    padded_em = torch.cat([emissions, torch.randn(1, T - 3, K, dtype=torch.float64) * 50], 1)
    padded_tags = torch.cat([tags, torch.full((1, T - 3), -100)], 1)
    mask = torch.tensor([[True, True, True, False, False]])
    padded = crf(padded_em, padded_tags, mask)
    assert torch.allclose(short, padded)
    assert short.item() > 0  # a negative log-likelihood of a non-certain sequence
    padded.sum().backward()
    assert emissions.grad is not None and emissions.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in crf.parameters())
