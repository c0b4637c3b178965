"""How one audio model is trained with one seed: length-bucketed batches, AdamW with a one-cycle schedule
counted in steps, ``core.lab.harness.fit`` (through the runner's ``RunContext``) keeping the weights best
on validation, then the test metrics, scored once.

Metrics (split-prefixed, see ``core.lab.runner.MetricsContract``): for the digits task ``val_accuracy`` and
``test_accuracy`` per clip; for connected digits ``val_frame_accuracy`` / ``test_frame_accuracy`` (padding
excluded) and ``val_der`` / ``test_der``, the digit error rate of the strings read off the frame labels.

Under torchrun every batch is split across the processes by item, so the global batch is the one a
single process would train on; rank 0 alone evaluates and scores test.

Legend: B batch, T frames, F mel bins, K classes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from audio.connected import ConnectedConfig, decode_frames, digit_error_rate, make_connected_set
from audio.data import (IGNORE_INDEX, NUM_DIGITS, AudioError, ClipDataset, FrameDataset, LogMel, Recording,
                        clip_features, collate, enrolment, length_batches, list_recordings, loso_folds,
                        normalise_by_speaker, speaker_statistics, split_recordings)
from audio.models import AudioConfig, build_model
from audio.streaming import check_streaming
from core.lab.datasets import content_key
from core.lab.harness import load_checkpoint
from core.lab.runner import MetricsContract, ModelSpec, RunContext, RunRecord

__all__ = ["CONTRACTS", "INTROS", "TrainConfig", "TaskData", "load_task", "load_tasks", "fold_specs", "compare_notes",
           "Batches", "train_one", "evaluate", "load_model", "summarize", "loso_summary"]

#: The digits task leads with test accuracy and keeps the weights best in validation accuracy; connected
#: digits leads with the digit error rate and keeps the weights best in validation frame accuracy.
CONTRACTS = {
    "digits": MetricsContract(headline="test_accuracy", select="val_accuracy", mode="max"),
    "connected": MetricsContract(headline="test_der", select="val_frame_accuracy", mode="max"),
}
#: The report's opening paragraph per task.
INTROS = {
    "digits": "Free Spoken Digit Dataset, one clip one digit (log-mel frames, 100 per second). Attention "
              "variants differ only in which frames each frame may see; the baselines share the front-end, "
              "SpecAugment, optimiser, schedule and early stopping.",
    "connected": "Connected digits: FSDD recordings of the split joined with pauses and low noise into long "
                 "utterances, labelled per frame (digit or silence). Models train on short utterances and are "
                 "tested on long ones; DER is the edit distance between decoded and true digit strings over "
                 "the number of true digits.",
}


@dataclass
class TrainConfig:
    """How every model is trained (one protocol for attention models and baselines).

    Args:
        epochs (int): the most epochs.
        patience (int): stop after this many epochs without a better validation metric.
        lr (float): peak learning rate of the one-cycle schedule.
        weight_decay (float): AdamW weight decay.
        max_frames (int): frames per padded batch (batch size times padded length), over all processes.
        grad_clip (float): global gradient-norm clip.
        min_run (int): connected digits: label runs shorter than this many frames are dropped when the
            digit string is decoded.
        mixup (float): digits: mixup's alpha (Zhang et al. 2018): each training batch is mixed with a shuffled
            copy of itself, features and loss, by one weight drawn from Beta(alpha, alpha); 0 turns it off.
    """

    epochs: int = 40
    patience: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.05
    max_frames: int = 2400
    grad_clip: float = 1.0
    min_run: int = 5
    mixup: float = 0.0


@dataclass
class TaskData:
    """What a task trains and is scored on.

    Attributes:
        datasets (dict[str, Dataset]): ``train``, ``val`` and ``test``.
        task (str): the models' ``task``: ``"clip"`` or ``"frame"``.
        num_classes (int): K (10 digits, 11 with silence).
        identity (dict): what the data is (files, split, generation), for the runner's resume checks.
    """

    datasets: dict[str, Dataset]
    task: str
    num_classes: int
    identity: dict


def load_task(task: str, split: dict[str, list[Recording]], *, split_name: str, data_seed: int,
              connected: dict[str, tuple[int, float, float]] | None = None, speeds: tuple[float, ...] = (),
              speaker_norm: bool = False, speaker_clips: int | None = None, progress: bool = True) -> TaskData:
    """The datasets of ``task`` from recordings already split into ``train`` / ``val`` / ``test``.

    Args:
        task (str): ``"digits"`` (one clip, one digit) or ``"connected"`` (utterances labelled per frame).
        split (dict[str, list[Recording]]): from ``audio.data.split_recordings``.
        split_name (str): the split rule, e.g. ``"standard"`` (names the generated sets' caches).
        data_seed (int): seeds the utterance generation (connected).
        connected (dict[str, tuple[int, float, float]], optional): per split ``(count, min_seconds,
            max_seconds)`` of the generated utterances; needed for ``"connected"``.
        speeds (tuple[float, ...]): digits: speed perturbation: the training clips also played at these
            speeds (``audio.data.change_speed``); each training batch draws one version of every clip.
        speaker_norm (bool): digits: every clip normalised with its speaker's statistics over all of that
            speaker's clips in ``split`` (``audio.data.normalise_by_speaker``; models built with
            ``feature_norm="speaker"`` expect it). (default: ``False``)
        speaker_clips (int, optional): with ``speaker_norm``, each speaker's statistics from only this many of
            its clips in ``split``, drawn with ``data_seed`` (an enrolment of that many recordings); every clip
            is still normalised and scored. (default: all of them)
        progress (bool): bars while features are computed or utterances generated. (default: ``True``)
    """
    logmel = LogMel()
    files = {name: content_key(sorted(r.path for r in part)) for name, part in split.items()}
    if task == "digits":
        every = [r for part in split.values() for r in part]
        features = clip_features(every, logmel, progress)
        variants = [clip_features(split["train"], logmel, progress, speed) for speed in speeds]
        if speaker_norm:  # the speed-perturbed versions take the statistics of the clips themselves
            enrolled = enrolment(every, speaker_clips, data_seed)
            stats = speaker_statistics([features[i] for i in enrolled], [every[i].speaker for i in enrolled])
            features = normalise_by_speaker(features, [r.speaker for r in every], stats)
            variants = [normalise_by_speaker(v, [r.speaker for r in split["train"]], stats) for v in variants]
        by_path = dict(zip((r.path for r in every), features))
        datasets = {name: ClipDataset([by_path[r.path] for r in part], [r.digit for r in part])
                    for name, part in split.items()}
        datasets["train"].variants = variants
        return TaskData(datasets, "clip", NUM_DIGITS, {"task": task, "split": split_name, "data_seed": data_seed,
                                                       "files": files, **({"speeds": list(speeds)} if speeds else {}),
                                                       **({"feature_norm": "speaker", "speaker_clips": speaker_clips}
                                                          if speaker_norm else {})})
    if speeds:
        raise ValueError("speed perturbation is for the digits task")
    if speaker_norm:
        raise ValueError("speaker normalisation is for the digits task")
    datasets = {}
    for offset, (name, (count, low, high)) in enumerate(connected.items()):
        config = ConnectedConfig(count=count, min_seconds=low, max_seconds=high, seed=data_seed * 10 + offset)
        generated = make_connected_set(split[name], config, logmel, name=f"{split_name.replace(':', '-')}-{name}",
                                       progress=progress)
        datasets[name] = FrameDataset(generated["features"], generated["labels"])
    return TaskData(datasets, "frame", NUM_DIGITS + 1, {"task": task, "split": split_name, "data_seed": data_seed,
                                                        "files": files, "connected": connected})


def load_tasks(task: str, split: str, *, data_dir: str | None = None, loso_validation: str = "speaker",
               train_every: int = 1, data_seed: int = 0, connected: dict[str, tuple[int, float, float]] | None = None,
               speeds: tuple[float, ...] = (), speaker_norm: bool = False, speaker_clips: int | None = None,
               progress: bool = True) -> dict[str, TaskData]:
    """The data of every fold of ``split``: one entry named by the split (``"standard"``, ``"speaker:NAME"``),
    or for ``"loso"`` one per held-out speaker (validated as ``loso_validation`` says). Every
    ``train_every``-th training clip in name order is kept; validation and test stay whole."""
    recordings = list_recordings(data_dir)
    loso = split == "loso"
    try:
        splits = loso_folds(recordings, validation=loso_validation, seed=data_seed) if loso else {
            split: split_recordings(recordings, split, seed=data_seed)}
    except ValueError as error:  # an unknown split or speaker: the user's to fix
        raise AudioError(str(error)) from None
    tasks = {}
    for name, parts in splits.items():
        parts["train"] = sorted(parts["train"], key=lambda r: r.path.name)[::train_every]
        tasks[name] = load_task(task, parts, split_name=f"speaker:{name}" if loso else name, data_seed=data_seed,
                                progress=progress, connected=connected, speeds=speeds, speaker_norm=speaker_norm,
                                speaker_clips=speaker_clips)
    return tasks


def fold_specs(specs: list[ModelSpec], speakers) -> tuple[list[ModelSpec], dict[str, tuple[str, str]]]:
    """Leave-one-speaker-out: one row per model and held-out speaker, named ``"MODEL | SPEAKER"``. Returns the
    rows and ``{row: (model, speaker)}``."""
    folds = {f"{s.name} | {speaker}": (s.name, speaker) for s in specs for speaker in speakers}
    rows = [ModelSpec(row, s.role, s.config, seeds=s.seeds) for s in specs for row, (model, _) in folds.items()
            if model == s.name]
    return rows, folds


def compare_notes(tasks: dict[str, TaskData], base: AudioConfig, train: TrainConfig, contract: MetricsContract, *,
                  loso_validation: str | None = None, train_every: int = 1) -> list[str]:
    """The report's notes on the data, the attention model, the shared protocol and (LOSO) the folds."""
    name, data = next(iter(tasks.items()))
    sizes = [f"{len(d)} {n} items ({sum(len(d[i][0]) for i in range(len(d))) / 6000:.1f} min)"
             for n, d in data.datasets.items()]
    subset = f" (every {train_every}-th training clip, --train-every)" if train_every > 1 else ""
    clips = data.identity.get("speaker_clips")
    speeds = data.identity.get("speeds")
    if speeds:
        subset += (f"; speed perturbation: each training clip drawn at speed 1 or {', '.join(f'{v:g}' for v in speeds)}"
                   " (resampled audio), one version per batch")
    notes = [(f"fold {name} held out: " if loso_validation else "") + ", ".join(sizes) + subset,
             f"attention model: D={base.dim}, {base.layers} layers, {base.heads} heads, causal conv stem "
             f"({base.stem}), relative position bias; window w={base.window}, truncated c={base.chunk}, "
             f"L={base.left_chunks}, r={base.lookahead}",
             f"protocol for every model: AdamW lr {train.lr}, one-cycle over {train.epochs} epochs (counted in steps), "
             f"early stopping with patience {train.patience} on {contract.select}, {train.max_frames} frames per batch",
             (f"log-mel frames smoothed to their first {base.cepstra} cepstral coefficients; " if base.cepstra else "")
             + f"feature normalisation: {base.feature_norm}"
             + ((" (each clip with the mean and std of " + (f"{clips} of its speaker's clips, drawn by the data seed"
                                                             if clips else "all its speaker's clips")
                 + ", labels unused; a held-out speaker's statistics come from its own recordings: an adaptation "
                   "to the new voice, which a deployment could only make after hearing some of it)")
                if base.feature_norm == "speaker" else "")
             + f"; {base.pooling} pooling; dropout {base.dropout}; "
             + (f"VTLP: each training clip's frequency axis warped by a factor in [{1 - base.vtlp:g}, "
                f"{1 + base.vtlp:g}]; " if base.vtlp else "")
             + "SpecAugment: "
             + (f"{base.freq_masks} frequency masks per clip (up to {base.freq_mask_width} bins), {base.time_masks} "
                f"time masks per second (up to {base.time_mask_width} frames)"
                if base.freq_masks or base.time_masks else "off")
             + (f"; mixup: every training batch mixed with a shuffled copy of itself, weight ~ Beta({train.mixup:g}, "
                f"{train.mixup:g})" if train.mixup else "")]
    if loso_validation:
        how = ("every clip of one more held-out speaker (the next in name order), so validation measures new voices "
               "as test does" if loso_validation == "speaker" else "10% of the training speakers' clips")
        notes.append(f"leave one speaker out: {len(tasks)} folds ({', '.join(tasks)}); each fold tests on every clip "
                     f"of its held-out speaker and trains on other speakers; validation (chooses the epoch): {how}")
    return notes


