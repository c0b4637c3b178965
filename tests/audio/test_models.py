"""The masks each attention variant builds, and generic checks of every model (mirrors audio/models.py)."""

import pytest
import torch

from audio.models import VTLP_BOUNDARY, AudioConfig, build_model, structure_mask, vtlp, vtlp_source_bins
from core.masks import BandMask, ChunkMask, PaddingMask

SMALL = dict(dim=32, heads=2, layers=2, ffn_dim=64, stem_channels=4, conv_channels=4, rnn_hidden=16, dropout=0.0)


def test_window_variant_builds_a_band_of_plus_minus_w():
    mask = structure_mask(AudioConfig(attention="window", window=3), 12)
    assert isinstance(mask, BandMask) and (mask.left, mask.right) == (3, 3)
    i, j = torch.arange(12).unsqueeze(1), torch.arange(12)
    assert torch.equal(mask.dense(), (j - i).abs() <= 3)


def test_truncated_variant_builds_chunks_with_left_context():
    mask = structure_mask(AudioConfig(attention="truncated", chunk=4, left_chunks=1, lookahead=0), 12)
    assert isinstance(mask, ChunkMask)
    dense = mask.dense()
    assert dense[5].tolist() == [True] * 8 + [False] * 4  # chunk 1 sees chunks 0 and 1
    assert dense[9].tolist() == [False] * 4 + [True] * 8  # chunk 2 sees chunks 1 and 2, not 0
    assert not dense[:4, 4:].any()  # no look-ahead past the chunk
    ahead = structure_mask(AudioConfig(attention="truncated", chunk=4, left_chunks=1, lookahead=2), 12).dense()
    assert ahead[0].tolist() == [True] * 6 + [False] * 6


def test_full_variant_masks_only_padding():
    assert structure_mask(AudioConfig(attention="full"), 12) is None
    model = build_model(AudioConfig(attention="full", **SMALL))
    mask = model.attention_mask(5, torch.tensor([5, 3]))
    assert isinstance(mask, PaddingMask)
    assert mask.dense()[1, 0, 0].tolist() == [True, True, True, False, False]


def test_window_mask_is_combined_with_padding():
    model = build_model(AudioConfig(attention="window", window=1, **SMALL))
    dense = model.attention_mask(4, torch.tensor([4, 2])).dense()  # (B, 1, T, S)
    assert dense[0, 0, 0].tolist() == [True, True, False, False]
    assert dense[1, 0, 1].tolist() == [True, True, False, False]  # key 2 is a neighbour but padding


CASES = [("attention", a, t) for a in ("full", "window", "truncated") for t in ("clip", "frame")]
CASES += [(m, "window", t) for m in ("cnn", "gru") for t in ("clip", "frame")]
CASES += [("attention-cnn-stem", "window", "clip"), ("attention-cnn-bn-stem", "window", "clip")]


@pytest.mark.parametrize("model_name, attention, task", CASES)
def test_shapes_finite_and_every_parameter_learns(model_name, attention, task):
    torch.manual_seed(0)
    stem = {"attention-cnn-stem": "cnn", "attention-cnn-bn-stem": "cnn-bn"}.get(model_name, "strided")
    config = AudioConfig(model=model_name.split("-")[0], attention=attention, task=task, num_classes=11, window=2,
                         chunk=4, stem=stem, **SMALL)
    model = build_model(config).train()
    features, lengths = torch.randn(3, 20, 40), torch.tensor([20, 13, 7])
    logits = model(features, lengths)
    assert logits.shape == ((3, 11) if task == "clip" else (3, 20, 11))
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not silent


@pytest.mark.parametrize("model_name, attention", [("attention", "window"), ("attention", "truncated"),
                                                   ("attention", "full"), ("cnn", "window"), ("gru", "window")])
def test_padding_does_not_change_real_outputs(model_name, attention):
    torch.manual_seed(0)
    config = AudioConfig(model=model_name, attention=attention, task="frame", num_classes=11, window=2, chunk=4, **SMALL)
    model = build_model(config).eval()
    features = torch.randn(1, 13, 40)
    alone = model(features, torch.tensor([13]))
    padded = model(torch.cat([features, torch.randn(1, 7, 40)], dim=1), torch.tensor([20]) - 7)
    assert torch.allclose(alone, padded[:, :13], atol=1e-5)


@pytest.mark.parametrize("model_name", ["attention", "cnn"])
def test_attention_pooling_weighs_only_real_frames_and_learns(model_name):
    """Clip logits with attention pooling: padded frames (here loud noise) change nothing, the pooled vector
    is a convex combination of the frame vectors, and the scoring layer gets a gradient."""
    torch.manual_seed(0)
    config = AudioConfig(model=model_name, attention="full", num_classes=10, pooling="attention", **SMALL)
    model = build_model(config).eval()
    features = torch.randn(1, 13, 40)
    alone = model(features, torch.tensor([13]))
    padded = model(torch.cat([features, 50 * torch.randn(1, 7, 40)], dim=1), torch.tensor([13]))
    assert torch.allclose(alone, padded, atol=1e-5)
    frames = torch.randn(2, 6, 32)
    pooled = model.head.pool(frames, torch.tensor([6, 3]))  # (2, D)
    assert torch.allclose(pooled[1], model.head.pool(frames[1:, :3], torch.tensor([3]))[0], atol=1e-6)
    low, high = frames.min(1).values, frames.max(1).values
    assert ((pooled >= low - 1e-6) & (pooled <= high + 1e-6))[0].all()  # inside the frames' hull, per dim
    model.train()(features, torch.tensor([13])).square().sum().backward()
    assert model.head.score.weight.grad.abs().sum() > 0


