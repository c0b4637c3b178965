import math

import pytest
import torch

from core.__main__ import build_parser, main
from core.attention import scaled_dot_product_attention
from core.lessons import LESSONS, LessonResult, run_lessons
from core.lessons.base import Log
from core.lessons.matrix_form import matrix_form
from core.lessons.multi_head import head_block, load_multihead, multihead_by_hand
from core.lessons.norms import normalise, padded_batch
from core.lessons.order import permutation_gap, random_attention
from core.lessons.rnn_vs_attention import LSTMLayer, QUICK_LENGTHS
from core.lessons.rnn_vs_attention import lesson as rnn_lesson
from core.lessons.scaling import softmax_spread
from core.lessons.sinusoidal import shift_matrix
from core.positional import sinusoidal_encoding

f64 = dict(dtype=torch.float64)
EXACT = dict(rtol=0.0, atol=1e-12)


def test_matrix_form_equals_core_attention_with_tokens_as_columns():
    g = torch.Generator().manual_seed(0)
    I = torch.randn(5, 4, generator=g, **f64)  # (d_in, T): tokens are columns
    C = torch.randn(5, 6, generator=g, **f64)  # (d_in, S): S != T, keys and values from a context
    wq, wk, wv = (torch.randn(n, 5, generator=g, **f64) for n in (3, 3, 2))
    for scale in (None, 1.0, 0.3):
        m = matrix_form(I, wq, wk, wv, context=C, scale=scale)
        assert m["A"].shape == (6, 4) and m["O"].shape == (2, 4)
        torch.testing.assert_close(m["A_hat"].sum(0), torch.ones(4, **f64), **EXACT)  # softmax over keys
        q, k, v = I.T[None] @ wq.T, C.T[None] @ wk.T, C.T[None] @ wv.T  # batch first, tokens as rows
        out, weights = scaled_dot_product_attention(q, k, v, scale=scale, return_weights=True)
        torch.testing.assert_close(weights[0], m["A_hat"].T, **EXACT)
        torch.testing.assert_close(out[0], m["O"].T, **EXACT)
        torch.testing.assert_close(scaled_dot_product_attention(q, k, v, scale=scale)[0], m["O"].T, **EXACT)
    # the notes' A carries no √d: scale=1.0 is softmax(Kᵀ·Q) itself
    m = matrix_form(I, wq, wk, wv, context=C, scale=1.0)
    torch.testing.assert_close(m["A_hat"], torch.softmax(C.T @ wk.T @ wq @ I, dim=0), **EXACT)


@pytest.mark.parametrize("name", ["matrix", "multihead"])
def test_matrix_and_multihead_lessons_agree_with_the_library(name):
    r = LESSONS[name][0].lesson(Log(), None)
    gaps = [v for k, v in r.numbers.items() if k.endswith("_gap")]
    assert len(gaps) >= 3 and max(gaps) < 1e-12


def test_zero_block_heads_equal_multihead_attention_exactly():
    D, H = 6, 3  # Dh = 2
    g = torch.Generator().manual_seed(1)
    I, C = torch.randn(D, 4, generator=g, **f64), torch.randn(D, 5, generator=g, **f64)  # T=4, S=5
    wq, wk, wv, wo = (torch.randn(D, D, generator=g, **f64) for _ in range(4))
    biases = {n: torch.randn(D, generator=g, **f64) for n in "qkvo"}  # zero biases would hide a dropped one
    m = multihead_by_hand(I, wq, wk, wv, wo, H, context=C, biases=biases)
    for h in range(H):  # head h's projection is zero outside its rows, and so is its Q
        rows = torch.arange(D) // (D // H) == h
        assert not m["Wq_h"][h][~rows].any() and torch.equal(m["Wq_h"][h][rows], wq[rows])
        assert not m["Q_h"][h][~rows].any()
    mha = load_multihead(wq, wk, wv, wo, H, biases)
    with torch.no_grad():
        out, weights = mha(I.T[None], C.T[None], return_weights=True)  # (1, T, D), (1, H, T, S)
        fused = mha(I.T[None], C.T[None])
    torch.testing.assert_close(out[0], m["O"].T, **EXACT)
    torch.testing.assert_close(fused[0], m["O"].T, **EXACT)
    for h in range(H):
        torch.testing.assert_close(weights[0, h], m["A_hat_h"][h].T, **EXACT)


def test_head_block_keeps_only_its_rows():
    w = torch.arange(12.0).reshape(4, 3)
    assert torch.equal(head_block(w, 1, 2), torch.tensor([[0.0] * 3, [0.0] * 3, [6.0, 7, 8], [9.0, 10, 11]]))


def test_unscaled_softmax_saturates_and_scaled_does_not():
    unscaled = {d: softmax_spread(d, scaled=False) for d in (4, 64, 1024)}
    scaled = {d: softmax_spread(d, scaled=True) for d in (4, 64, 1024)}
    assert unscaled[64]["max_weight"] > 0.7 and unscaled[64]["entropy"] < 1.0
    assert unscaled[4]["entropy"] > unscaled[64]["entropy"] > unscaled[1024]["entropy"]
    for d in scaled:
        assert 0.8 < scaled[d]["score_std"] < 1.2
        assert scaled[d]["max_weight"] < 0.3 and 2.5 < scaled[d]["entropy"] < math.log(32)
    assert math.isclose(unscaled[64]["score_std"], 8.0, rel_tol=0.15)  # √64