class Batches:
    """Length-bucketed batches of a dataset, in a new order every epoch; this process's share of each.

    The shuffling uses ``self.generator``, which ``core.lab.harness.fit`` saves and restores with its
    checkpoints, so a resumed run sees the batches an uninterrupted one would have. Shuffled batches of a
    ``ClipDataset`` with speed variants take each clip in a version drawn with the same generator. With ``world_size``
    processes each batch is split by item (``items[rank::world_size]``); a batch with fewer items than
    processes gives the missing ranks its last item, so every process takes every step.

    With ``mixup`` (alpha > 0; shuffled batches of one label per clip only) every clip of a batch is paired
    with a partner from the same batch (a seeded permutation of it) and one weight ``lam`` is drawn from
    Beta(alpha, alpha): the batch's ``features`` are ``lam * clip + (1 - lam) * partner`` (both padded to the
    longer; ``lengths`` the longer of each pair), and it carries ``mix_labels`` (the partners' labels) and
    ``mix_lambda`` for :func:`loss_of`. The draws come from ``self.generator`` before the batch is shared
    out, so every process draws the same.
    """

    def __init__(self, dataset: Dataset, max_frames: int, *, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, mixup: float = 0.0):
        if mixup < 0:
            raise ValueError(f"mixup's alpha must be >= 0 (0: off), got {mixup}")
        self.dataset, self.shuffle, self.rank, self.world_size = dataset, shuffle, rank, world_size
        self.mixup = mixup if shuffle else 0.0  # evaluation batches are never mixed
        self.generator = torch.Generator().manual_seed(seed)
        lengths = [dataset[i][0].shape[0] for i in range(len(dataset))]
        self.batches = length_batches(lengths, max_frames, shuffle=False)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        count = len(self.batches)
        order = torch.randperm(count, generator=self.generator) if self.shuffle else range(count)
        versions = getattr(self.dataset, "versions", 1) if self.shuffle else 1
        for i in order:
            items = self.batches[int(i)]
            drawn = ([0] * len(items) if versions == 1  # drawn for the whole batch: every process draws the same
                     else torch.randint(versions, (len(items),), generator=self.generator).tolist())
            pairs = list(zip(items, drawn))
            if not self.mixup:
                yield self.collate(pairs)
                continue
            partner = torch.randperm(len(pairs), generator=self.generator).tolist()
            lam = float(np.random.default_rng(int(torch.randint(2**62, (1,), generator=self.generator)))
                        .beta(self.mixup, self.mixup))
            yield mix(self.collate(pairs), self.collate([pairs[k] for k in partner]), lam)

    def collate(self, pairs: list[tuple[int, int]]) -> dict[str, Tensor]:
        """This process's share of ``(item, version)`` pairs, read and padded."""
        share = pairs[self.rank::self.world_size] or pairs[-1:]  # only this process's items are read
        return collate([self.dataset.item(j, v) if v else self.dataset[j] for j, v in share])