def test_window_model_output_depends_only_on_its_receptive_field():
    # Two layers of +-2 frames after a stem that looks 4 frames back: frame 0 cannot see frame 15.
    torch.manual_seed(0)
    model = build_model(AudioConfig(attention="window", task="frame", num_classes=11, window=2, **SMALL)).eval()
    features = torch.randn(1, 20, 40)
    changed = features.clone()
    changed[0, 15] += 5.0
    before, after = model(features, torch.tensor([20])), model(changed, torch.tensor([20]))
    assert torch.allclose(before[0, :10], after[0, :10], atol=1e-6)
    assert not torch.allclose(before[0, 15], after[0, 15], atol=1e-3)


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError, match="attention"):
        AudioConfig(attention="sparse")
    with pytest.raises(ValueError, match="model"):
        AudioConfig(model="lstm")
    with pytest.raises(ValueError, match="pooling"):
        AudioConfig(pooling="max")
    with pytest.raises(ValueError, match="stem"):
        AudioConfig(stem="vgg")


@pytest.mark.parametrize("model", ["attention", "cnn", "gru"])
def test_utterance_normalisation_removes_a_fixed_colouring_and_ignores_padding(model):
    """A voice or microphone that scales each mel band by a fixed gain adds a constant per bin to the
    log-mel frames; with feature_norm="utterance" the outputs do not move, with "global" they do."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2, 30, 40, generator=g)
    lengths = torch.tensor([30, 21])
    colour = 3.0 * torch.randn(2, 1, 40, generator=g)  # per utterance, per mel bin
    outputs = {}
    for norm in ("utterance", "global"):
        torch.manual_seed(0)
        net = build_model(AudioConfig(model=model, dim=16, heads=2, layers=1, ffn_dim=32, stem_channels=4,
                                      feature_norm=norm)).eval()
        with torch.no_grad():
            plain, coloured = net(features, lengths), net(features + colour, lengths)
            padded = net(torch.cat([features, torch.randn(2, 9, 40, generator=g)], 1), lengths)
        outputs[norm] = (plain - coloured).abs().max().item()
        if norm == "utterance":
            assert (plain - padded).abs().max() < 1e-4
    assert outputs["utterance"] < 1e-4
    assert outputs["global"] > 1e-2


def test_cepstral_smoothing_keeps_the_envelope_and_removes_the_harmonic_ripple():
    """cepstra=K projects each frame onto the first K DCT basis vectors: a slow envelope passes, a ripple
    of 3-bin period (pitch harmonics at low frequency) goes, and it acts on every frame alone."""
    bins = torch.arange(40, dtype=torch.float64)
    envelope = torch.cos(torch.pi * (bins + 0.5) * 3 / 40)  # DCT-II basis vector 3: kept by K = 13
    ripple = torch.cos(2 * torch.pi * bins / 3)  # ~27th coefficient: above K
    net = build_model(AudioConfig(cepstra=13, **SMALL)).double().eval()
    smoothed = net.frontend.smooth(torch.stack([envelope, envelope + ripple, ripple]))
    assert (smoothed[0] - envelope).abs().max() < 1e-6  # torchaudio's DCT matrix is float32
    # the ripple loses 98 % of its energy (what is left leaks in at the band's two ends)
    assert (smoothed[1] - envelope).norm() < 0.15 * envelope.norm()
    assert smoothed[2].norm() < 0.15 * ripple.norm()
    assert (net.frontend.smooth(smoothed) - smoothed).abs().max() < 1e-6  # a projection
    frames = torch.randn(2, 7, 40, dtype=torch.float64)
    per_frame = torch.stack([net.frontend.smooth(frames[:, t]) for t in range(7)], 1)
    assert (net.frontend.smooth(frames) - per_frame).abs().max() < 1e-12
    assert (net.frontend.smooth(frames) - frames).abs().max() > 0.5
    off = build_model(AudioConfig(cepstra=0, **SMALL)).double()
    assert off.frontend.smooth(frames) is frames
    full = build_model(AudioConfig(cepstra=40, **SMALL)).double()
    assert (full.frontend.smooth(frames) - frames).abs().max() < 1e-5  # K = F keeps everything
    # rebuilt from the config, not saved: checkpoints of models without it still load
    assert "frontend.lifter" not in net.state_dict()
    off.load_state_dict(net.state_dict())
    with pytest.raises(ValueError, match="cepstra"):
        AudioConfig(cepstra=41)


@pytest.mark.parametrize("model", ["attention", "cnn", "gru"])
def test_every_model_sees_the_smoothed_frames(model):
    """With cepstra=K, frames that differ only above the K-th coefficient give the same outputs."""
    torch.manual_seed(0)
    net = build_model(AudioConfig(model=model, cepstra=13, **SMALL)).eval()
    features, lengths = torch.randn(2, 30, 40), torch.tensor([30, 24])
    ripple = torch.cos(torch.pi * (torch.arange(40) + 0.5) * 30 / 40)  # DCT-II basis vector 30 > K
    with torch.no_grad():
        assert (net(features, lengths) - net(features + 2 * ripple, lengths)).abs().max() < 1e-4
        plain = build_model(AudioConfig(model=model, cepstra=0, **SMALL)).eval()
        plain.load_state_dict(net.state_dict())
        assert (plain(features, lengths) - plain(features + 2 * ripple, lengths)).abs().max() > 1e-3


def _bin_hz(position, n_mels=40, nyquist=4000.0):
    """Mel bin position (0 = the first filter's centre) -> Hz, HTK mel as in torchaudio's MelSpectrogram."""
    top = 2595 * torch.log10(torch.tensor(1 + nyquist / 700, dtype=torch.float64))
    return 700 * (10 ** ((position + 1) / (n_mels + 1) * top / 2595) - 1)


def test_vtlp_scales_frequencies_by_alpha_up_to_the_boundary_and_keeps_the_band():
    """A ramp of bin indices warped gives back where each bin reads from: below the boundary the warped
    bin at f reads the original at f / alpha; above it the map runs on to Nyquist, continuous and rising."""
    ramp = torch.arange(40, dtype=torch.float64).expand(2, 3, 40)
    centres = _bin_hz(torch.arange(40, dtype=torch.float64))
    for alpha in (0.87, 1.13):
        warped = vtlp(ramp, torch.tensor([alpha, 1.0], dtype=torch.float64), nyquist=4000.0)
        assert torch.equal(warped[:, 0], warped[:, 2])  # every frame alike: time is untouched
        assert (warped[1] - ramp[1]).abs().max() < 1e-9  # alpha = 1: the identity
        source = _bin_hz(warped[0, 0])
        below = centres <= VTLP_BOUNDARY * 4000 * min(alpha, 1)
        inside = below & (centres / alpha >= centres[0])  # alpha < 1 reads past the first centre: clamped
        assert below.sum() > 20 and inside.sum() >= 20
        assert (source[inside] - centres[inside] / alpha).abs().max() < 1e-6
        assert (warped[0, 0].diff() >= 0).all() and warped[0, 0, -1] <= 39
        assert (warped[0, 0, ~below] - ramp[0, 0, ~below]).abs().max() > 0.1  # the band above is warped too


def test_vtlp_moves_a_formant_up_for_alpha_above_one():
    """A shorter vocal tract (alpha > 1) puts a formant at 1 kHz near 1.1 kHz; alpha < 1 near 0.9 kHz."""
    centres = _bin_hz(torch.arange(40, dtype=torch.float64))
    formant = torch.exp(-((centres - 1000) / 150) ** 2).expand(3, 1, 40)
    warped = vtlp(formant, torch.tensor([1.1, 0.9, 1.0]), nyquist=4000.0)
    peaks = centres[warped[:, 0].argmax(-1)]
    for peak, hz in zip(peaks.tolist(), (1100, 900, 1000)):
        assert abs(peak - hz) < 0.6 * (centres[1:] - centres[:-1]).max(), (peaks, hz)
    assert peaks[0] > peaks[2] > peaks[1]


def test_vtlp_acts_only_while_training_with_a_factor_per_clip():
    torch.manual_seed(0)
    quiet = dict(SMALL, freq_masks=0, time_masks=0)
    net, plain = build_model(AudioConfig(vtlp=0.1, **quiet)), build_model(AudioConfig(**quiet))
    plain.load_state_dict(net.state_dict())
    features, lengths = torch.randn(1, 30, 40).expand(3, 30, 40), torch.tensor([30, 30, 30])
    net.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(net(features, lengths), plain(features, lengths))  # evaluation: never warped
        net.frontend.train(), plain.frontend.train()
        warped = net.frontend(features, lengths)
        assert torch.equal(plain.frontend(features, lengths), plain.frontend.eval()(features, lengths))
    assert (warped[0] - warped[1]).abs().max() > 1e-3 and (warped[1] - warped[2]).abs().max() > 1e-3
    assert (warped - plain.frontend(features, lengths)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="vtlp"):
        AudioConfig(vtlp=0.5)


def test_a_model_normalised_per_utterance_or_per_speaker_refuses_to_stream():
    net = build_model(AudioConfig(attention="truncated", feature_norm="utterance", dim=16, heads=2, layers=1)).eval()
    with pytest.raises(ValueError, match="whole utterance"):
        net.infer(torch.randn(16, 40))
    net = build_model(AudioConfig(attention="truncated", feature_norm="speaker", dim=16, heads=2, layers=1)).eval()
    with pytest.raises(ValueError, match="their speaker's statistics"):
        net.infer(torch.randn(16, 40))
    with pytest.raises(ValueError, match="feature_norm"):
        AudioConfig(feature_norm="speakers")