def test_permuting_inputs_permutes_outputs_without_positions_only():
    attn = random_attention(8, 2, seed=3)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 6, 8, generator=g, **f64)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert permutation_gap(attn, x, perm) < 1e-12
    assert permutation_gap(attn, x, perm, sinusoidal_encoding(6, 8)) > 1e-2
    assert permutation_gap(attn, x, torch.arange(6), sinusoidal_encoding(6, 8)) < 1e-12  # identity: no change


def test_causal_mask_keeps_every_earlier_output_exactly_and_no_mask_does_not(tmp_path):
    from core.lessons.causal import future_leak, lesson

    attn = random_attention(8, 2, seed=5)
    x = torch.randn(2, 7, 8, generator=torch.Generator().manual_seed(6), **f64)
    for t in range(1, 7):
        assert future_leak(attn, x, t, masked=True) == 0.0  # not small: exactly nothing reaches back
        assert future_leak(attn, x, t, masked=False) > 1e-2
    result = lesson(Log(), tmp_path)
    assert result.numbers["leak_masked_t1"] == 0.0 and result.numbers["leak_unmasked_t1"] > 1e-2
    assert [p.name for p in result.figures] == ["causal_mask.png"] and result.figures[0].stat().st_size > 0


@pytest.mark.parametrize("k", [1, 3, 40, -5])
def test_sinusoidal_shift_is_one_rotation_for_every_position(k):
    D = 32
    pe = sinusoidal_encoding(120, D).double()  # float32 table: agreement to ~1e-7
    M = shift_matrix(k, D)
    p = torch.arange(max(0, -k), 120 - max(0, k))
    torch.testing.assert_close(pe[p + k], pe[p] @ M.T, rtol=0, atol=1e-6)
    torch.testing.assert_close(M.T @ M, torch.eye(D, **f64), **EXACT)
    assert not M[0, 2:].any() and not M[2:, 0].any()  # block-diagonal: pairs do not mix


def test_sinusoidal_shift_matrix_needs_even_dim():
    with pytest.raises(ValueError, match="even dim"):
        shift_matrix(1, 5)


def test_padding_moves_batchnorm_but_not_layernorm():
    x5, real5 = padded_batch(5)
    x12, real12 = padded_batch(12)
    assert torch.equal(x5[real5], x12[real12]) and not x12[~real12].any()
    n5, n12 = normalise(x5), normalise(x12)
    torch.testing.assert_close(n5["layer"][real5], n12["layer"][real12], **EXACT)
    assert (n5["batch"][real5] - n12["batch"][real12]).abs().max() > 0.1
    # BatchNorm's mean counts the padding zeros: the real tokens' sum over all B·T positions
    torch.testing.assert_close(n12["batch_mean"], x12[real12].sum(0) / (3 * 12), **EXACT)
    with pytest.raises(ValueError, match="shorter than the longest"):
        padded_batch(4)


def test_rnn_lesson_times_both_and_counts_steps(tmp_path):
    r = rnn_lesson(Log(), tmp_path, lengths=(4, 8), batch_sizes=(1, 2), dim=8, num_heads=2, rounds=1,
                   budget_s=0.0)
    for B in (1, 2):
        for T in (4, 8):
            assert r.numbers[f"LSTM_ms_B{B}_T{T}"] > 0 and r.numbers[f"attention_ms_B{B}_T{T}"] > 0
            assert r.numbers[f"ratio_B{B}_T{T}"] > 0
    assert [row[6] for row in r.tables[0].rows] == ["4 vs 1", "8 vs 1"] * 2
    assert "faster at" in r.text and r.figures[0].read_bytes()[:4] == b"\x89PNG"
    assert LSTMLayer(8)(torch.randn(2, 5, 8)).shape == (2, 5, 8)


def test_run_lessons_returns_results_and_writes_report(tmp_path):
    results = run_lessons(tmp_path, names=["worked", "sinusoidal", "norms"])
    assert [r.name for r in results] == ["worked", "sinusoidal", "norms"]
    assert all(isinstance(r, LessonResult) and r.title and r.text and r.log for r in results)
    figures = [f for r in results for f in r.figures]
    assert {f.name for f in figures} == {"positional_encoding.png", "attention_positions.png",
                                         "layernorm_vs_batchnorm.png"}
    assert all(f.read_bytes()[:4] == b"\x89PNG" for f in figures)
    report = (tmp_path / "report.md").read_text()
    for r in results:
        assert f"## {r.title}" in report
    assert "](layernorm_vs_batchnorm.png)" in report and r"max \|PE[p+k]" in report  # pipes escaped in tables
    with pytest.raises(ValueError, match="unknown lesson"):
        run_lessons(None, names=["nope"])


def test_cli_flags(tmp_path, capsys):
    args = build_parser().parse_args([])
    assert args.full is False and args.lengths is None and args.lesson is None
    assert build_parser().parse_args(["--full"]).full is True
    assert build_parser().parse_args(["--lengths", "16,64"]).lengths == [16, 64]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--lengths", "16,x"])
    main(["--lesson", "order", "--lesson", "scaling", "--no-plots", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "permutation-equivariant" in printed and "√d" in printed
    assert (tmp_path / "report.md").exists() and not list(tmp_path.glob("*.png"))
    assert QUICK_LENGTHS[-1] <= 1024  # the default run stays short