def mix(batch: dict[str, Tensor], partner: dict[str, Tensor], lam: float) -> dict[str, Tensor]:
    """Mixup of two collated batches of clips, item by item: ``lam * batch + (1 - lam) * partner``.

    Shapes:
        features (B, T, F) and (B, T', F) -> (B, max(T, T'), F); lengths the larger of each pair;
        ``labels`` kept, ``mix_labels`` the partner's (B,), ``mix_lambda`` a scalar tensor.
    """
    if batch["labels"].dim() != 1:
        raise ValueError("mixup mixes clips with one label each; this batch has a label per frame")
    frames = max(batch["features"].shape[1], partner["features"].shape[1])
    a, b = (F.pad(x["features"], (0, 0, 0, frames - x["features"].shape[1])) for x in (batch, partner))
    return {"features": lam * a + (1 - lam) * b, "lengths": torch.maximum(batch["lengths"], partner["lengths"]),
            "labels": batch["labels"], "mix_labels": partner["labels"], "mix_lambda": torch.tensor(lam)}


def loss_of(model: nn.Module, batch: dict[str, Tensor], device: torch.device) -> Tensor:
    """Cross-entropy of a batch; of a mixed batch (:func:`mix`), ``lam`` times that of its labels plus
    ``1 - lam`` times that of its partners' labels."""
    logits = model(batch["features"].to(device), batch["lengths"].to(device)).flatten(0, -2)  # (B or B*T, K)
    loss = F.cross_entropy(logits, batch["labels"].to(device).flatten(), ignore_index=IGNORE_INDEX)
    if "mix_lambda" in batch:
        lam = float(batch["mix_lambda"])
        loss = lam * loss + (1 - lam) * F.cross_entropy(logits, batch["mix_labels"].to(device))
    return loss


