"""Figures of ``python -m text g2p compare``: where each phoneme looks among the letters, and WER by length.

- ``cross_attention_<word>.png``: the Transformer decoder's cross-attention for one test word, one panel per
  layer (rows) and head (columns); rows of a panel are the phonemes the model emits, columns the letters.
- ``lstm_attention.png``: the additive attention of the LSTM model for the same words.
- ``wer_by_length.png``: test WER against word length for every model.
- ``learning_curves.png``: validation WER per epoch.

Every alignment is taken with the model's own greedy pronunciation fed back (teacher forcing on its output),
so row t is the step that emitted phoneme t.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from core.capture import capture_attention
from core.lab.harness import load_checkpoint
from core.lab.plots import plot_learning_curves, save_figure
from text.g2p.data import BOS, Vocab
from text.g2p.models import build_model, config_from_dict
from text.g2p.train import pronounce_words

__all__ = ["pick_words", "alignment", "plot_cross_attention", "plot_lstm_attention", "plot_wer_by_length",
           "make_figures"]


def pick_words(words, lengths=(6, 9, 12)) -> list[str]:
    """One word of each length (the first in alphabetical order), for the alignment figures."""
    ordered = sorted(words)
    picked = [next((w for w in ordered if len(w) == n and w.isalpha()), None) for n in lengths]
    return [w for w in picked if w is not None] or ordered[:1]


def _encode(word: str, phonemes: tuple[str, ...], vocab: Vocab):
    letters = torch.tensor([vocab.encode_word(word)])  # (1, S)
    target_in = torch.tensor([[BOS, *vocab.encode_phonemes(phonemes)]])  # (1, T): BOS p_1 .. p_n
    return letters, torch.tensor([len(word)]), target_in


@torch.no_grad()
def alignment(model: nn.Module, word: str, phonemes: tuple[str, ...], vocab: Vocab) -> list[tuple[str, np.ndarray]]:
    """The cross-attention maps of a Transformer model, or the additive attention of an LSTM one, while it
    emits ``phonemes`` (then EOS) for ``word``: ``[(layer name, weights (H, T, S))]``, T = phonemes + 1."""
    model.eval()
    letters, lengths, target_in = _encode(word, phonemes, vocab)
    device = next(model.parameters()).device
    with capture_attention(model) as maps:
        model(letters.to(device), lengths.to(device), target_in.to(device))
    out = []
    for m in maps:
        if "cross_attn" in m.name:
            out.append((m.name, m.weights[0].float().cpu().numpy()))  # (H, T, S)
    if not out and any("attention" in m.name for m in maps):  # LSTM: one (1, 1, S) map per step, in order
        steps = [m.weights[0].float().cpu().numpy().reshape(-1) for m in maps if "attention" in m.name]
        out.append(("attention", np.stack(steps)[None]))  # (1, T, S)
    return out


def _heatmap(ax, w: np.ndarray, word: str, rows: list[str], title: str, *, show_rows: bool, show_cols: bool):
    image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(word)), labels=list(word) if show_cols else [""] * len(word))
    ax.set_yticks(range(len(rows)), labels=rows if show_rows else [""] * len(rows), fontsize=8)
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=9)
    return image


def plot_cross_attention(maps: list[tuple[str, np.ndarray]], word: str, phonemes: tuple[str, ...],
                         path: str | Path | None = None) -> Figure:
    """Layers × heads grid of ``(T, S)`` cross-attention maps for one word."""
    rows = [*phonemes, "</s>"]
    L, H = len(maps), maps[0][1].shape[0]
    fig = Figure(figsize=(1.6 + 1.9 * H, 1.0 + (0.7 + 0.2 * len(rows)) * L), layout="constrained")
    axes = fig.subplots(L, H, squeeze=False)
    for i, (_, w) in enumerate(maps):
        for h in range(H):
            image = _heatmap(axes[i, h], w[h], word, rows, f"layer {i + 1}, head {h + 1}", show_rows=h == 0,
                             show_cols=True)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    fig.suptitle(f"Transformer cross-attention for '{word}' → {' '.join(phonemes)}\n"
                 "(rows: the phoneme emitted at that step; columns: letters)", fontsize=10)
    return save_figure(fig, path)


def plot_lstm_attention(items: list[tuple[str, tuple[str, ...], np.ndarray]], path: str | Path | None = None) -> Figure:
    """One ``(T, S)`` additive-attention map per word, side by side."""
    fig = Figure(figsize=(1.6 + 2.8 * len(items), 1.6 + 0.22 * max(len(p) + 1 for _, p, _ in items)),
                 layout="constrained")
    axes = fig.subplots(1, len(items), squeeze=False)[0]
    for ax, (word, phonemes, w) in zip(axes, items):
        image = _heatmap(ax, w, word, [*phonemes, "</s>"], f"'{word}' → {' '.join(phonemes)}", show_rows=True,
                         show_cols=True)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    fig.suptitle("LSTM additive (Bahdanau) attention; the query is the decoder state before the step\n"
                 "(rows: the phoneme emitted at that step; columns: letters)", fontsize=10)
    return save_figure(fig, path)


def plot_wer_by_length(rows_by_model: dict[str, list[dict]], path: str | Path | None = None) -> Figure:
    """Test WER (%) per word-length bin, one line per model; bins labelled with their word counts."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    first = next(iter(rows_by_model.values()))
    labels = [f"{r['lo']}–{r['hi'] - 1}" if r["hi"] is not None and r["hi"] - 1 > r["lo"]
              else (f"{r['lo']}" if r["hi"] is not None else f"{r['lo']}+") for r in first]
    labels = [f"{lab}\n({r['words']})" for lab, r in zip(labels, first)]
    x = np.arange(len(labels))
    styles = [("o", "-"), ("s", "--"), ("^", ":")]
    for k, (name, rows) in enumerate(rows_by_model.items()):
        marker, line = styles[k % len(styles)]
        ax.plot(x, [100 * r["wer"] for r in rows], marker=marker, linestyle=line, label=name)
    ax.set_xticks(x, labels=labels)
    ax.set_xlabel("word length in letters (test words in the bin)")
    ax.set_ylabel("test WER (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Test word error rate against word length")
    return save_figure(fig, path)


