import math

import pytest
import torch

from core.positional import (
    LearnedPositionalEncoding,
    RelativePositionBias,
    RelativePositionBias2d,
    SinusoidalPositionalEncoding,
    SinusoidalPositionalEncoding2d,
    sinusoidal_encoding,
    sinusoidal_encoding_2d,
)


def test_sinusoidal_is_the_paper_formula():
    pe = sinusoidal_encoding(50, 16)
    pos, i = 7, 3
    angle = pos / 10000 ** (2 * i / 16)
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert pe[0, 0::2].abs().max() == 0 and (pe[0, 1::2] == 1).all()


def test_sinusoidal_module_grows_past_max_len_and_honours_offset():
    enc = SinusoidalPositionalEncoding(8, max_len=4)
    x = torch.zeros(1, 10, 8)
    assert torch.allclose(enc(x), sinusoidal_encoding(10, 8)[None])
    assert torch.allclose(enc(x[:, :3], offset=5), sinusoidal_encoding(8, 8)[None, 5:8])


def test_learned_refuses_positions_it_has_no_vector_for():
    enc = LearnedPositionalEncoding(4, max_len=6)
    assert enc(torch.zeros(2, 6, 4)).shape == (2, 6, 4)
    with pytest.raises(ValueError, match="position 7"):
        enc(torch.zeros(1, 7, 4))


def test_2d_encoding_splits_rows_and_columns():
    pe = sinusoidal_encoding_2d(3, 4, 8)
    assert pe.shape == (12, 8)
    # same row -> same first half; same column -> same second half
    assert torch.equal(pe[4, :4], pe[7, :4]) and not torch.equal(pe[4, 4:], pe[7, 4:])
    assert torch.equal(pe[1, 4:], pe[9, 4:]) and not torch.equal(pe[1, :4], pe[9, :4])
    x = torch.zeros(2, 12, 8)
    assert torch.equal(SinusoidalPositionalEncoding2d(8)(x, 3, 4), pe.expand(2, -1, -1))


def test_relative_bias_is_direction_aware_and_clipped():
    rel = RelativePositionBias(2, max_distance=2)
    with torch.no_grad():
        rel.bias.copy_(torch.arange(10.0).view(5, 2))  # rows: offsets -2..2
    idx = torch.arange(5)
    b = rel(idx[:, None], idx[None, :])  # (H, T, S)
    assert b.shape == (2, 5, 5)
    assert b[0, 2, 3].item() == 6.0 and b[0, 3, 2].item() == 2.0  # +1 and -1 differ
    assert b[0, 0, 4].item() == b[0, 0, 3].item() == 8.0  # offsets beyond +2 clip


def test_relative_bias_2d_uses_grid_offsets():
    rel = RelativePositionBias2d(1, max_distance=1, width=4)
    with torch.no_grad():
        rel.bias.copy_(torch.arange(9.0).view(9, 1))  # (dy, dx) in {-1,0,1}² row-major
    q, k = torch.tensor(5), torch.tensor([1, 4, 6, 9, 10])  # (1,1) -> (0,1) (1,0) (1,2) (2,1) (2,2)
    assert rel(q, k)[0].tolist() == [1.0, 3.0, 5.0, 7.0, 8.0]


@pytest.mark.parametrize("build, message", [
    (lambda: RelativePositionBias(0), "num_heads >= 1"),
    (lambda: RelativePositionBias(2, max_distance=-1), "max_distance >= 0"),
    (lambda: RelativePositionBias2d(2, 1, width=0), "width >= 1"),
    (lambda: LearnedPositionalEncoding(4, max_len=0), "max_len >= 1"),
    (lambda: sinusoidal_encoding(5, 0), "even dim >= 2"),
    (lambda: sinusoidal_encoding(5, 7), "even dim"),
    (lambda: sinusoidal_encoding(-1, 4), "length must be >= 0"),
    (lambda: sinusoidal_encoding_2d(2, 2, 6), "divisible by 4"),
    (lambda: SinusoidalPositionalEncoding(4)(torch.zeros(1, 3, 4), offset=-1), "offset"),
    (lambda: LearnedPositionalEncoding(4, 8)(torch.zeros(1, 3, 4), offset=-2), "offset"),
])
def test_bad_arguments_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()