@torch.no_grad()
def predict(model: nn.Module, batches: Batches, device: torch.device) -> tuple[list[Tensor], list[Tensor]]:
    """Predicted and true labels of every item, unpadded, in batch order."""
    model.eval()
    predicted, truth = [], []
    for batch in batches:
        labels = model(batch["features"].to(device), batch["lengths"].to(device)).argmax(-1).cpu()  # (B,) or (B, T)
        for b, length in enumerate(batch["lengths"].tolist()):
            if labels.dim() == 1:
                predicted.append(labels[b]), truth.append(batch["labels"][b])
            else:
                predicted.append(labels[b, :length]), truth.append(batch["labels"][b, :length])
    return predicted, truth


def evaluate(model: nn.Module, batches: Batches, config: AudioConfig, train: TrainConfig, split: str,
             device: torch.device) -> dict[str, float]:
    """``{split}_accuracy`` (clip task), or ``{split}_frame_accuracy`` and ``{split}_der`` (frame task)."""
    predicted, truth = predict(model, batches, device)
    if config.task == "clip":
        return {f"{split}_accuracy": torch.stack(predicted).eq(torch.stack(truth)).float().mean().item()}
    correct = sum(int(p.eq(t).sum()) for p, t in zip(predicted, truth))
    frames = sum(t.numel() for t in truth)
    hypotheses = [decode_frames(p, train.min_run) for p in predicted]
    references = [decode_frames(t, 1) for t in truth]
    return {f"{split}_frame_accuracy": correct / frames, f"{split}_der": digit_error_rate(hypotheses, references)}


