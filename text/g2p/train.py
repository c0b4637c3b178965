"""How one grapheme-to-phoneme model is trained with one seed, and how any of them is decoded and scored.

One protocol for all three models: the same split and batches (seeded by the run's seed), AdamW, a linear
warm-up then cosine decay counted in optimiser steps (``core.lab.schedule``), teacher forcing with
cross-entropy (optionally label-smoothed), gradient clipping, a budget in epochs, and selection of the kept
weights on the validation WER (greedy decoding) after every epoch. Test is decoded once, with the kept
weights (greedy, or beam search with ``TrainConfig.beam > 1``).
With a teacher (``distil``), the training targets are the teacher's pronunciations of the training words
(sequence-level knowledge distillation); validation and test are scored against the dictionary as always.

:func:`make_train_one` returns the ``train_one(spec, seed, ctx) -> RunRecord`` function of
``core.lab.runner``, which owns seeds, run folders, checkpoints and reports.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from core.decoding import beam_search, greedy_search
from core.lab.harness import autocast, average_weights
from core.lab.runner import ModelSpec, RunContext, RunRecord
from core.lab.schedule import warmup_cosine_scheduler
from text.g2p.data import (BOS, EOS, PAD, Batch, BucketBatches, Entry, Lexicon, ParseReport, Splits, Vocab,
                           entries, eval_batches)
from text.g2p.metrics import error_rates_by_length, score
from text.g2p.models import G2PEnsemble, build_model

__all__ = ["TrainConfig", "G2PData", "LENGTH_BINS", "prepare", "pronounce_words", "evaluate_lexicon",
           "make_train_one", "max_output_length", "AveragedModel", "average_last_epochs", "ChosenEnsemble",
           "choose_ensemble", "teacher_pronunciations", "distil"]

logger = logging.getLogger(__name__)

#: without --checkpoint-every, also write last.pt every this many steps inside an epoch (an epoch of the full
#: run is several minutes), so a run stopped mid-epoch loses at most this many steps
CHECKPOINT_EVERY = 100
#: word-length bins of the WER-against-length figure: 1–4, 5–6, 7–8, 9–10, 11–12, 13+ letters
LENGTH_BINS = [1, 5, 7, 9, 11, 13]


@dataclass
class TrainConfig:
    """How every model of one ``compare`` is trained (the same for all three)."""

    epochs: int = 12  # the most all three models fit in 40 minutes on 2 CPU cores (docs/text-g2p.md)
    batch_size: int = 256  # pronunciations per batch (batches group words of similar length)
    lr: float = 2e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01
    warmup_steps: int = 400  # linear warm-up, then cosine decay to 0 at the last step
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    beam: int = 1  # test decoding: 1 = greedy (validation is always greedy)
    precision: str = "fp32"  # training forward passes: "fp32", or "bf16" autocast; decoding is always fp32
    eval_batch_size: int = 512  # words per decoding batch
    keep_epochs: int = 0  # also keep the weights of the last this many epochs (for `g2p average`)


@dataclass
class G2PData:
    """The split, the vocabulary and the examples every run of one ``compare`` shares."""

    splits: Splits
    vocab: Vocab
    report: ParseReport
    train: list[Entry] = field(init=False)
    val: Lexicon = field(init=False)  # word -> references in the vocabulary's stress convention
    test: Lexicon = field(init=False)

    def __post_init__(self):
        self.train = entries(self.splits.train, self.vocab)
        self.val, self.test = self._references(self.splits.val), self._references(self.splits.test)

    def _references(self, lexicon: Lexicon) -> Lexicon:
        """word -> its distinct pronunciations in the vocabulary's stress convention."""
        return {w: list(dict.fromkeys(self.vocab.convert(p) for p in ps)) for w, ps in lexicon.items()}


def prepare(splits: Splits, report: ParseReport, stress: bool) -> G2PData:
    """The data of one ``compare`` (phonemes with stress digits when ``stress``)."""
    return G2PData(splits, Vocab.build(stress), report)