def _model_of(record) -> nn.Module | None:
    if record.model is not None:
        return record.model
    if record.run_dir is None or not (Path(record.run_dir) / "best.pt").exists():
        return None
    ckpt = load_checkpoint(Path(record.run_dir) / "best.pt")
    vocab = Vocab.from_dict(ckpt["vocab"])
    model = build_model(ckpt["model_name"], config_from_dict(ckpt["model_name"], ckpt["config"]["config"]),
                        len(vocab.letters), len(vocab.phonemes))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def make_figures(records: dict, out: Path, data) -> list[tuple[str, str]]:
    """The ``figures`` hook of the runner: the learning curves of every seed's run, every other figure from the
    first seed's; ``(caption, file)``."""
    out = Path(out)
    figures = []
    several = any(len(recs) > 1 for recs in records.values())
    first = ", first seed" if several else ""
    by_length = {name: recs[0].extra["by_length"] for name, recs in records.items()
                 if recs and "by_length" in recs[0].extra}
    if by_length:
        plot_wer_by_length(by_length, out / "wer_by_length.png")
        figures.append((f"Test WER against word length{first} (bins labelled with their number of test words)",
                        "wer_by_length.png"))
    histories = {}
    for name, recs in records.items():
        for i, record in enumerate(recs):
            if record.history:
                seed = record.run_dir.name.removeprefix("seed") if record.run_dir is not None else str(i)
                histories[f"{name}, seed {seed}" if len(recs) > 1 else name] = record.history
    if histories:
        plot_learning_curves(histories, "val_wer", title="Validation WER (greedy) per epoch",
                             path=out / "learning_curves.png")
        figures.append((f"Validation WER per epoch{', every seed' if several else ''} (each run keeps the weights "
                        "of its lowest)", "learning_curves.png"))
    words = pick_words(data.test)
    for name in records:
        model = _model_of(records[name][0]) if records[name] else None
        if model is None:
            continue
        model = model.cpu()
        spoken = pronounce_words(model, words, data.vocab, torch.device("cpu"))
        if name == "transformer":
            for word in words:
                maps = alignment(model, word, spoken[word], data.vocab)
                file = f"cross_attention_{word}.png"
                plot_cross_attention(maps, word, spoken[word], out / file)
                figures.append((f"Transformer cross-attention for the test word '{word}'{first} (references: "
                                f"{' / '.join(' '.join(r) for r in data.test[word])}), every layer and head", file))
        elif name == "lstm-attention":
            items = [(w, spoken[w], alignment(model, w, spoken[w], data.vocab)[0][1][0]) for w in words]
            plot_lstm_attention(items, out / "lstm_attention.png")
            figures.append((f"LSTM additive attention for the same test words{first}", "lstm_attention.png"))
    return figures