def train_one(spec: ModelSpec, seed: int, ctx: RunContext, *, datasets: dict[str, Dataset]) -> RunRecord:
    """Train ``spec.config`` (an ``AudioConfig``) with one seed; the runner has seeded everything.

    Args:
        spec (ModelSpec): the model.
        seed (int): seeds SpecAugment and the batch order (initialisation was seeded by the runner).
        ctx (RunContext): run folder, device, processes; ``ctx.train`` is a ``TrainConfig``.
        datasets (dict[str, Dataset]): ``train``, ``val`` and ``test`` (bind with ``functools.partial``).

    Returns:
        RunRecord: validation metrics of the kept weights and the test metrics, scored once on them;
        bookkeeping ``best_epoch``, ``epochs``, ``steps``, ``seconds``, ``params``, ``test_seconds``.
    """
    config: AudioConfig = spec.config
    train: TrainConfig = ctx.train
    model = build_model(config)
    model.frontend.set_statistics([datasets["train"][i][0] for i in range(len(datasets["train"]))])
    model = ctx.wrap(model)
    train_batches = Batches(datasets["train"], train.max_frames, shuffle=True, seed=seed, rank=ctx.dist.rank,
                            world_size=ctx.dist.world_size, mixup=train.mixup)
    val_batches = Batches(datasets["val"], train.max_frames, shuffle=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, pct_start=0.15,
                                                    total_steps=train.epochs * len(train_batches))
    device = ctx.device
    history = ctx.fit(model, optimizer, train_data=train_batches,
                      train_step=lambda m, batch: loss_of(m, batch, device),
                      evaluate=lambda m: evaluate(m, val_batches, config, train, "val", device),
                      epochs=train.epochs, keep="best", patience=train.patience, scheduler=scheduler,
                      scheduler_per_batch=True, grad_clip=train.grad_clip)
    module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not ctx.is_main:
        return RunRecord(metrics={}, history=history.epochs)
    started = time.perf_counter()
    test = evaluate(module, Batches(datasets["test"], train.max_frames, shuffle=False), config, train, "test", device)
    bookkeeping = ctx.bookkeeping(history, module, test_seconds=time.perf_counter() - started)
    return RunRecord(metrics={**history.best_metrics, **test}, bookkeeping=bookkeeping, history=history.epochs,
                     model=module.cpu().eval())


