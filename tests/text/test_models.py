import pytest
import torch

from text.data import Sentence, TaggingDataset, Vocabularies, collate
from text.models import TaggerConfig, build_tagger

TRAIN = [
    Sentence("He reckons the current account deficit will narrow .".split(),
             "B-NP B-VP B-NP I-NP I-NP I-NP B-VP I-VP O".split(),
             ["PRP VBZ DT JJ NN NN MD VB .".split()]),
    Sentence("Rockwell said it signed".split(), "B-NP B-VP B-NP B-VP".split(), ["NNP VBD PRP VBD".split()]),
    Sentence("Boeing rose".split(), "B-NP B-VP".split(), ["NNP VBD".split()]),
]
VOCABS = Vocabularies.build(TRAIN)
DATA = TaggingDataset(TRAIN, VOCABS)
VARIANTS = [
    dict(model="attention"),
    dict(model="attention", crf=False, positions="sinusoidal"),
    dict(model="attention", positions="both", char_channels=0),
    dict(model="attention", positions="learned"),
    dict(model="bilstm"),
    dict(model="bilstm", crf=False, lstm_layers=2),
    dict(model="cnn"),
    dict(model="cnn", crf=False),
]


def config(**change) -> TaggerConfig:
    small = dict(word_dim=12, shape_dim=4, feature_dim=4, char_dim=6, char_channels=8, dim=16, heads=4, ffn_dim=32,
                 hidden=8, channels=16, max_distance=3)
    return TaggerConfig(num_words=len(VOCABS.words), num_chars=len(VOCABS.chars), num_labels=len(VOCABS.labels),
                        feature_vocab_sizes=[len(v) for v in VOCABS.features], **{**small, **change})


@pytest.mark.parametrize("change", VARIANTS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_shapes_finite_loss_and_every_parameter_gets_a_gradient(change):
    torch.manual_seed(0)
    model = build_tagger(config(**change, word_dropout=0.0))
    batch = collate([DATA[0], DATA[1], DATA[2]])
    assert model.emissions(batch).shape == (3, 9, len(VOCABS.labels))
    loss = model.loss(batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
    predicted = model.predict(batch)
    assert predicted.shape == (3, 9) and predicted[1, 4:].eq(0).all() and predicted[2, 2:].eq(0).all()


@pytest.mark.parametrize("model", ["attention", "bilstm", "cnn"])
def test_padding_does_not_change_a_sentence_s_scores(model):
    torch.manual_seed(0)
    tagger = build_tagger(config(model=model)).eval()
    with torch.no_grad():
        alone = tagger.emissions(collate([DATA[2]]))  # (1, 2, K)
        padded = tagger.emissions(collate([DATA[0], DATA[2]]))  # the same sentence padded to 9 words
    assert torch.allclose(alone[0], padded[1, :2], atol=1e-5)
    assert not torch.allclose(padded[0, :2], padded[1, :2])  # different sentences do differ


def test_relative_positions_are_direction_aware():
    """With the relative bias, a word's scores depend on which side a neighbour is on."""
    torch.manual_seed(0)
    tagger = build_tagger(config(model="attention", positions="relative", layer_dropout=0.0, dropout=0.0)).eval()
    with torch.no_grad():
        for bias in tagger.relative:
            bias.bias.copy_(torch.randn_like(bias.bias) * 3)
    forward = Sentence(["the", "deficit", "the"], ["O"] * 3, [["DT", "NN", "DT"]])
    data = TaggingDataset([forward], VOCABS)
    with torch.no_grad():
        scores = tagger.emissions(collate([data[0]]))[0]
    # words 0 and 2 are the same word, with "deficit" on their right and on their left respectively
    assert not torch.allclose(scores[0], scores[2], atol=1e-4)
    none = build_tagger(config(model="attention", positions="none", layer_dropout=0.0, dropout=0.0)).eval()
    with torch.no_grad():
        scores = none.emissions(collate([data[0]]))[0]
    assert torch.allclose(scores[0], scores[2], atol=1e-5)  # without positions attention is order-blind


def test_sentence_longer_than_any_in_training_still_tags():
    torch.manual_seed(0)
    long = Sentence(["word"] * 100, ["O"] * 100, [["NN"] * 100])  # training sentences have at most 9
    batch = collate([TaggingDataset([long], VOCABS)[0]])
    for model in ["attention", "bilstm", "cnn"]:
        tagger = build_tagger(config(model=model, positions="both")).eval()
        predicted = tagger.predict(batch)
        assert predicted.shape == (1, 100) and predicted.max() < len(VOCABS.labels)


def test_char_cnn_equals_the_per_word_convolution():
    from text.models import CharCNN

    torch.manual_seed(0)
    cnn = CharCNN(num_chars=10, char_dim=4, channels=6, kernel=3)
    chars = torch.tensor([[[3, 4, 0], [5, 0, 0], [3, 4, 0]], [[6, 7, 8], [0, 0, 0], [0, 0, 0]]])  # (B=2, T=3, L=3)
    out = cnn(chars)
    assert out.shape == (2, 3, 6) and out[1, 1:].eq(0).all()
    for b, t in [(0, 0), (0, 1), (1, 0)]:
        word = chars[b, t][chars[b, t] > 0]
        expected = cnn.conv(cnn.embed(word).T.unsqueeze(0)).amax(dim=2)[0]  # the word alone, no padding
        assert torch.allclose(out[b, t], expected, atol=1e-6)
    assert torch.equal(out[0, 0], out[0, 2])  # one spelling, one vector
