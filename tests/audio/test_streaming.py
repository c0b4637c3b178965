"""Streaming chunk by chunk (``AttentionModel.infer``) equals the whole-utterance pass (mirrors
audio/streaming.py and the streaming part of audio/models.py)."""

import pytest
import torch

from audio.data import LogMel
from audio.models import AudioConfig, build_model
from audio.streaming import StreamingFeatures, check_streaming, stream_waveform

SMALL = dict(dim=32, heads=2, layers=3, ffn_dim=64, stem_channels=4, dropout=0.0)


def stream_features(model, features):
    """``features (T, F)`` through ``model.infer`` chunk by chunk: per-frame logits ``(T, K)`` (frame task)
    or the clip logits after each chunk ``(chunks, K)`` (clip task)."""
    outputs, state = [], None
    for piece in features.split(model.config.chunk):
        output, state = model.infer(piece, state)
        outputs.append(output)
    return torch.cat(outputs) if model.config.task == "frame" else torch.stack(outputs)


def truncated_model(task="frame", chunk=8, left_chunks=2, pooling="mean", stem="strided", cepstra=0):
    """A small truncated-attention model whose biases, LayerNorms and relative position bias are all
    random: freshly initialised they are zeros (or the identity), and a wrong query or key offset, or a
    dropped projection bias, would then change nothing."""
    torch.manual_seed(0)
    config = AudioConfig(attention="truncated", task=task, num_classes=11 if task == "frame" else 10,
                         chunk=chunk, left_chunks=left_chunks, pooling=pooling, stem=stem, cepstra=cepstra, **SMALL)
    model = build_model(config).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name == "position_bias.bias":
                p.copy_(noise)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * noise)
            elif name.endswith("bias"):
                p.copy_(0.5 * noise)
        for name, b in model.named_buffers():  # batch norm's running statistics (stem "cnn-bn")
            if name.endswith("running_mean"):
                b.copy_(0.5 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model


@pytest.mark.parametrize("T", [5, 37, 400])  # 400 frames take core's blocked local path offline
@pytest.mark.parametrize("left_chunks", [0, 1, 3])
def test_streaming_equals_offline_per_frame(T, left_chunks):
    model = truncated_model(left_chunks=left_chunks)
    features = torch.randn(T, 40)
    with torch.no_grad():
        offline = model(features.unsqueeze(0), torch.tensor([T]))[0]  # (T, K)
    streamed = stream_features(model, features)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-5


@pytest.mark.parametrize("stem", ["cnn", "cnn-bn"])
@pytest.mark.parametrize("chunk", [3, 8])  # 3 < the CNN stem's 8 frames of context: it spans chunks
def test_streaming_equals_offline_with_the_cnn_stem(chunk, stem):
    model = truncated_model(chunk=chunk, stem=stem)
    assert model.input.context == 8
    features = torch.randn(41, 40)
    with torch.no_grad():
        offline = model(features.unsqueeze(0), torch.tensor([41]))[0]  # (T, K)
    assert (stream_features(model, features) - offline).abs().max() < 1e-5


def test_streaming_equals_offline_with_cepstral_smoothing():
    model = truncated_model(chunk=5, stem="cnn", cepstra=13)
    features = torch.randn(33, 40)
    with torch.no_grad():
        offline = model(features.unsqueeze(0), torch.tensor([33]))[0]  # (T, K)
    assert (stream_features(model, features) - offline).abs().max() < 1e-5


@pytest.mark.parametrize("pooling", ["mean", "attention"])  # attention: an online softmax across chunks
def test_streaming_clip_logits_after_the_last_chunk_equal_offline(pooling):
    model = truncated_model(task="clip", pooling=pooling)
    features = torch.randn(45, 40)
    with torch.no_grad():
        offline = model(features.unsqueeze(0), torch.tensor([45]))[0]
    streamed = stream_features(model, features)  # (chunks, K): the running guess after each chunk
    assert streamed.shape == (6, 10)
    assert (streamed[-1] - offline).abs().max() < 1e-5
    assert (streamed[0] - offline).abs().max() > 1e-3  # the first guess saw only 8 frames


def test_left_context_really_is_truncated():
    # A change in chunk 0 must not reach chunk 3 when only 1 chunk of left context is kept per layer
    # and the model has 3 layers... unless through the layers: 3 layers x 1 chunk reach 3 chunks back.
    model = truncated_model(left_chunks=1)
    features = torch.randn(40, 40)
    changed = features.clone()
    changed[0] += 3.0
    a, b = stream_features(model, features), stream_features(model, changed)
    assert not torch.allclose(a[24:32], b[24:32], atol=1e-4)  # chunk 3: 3 layers reach back to chunk 0
    assert torch.allclose(a[32:], b[32:], atol=1e-6)  # chunk 4 is out of reach


def test_streamed_features_equal_offline_features():
    logmel = LogMel()
    waveform = 0.1 * torch.randn(8000)
    stream = StreamingFeatures(logmel)
    pieces = [stream.push(waveform[i:i + 333]) for i in range(0, 8000, 333)]
    assert torch.allclose(torch.cat(pieces), logmel(waveform), atol=1e-5)


def test_streaming_a_waveform_matches_offline_and_reports_timing():
    model = truncated_model(chunk=16)
    logmel = LogMel()
    waveform = 0.1 * torch.randn(8000 * 2)
    with torch.no_grad():
        features = logmel(waveform)
        offline = model(features.unsqueeze(0), torch.tensor([features.shape[0]]))[0]
    stream = stream_waveform(model, waveform, logmel, 8000)
    outputs = []
    while True:
        try:
            outputs.append(next(stream))
        except StopIteration as done:
            timing = done.value
            break
    assert [first for first, _ in outputs] == list(range(0, features.shape[0], 16))
    assert (torch.cat([logits for _, logits in outputs]) - offline).abs().max() < 1e-5
    summary = timing.summary()
    assert summary["audio_seconds"] == 2.0 and summary["real_time_factor"] > 0


def test_models_that_cannot_stream_are_rejected():
    with pytest.raises(ValueError, match="look-ahead"):
        build_model(AudioConfig(attention="truncated", lookahead=2, **SMALL)).eval().infer(torch.randn(16, 40))
    with pytest.raises(ValueError, match="truncated"):
        build_model(AudioConfig(attention="window", **SMALL)).eval().infer(torch.randn(16, 40))
    with pytest.raises(ValueError, match="eval"):
        truncated_model().train().infer(torch.randn(8, 40))


def test_only_whole_chunks_until_the_last():
    model = truncated_model(chunk=8)
    with pytest.raises(ValueError, match="1 to 8 frames"):
        model.infer(torch.randn(9, 40))
    _, state = model.infer(torch.randn(3, 40))
    with pytest.raises(ValueError, match="ends the stream"):
        model.infer(torch.randn(8, 40), state)


def test_the_state_is_the_only_memory_between_chunks():
    # Two streams interleaved chunk by chunk through one model give what each gives alone.
    model = truncated_model(chunk=8)
    a, b = torch.randn(40, 40), torch.randn(40, 40)
    state_a = state_b = None
    out_a, out_b = [], []
    for piece_a, piece_b in zip(a.split(8), b.split(8)):
        y, state_a = model.infer(piece_a, state_a)
        out_a.append(y)
        y, state_b = model.infer(piece_b, state_b)
        out_b.append(y)
    assert torch.equal(torch.cat(out_a), stream_features(model, a))
    assert torch.equal(torch.cat(out_b), stream_features(model, b))


def test_check_streaming_reports_agreement_and_timing():
    report = check_streaming(truncated_model(chunk=8), torch.randn(50, 40))
    assert report["max_abs_diff"] < 1e-5 and report["chunks"] == 7 and report["real_time_factor"] > 0