def load_model(config: AudioConfig, record: RunRecord) -> nn.Module:
    """The record's trained model: in memory when this invocation trained it, else from its ``best.pt``."""
    if record.model is not None:
        return record.model
    model = build_model(config)
    model.load_state_dict(load_checkpoint(record.run_dir / "best.pt")["model"])
    return model.eval()


def summarize(records: dict[str, list[RunRecord]], results: list, *, task: str, configs: dict[str, AudioConfig],
              test: Dataset) -> tuple[list[str], dict]:
    """The headline attention variant (best mean validation metric over every seed, never test), how DER moves
    from training lengths to the long test (connected), and streaming == offline for the truncated model: the
    runner's ``Experiment.summary``, called once every run is done. Returns report notes and metrics.json keys."""
    contract = CONTRACTS[task]
    sign = 1 if contract.mode == "max" else -1
    full_seeds = [r for r in results if r.role == "attention" and len(r.runs) == max(len(x.runs) for x in results)]
    notes, extra = [], {}
    if full_seeds:
        best = max(full_seeds, key=lambda r: sign * r.metrics[contract.select])
        extra["headline_attention"] = {"model": best.model, "chosen_on": contract.select}
        notes.append(f"headline attention variant, chosen on validation ({contract.select} "
                     f"{best.metrics[contract.select]:.4f}): {best.model}, {contract.headline} "
                     f"{best.metrics[contract.headline]:.4f}")
    if task == "connected":
        notes.append("DER on the validation utterances (training lengths) -> on the long test utterances: "
                     + ", ".join(f"{r.model} {r.metrics['val_der']:.3f} -> {r.metrics['test_der']:.3f}"
                                 for r in results))
    name = next((n for n, c in configs.items() if c.model == "attention" and c.attention == "truncated"), None)
    if name is not None and configs[name].lookahead == 0 and records[name]:
        longest = max(range(len(test)), key=lambda i: test[i][0].shape[0])
        streaming = check_streaming(load_model(configs[name], records[name][0]).cpu(), test[longest][0])
        extra["streaming"] = streaming
        notes.append(f"streaming {name} chunk by chunk (`AttentionModel.infer`) over the longest test item "
                     f"({streaming['audio_seconds']:.1f} s): max |streamed - offline| = "
                     f"{streaming['max_abs_diff']:.2e}; "
                     f"{streaming['chunk_ms_mean']:.1f} ms per {configs[name].chunk * 10} ms chunk on average (max "
                     f"{streaming['chunk_ms_max']:.1f}), real-time factor {streaming['real_time_factor']:.3f} "
                     "(model only)")
    return notes, extra