def max_output_length(letters: int) -> int:
    """Most phonemes decoded for a word of ``letters`` letters, EOS included. CMUdict's largest excess
    of phonemes over letters is 12 (``fyi``: F AO R Y AO R IH N F ER M EY SH AH N)."""
    return letters + 16


@torch.no_grad()
def pronounce_words(model: nn.Module, words: list[str], vocab: Vocab, device: torch.device, *, beam: int = 1,
                    batch_size: int = 512) -> dict[str, tuple[str, ...]]:
    """Decode ``words`` (already checked, see ``data.check_word``): word -> phonemes.

    Greedy for ``beam == 1``, else beam search of that width (total log-probability), both from
    ``core.decoding`` over the model's ``step`` function.
    """
    model.eval()
    out: dict[str, tuple[str, ...]] = {}
    for chunk, letters, lengths in eval_batches(words, vocab, batch_size):
        letters, lengths = letters.to(device), lengths.to(device)
        state = model.start(letters, lengths)
        options = dict(bos_id=BOS, eos_id=EOS, max_len=max_output_length(letters.shape[1]), device=device)
        if beam == 1:
            result = greedy_search(model.step, state, len(chunk), **options)
        else:
            result = beam_search(model.step, state, len(chunk), num_beams=beam, **options)
        for word, ids in zip(chunk, result.sequences()):
            out[word] = vocab.decode_phonemes(ids)
    return out


#: words per call of ``pronounce_words`` while a teacher pronounces the training words (one progress step each)
TEACHER_CHUNK = 4096


def teacher_pronunciations(model: nn.Module, words: list[str], vocab: Vocab, device: torch.device, *, beam: int,
                           batch_size: int = 512, progress: bool = False) -> dict[str, tuple[str, ...]]:
    """The targets of sequence-level knowledge distillation (Kim & Rush, 2016): ``model``'s pronunciation of
    each of ``words`` (beam search of width ``beam``; ``model`` may be a ``G2PEnsemble``), word -> phonemes
    in ``vocab``'s convention. A student trained on them learns one pronunciation per word, the teacher's."""
    out: dict[str, tuple[str, ...]] = {}
    chunks = [words[i:i + TEACHER_CHUNK] for i in range(0, len(words), TEACHER_CHUNK)]
    for chunk in tqdm(chunks, desc="teacher", unit="chunk", disable=True if not progress else None):
        out.update(pronounce_words(model, chunk, vocab, device, beam=beam, batch_size=batch_size))
    return out


def distil(data: G2PData, pronunciations: dict[str, tuple[str, ...]]) -> int:
    """Train on ``pronunciations`` (one per training word, from ``teacher_pronunciations``) instead of the
    dictionary's references; validation and test keep theirs. Returns how many training words the teacher
    pronounces unlike every one of their references.

    Raises:
        ValueError: ``pronunciations`` does not cover exactly the training words.
    """
    train_words = list(data.splits.train)
    if set(pronunciations) != set(train_words):
        missing, extra = set(train_words) - set(pronunciations), set(pronunciations) - set(train_words)
        raise ValueError(f"the teacher's pronunciations must cover exactly the {len(train_words)} training words: "
                         f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), {len(extra)} others "
                         f"(e.g. {sorted(extra)[:3]})")
    references = {w: {data.vocab.convert(p) for p in ps} for w, ps in data.splits.train.items()}
    data.train = [Entry(w, tuple(pronunciations[w])) for w in train_words]
    return sum(tuple(pronunciations[w]) not in references[w] for w in train_words)


def evaluate_lexicon(model: nn.Module, lexicon: Lexicon, vocab: Vocab, device: torch.device, *, beam: int = 1,
                     batch_size: int = 512) -> tuple[dict[str, float], dict[str, tuple[str, ...]]]:
    """``({"wer", "per"}, predictions)`` of ``model`` on ``lexicon`` (references in ``vocab``'s convention)."""
    predictions = pronounce_words(model, list(lexicon), vocab, device, beam=beam, batch_size=batch_size)
    s = score(predictions, lexicon)
    return {"wer": s.wer, "per": s.per}, predictions