def loso_summary(records: dict[str, list[RunRecord]], results: list, *,
                 folds: dict[str, tuple[str, str]]) -> tuple[list[str], dict]:
    """Leave-one-speaker-out, per model: test accuracy on every held-out speaker (mean over seeds), the mean
    and spread over the folds, the worst speaker, and the mean validation accuracy (what chose each fold's
    epoch, and what compares front-ends and models); with several seeds also the mean over the folds seed by
    seed (``per_seed_mean_test_accuracy``, keyed by run folder) and its spread over seeds, which says how far
    one seed's LOSO mean can be trusted; the same for validation (``per_seed_mean_val_accuracy``), which says
    how large a difference between candidates validation can tell from the seed. Every model after the first
    also gets ``gap_to_reference``: its mean test accuracy minus the first model's (the attention model's,
    in ``model_specs`` order), overall and seed by seed. The runner's ``Experiment.summary``."""
    per_model: dict[str, dict] = {}
    for row, (model, speaker) in folds.items():
        runs = records.get(row) or []
        if not runs:
            continue
        entry = per_model.setdefault(model, {"test_accuracy": {}, "val_accuracy": {}, "by_seed": {}})
        for key in ("test_accuracy", "val_accuracy"):
            entry[key][speaker] = sum(r.metrics[key] for r in runs) / len(runs)
        for k, run in enumerate(runs):  # the k-th seed of the invocation, in every fold
            name = run.run_dir.name if run.run_dir is not None else f"seed #{k}"
            entry["by_seed"].setdefault(name, {})[speaker] = run.metrics  # (seed name -> speaker -> metrics)
    notes, summary = [], {}
    for model, entry in per_model.items():
        tests = torch.tensor(list(entry["test_accuracy"].values()), dtype=torch.float64)
        worst = min(entry["test_accuracy"], key=entry["test_accuracy"].get)
        summary[model] = {
            "per_speaker_test_accuracy": entry["test_accuracy"],
            "per_speaker_val_accuracy": entry["val_accuracy"],
            "mean_test_accuracy": float(tests.mean()),
            "std_test_accuracy": float(tests.std()) if len(tests) > 1 else 0.0,
            "min_test_accuracy": float(tests.min()), "worst_speaker": worst,
            "mean_val_accuracy": sum(entry["val_accuracy"].values()) / len(entry["val_accuracy"]),
            "folds": len(tests),
        }
        complete = {name: by for name, by in entry["by_seed"].items()
                    if len(by) == len(entry["test_accuracy"])}  # seeds with every fold
        if len(complete) > 1:  # how far the LOSO mean itself moves with the seed
            for key in ("test_accuracy", "val_accuracy"):
                means = {name: sum(m[key] for m in by.values()) / len(by) for name, by in complete.items()}
                summary[model][f"per_seed_mean_{key}"] = means
                summary[model][f"seed_std_of_mean_{key}"] = float(torch.tensor(list(means.values()),
                                                                              dtype=torch.float64).std())
        s = summary[model]
        notes.append(f"LOSO {model}: test accuracy {100 * s['mean_test_accuracy']:.2f} ± {100 * s['std_test_accuracy']:.2f}% "
                     f"over {s['folds']} held-out speakers (worst {worst} {100 * s['min_test_accuracy']:.2f}%); "
                     f"mean validation accuracy {100 * s['mean_val_accuracy']:.2f}%"
                     + (f"; the mean over the folds, seed by seed: "
                        + ", ".join(f"{name} {100 * v:.2f}%" for name, v in s["per_seed_mean_test_accuracy"].items())
                        + f" (std over seeds {100 * s['seed_std_of_mean_test_accuracy']:.2f})"
                        if "per_seed_mean_test_accuracy" in s else ""))
    models = list(summary)
    for model in models[1:]:  # how far each later model (a baseline) is ahead of the first (attention)
        reference, entry = summary[models[0]], summary[model]
        gap = {"reference": models[0], "mean": entry["mean_test_accuracy"] - reference["mean_test_accuracy"]}
        if "per_seed_mean_test_accuracy" in entry and "per_seed_mean_test_accuracy" in reference:
            gap["per_seed"] = {name: value - reference["per_seed_mean_test_accuracy"][name]
                               for name, value in entry["per_seed_mean_test_accuracy"].items()
                               if name in reference["per_seed_mean_test_accuracy"]}
        entry["gap_to_reference"] = gap
        notes.append(f"LOSO {model} - {models[0]}: {100 * gap['mean']:+.2f} points on the mean test accuracy"
                     + ("; seed by seed: " + ", ".join(f"{name} {100 * v:+.2f}" for name, v in gap["per_seed"].items())
                        if gap.get("per_seed") else ""))
    return notes, {"loso": summary}