def _loss(model: nn.Module, batch: Batch, device: torch.device, label_smoothing: float,
          precision: str = "fp32") -> torch.Tensor:
    batch = batch.to(device)
    with autocast(device, precision):
        logits = model(batch.letters, batch.lengths, batch.target_in)  # (B, T, V)
    return F.cross_entropy(logits.float().flatten(0, 1), batch.target_out.flatten(), ignore_index=PAD,
                           label_smoothing=label_smoothing)


def make_train_one(data: G2PData, config: TrainConfig) -> Callable[[ModelSpec, int, RunContext], RunRecord]:
    """The runner's ``train_one`` for ``data`` under ``config``."""

    def train_one(spec: ModelSpec, seed: int, ctx: RunContext) -> RunRecord:
        model = build_model(spec.name, spec.config, len(data.vocab.letters), len(data.vocab.phonemes))
        model = ctx.wrap(model)
        batches = BucketBatches(data.train, data.vocab, config.batch_size, seed=seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        total = config.epochs * len(batches)
        scheduler = warmup_cosine_scheduler(optimizer, total, min(config.warmup_steps, total // 2))

        def evaluate(module: nn.Module) -> dict[str, float]:
            rates, _ = evaluate_lexicon(module, data.val, data.vocab, ctx.device, batch_size=config.eval_batch_size)
            return {"val_wer": rates["wer"], "val_per": rates["per"]}

        history = ctx.fit(
            model, optimizer, train_data=batches,
            train_step=lambda m, b: _loss(m, b, ctx.device, config.label_smoothing, config.precision),
            evaluate=evaluate, epochs=config.epochs, scheduler=scheduler, scheduler_per_batch=True,
            grad_clip=config.grad_clip, checkpoint_every=ctx.checkpoint_every or CHECKPOINT_EVERY,
            keep_epochs=config.keep_epochs,
            best_extra={"vocab": data.vocab.to_dict(), "model_name": spec.name},
        )
        module = model.module if hasattr(model, "module") else model
        if not ctx.is_main:
            return RunRecord(metrics={}, history=history.epochs)
        test, predictions = evaluate_lexicon(module, data.test, data.vocab, ctx.device, beam=config.beam,
                                             batch_size=config.eval_batch_size)
        metrics = {**history.best_metrics, "test_wer": test["wer"], "test_per": test["per"]}
        by_length = error_rates_by_length(predictions, data.test, LENGTH_BINS)
        shown = sorted(data.test)[:: max(1, len(data.test) // 12)][:12]
        examples = [{"word": w, "predicted": " ".join(predictions[w]),
                     "references": [" ".join(r) for r in data.test[w]]} for w in shown]
        return RunRecord(metrics=metrics, bookkeeping=ctx.bookkeeping(history, module), history=history.epochs,
                         model=module, extra={"by_length": by_length, "examples": examples})

    return train_one


@dataclass
class AveragedModel:
    """What :func:`average_last_epochs` chose: the mean of the weights after the epochs in ``epochs`` (``k`` of
    them: the last ``k``, or one earlier epoch alone when each epoch was offered)."""

    k: int
    epochs: list[int]
    state: dict[str, torch.Tensor]
    candidates: list[dict]  # one per candidate: {"k", "epochs", "val_wer", "val_per"}
    test: dict[str, float]  # {"wer", "per"} of the chosen average, scored once
    beam: int = 1  # the decoding validation chose for test: 1 (greedy) or the beam width offered
    decodings: list[dict] = field(default_factory=list)  # the chosen average on validation: {"beam", "val_wer", "val_per"}


def average_last_epochs(model: nn.Module, states: list[dict[str, torch.Tensor]], epochs: list[int], data: G2PData,
                        device: torch.device, *, beam: int = 1, each_epoch: bool = False,
                        batch_size: int = 512) -> AveragedModel:
    """Average the weights of the last k epochs for every k (``states`` in epoch order), let the validation
    WER (greedy) choose k (ties: the fewer epochs), and score test once with the chosen average.

    k = 1 is the last epoch's own weights, so averaging is kept only where validation prefers it. With
    ``each_epoch`` every earlier epoch's own weights are candidates too (among them the epoch a run kept as
    its best), ranked with the averages by the same greedy validation WER (ties: fewer epochs, then the later
    epoch). With ``beam > 1`` validation also chooses the decoding: the chosen weights decode validation with
    that beam too, and test is decoded with the beam only where its validation WER is lower than greedy's
    (ties: greedy).
    """
    n = len(states)
    spans = [(n - 1, n)] + ([(i, i + 1) for i in range(n - 2, -1, -1)] if each_epoch else []) \
        + [(n - k, n) for k in range(2, n + 1)]  # (first, end) indices; the order breaks ties
    candidates, best = [], None
    for first, end in spans:
        state = average_weights(states[first:end])
        model.load_state_dict(state)
        rates, _ = evaluate_lexicon(model, data.val, data.vocab, device, batch_size=batch_size)
        candidates.append({"k": end - first, "epochs": epochs[first:end], "val_wer": rates["wer"],
                           "val_per": rates["per"]})
        logger.info("average of %d epoch(s) (%d-%d): val WER %.2f%%, PER %.2f%%", end - first, epochs[first],
                    epochs[end - 1], 100 * rates["wer"], 100 * rates["per"])
        if best is None or rates["wer"] < best[0]:
            best = (rates["wer"], candidates[-1], state)
    wer, kept, state = best
    model.load_state_dict(state)
    decodings = [{"beam": 1, "val_wer": wer, "val_per": kept["val_per"]}]
    if beam > 1:
        rates, _ = evaluate_lexicon(model, data.val, data.vocab, device, beam=beam, batch_size=batch_size)
        decodings.append({"beam": beam, "val_wer": rates["wer"], "val_per": rates["per"]})
        logger.info("the chosen weights with %d beams: val WER %.2f%%, PER %.2f%% (greedy %.2f%%)", beam,
                    100 * rates["wer"], 100 * rates["per"], 100 * wer)
    chosen_beam = min(decodings, key=lambda d: (d["val_wer"], d["beam"]))["beam"]
    test, _ = evaluate_lexicon(model, data.test, data.vocab, device, beam=chosen_beam, batch_size=batch_size)
    return AveragedModel(kept["k"], kept["epochs"], state, candidates, test, chosen_beam, decodings)


@dataclass
class ChosenEnsemble:
    """What :func:`choose_ensemble` chose: the members (indices into the models given) and their scores."""

    members: tuple[int, ...]
    candidates: list[dict]  # one per subset: {"members", "val_wer", "val_per"}
    test: dict[str, float]  # {"wer", "per"} of the chosen ensemble, scored once


def choose_ensemble(models: list[nn.Module], data: G2PData, device: torch.device, *, beam: int = 1,
                    batch_size: int = 512) -> ChosenEnsemble:
    """Score every non-empty subset of ``models`` as an ensemble on validation (greedy), keep the subset with
    the lowest WER (ties: fewer members, then the earlier models), and score test once with it.

    A subset of one is that model alone, so the ensemble is kept only where validation prefers it.
    """
    candidates, best = [], None
    for size in range(1, len(models) + 1):
        for members in itertools.combinations(range(len(models)), size):
            ensemble = G2PEnsemble([models[i] for i in members])
            rates, _ = evaluate_lexicon(ensemble, data.val, data.vocab, device, batch_size=batch_size)
            candidates.append({"members": list(members), "val_wer": rates["wer"], "val_per": rates["per"]})
            logger.info("ensemble of %s: val WER %.2f%%, PER %.2f%%", "+".join(str(i + 1) for i in members),
                        100 * rates["wer"], 100 * rates["per"])
            if best is None or rates["wer"] < best[0]:
                best = (rates["wer"], members)
    members = best[1]
    test, _ = evaluate_lexicon(G2PEnsemble([models[i] for i in members]), data.test, data.vocab, device, beam=beam,
                               batch_size=batch_size)
    return ChosenEnsemble(members, candidates, test)
