"""One protocol for every audio model: length-bucketed batches, AdamW with a one-cycle schedule,
``core.lab.harness.fit`` with early stopping on validation accuracy, and the test metrics.

Metrics: ``accuracy`` per clip for the digits task; for connected digits ``frame_accuracy`` (padding
excluded) and ``der``, the digit error rate of the strings read off the frame labels.

Legend: B batch, T frames, F mel bins, K classes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from audio.connected import decode_frames, digit_error_rate
from audio.data import IGNORE_INDEX, collate, length_batches
from audio.models import AudioConfig, build_model
from core.lab.experiment import count_parameters
from core.lab.harness import fit, seed_everything


@dataclass
class TrainConfig:
    """How every model is trained (one protocol for attention models and baselines).

    Args:
        epochs (int): the most epochs.
        patience (int): stop after this many epochs without a better validation accuracy.
        lr (float): peak learning rate of the one-cycle schedule.
        weight_decay (float): AdamW weight decay.
        max_frames (int): frames per padded batch (batch size times padded length).
        grad_clip (float): global gradient-norm clip.
        min_run (int): connected digits: label runs shorter than this many frames are dropped when the
            digit string is decoded.
    """

    epochs: int = 40
    patience: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.05
    max_frames: int = 2400
    grad_clip: float = 1.0
    min_run: int = 5


class Batches:
    """Length-bucketed batches of a dataset, in a new order every epoch.

    The shuffling uses ``self.generator``, which ``core.lab.harness.fit`` saves and restores with its
    checkpoints, so a resumed run sees the batches an uninterrupted one would have.
    """

    def __init__(self, dataset: Dataset, max_frames: int, *, shuffle: bool, seed: int = 0):
        self.dataset, self.shuffle = dataset, shuffle
        self.generator = torch.Generator().manual_seed(seed)
        lengths = [dataset[i][0].shape[0] for i in range(len(dataset))]
        self.batches = length_batches(lengths, max_frames, shuffle=False)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        order = torch.randperm(len(self.batches), generator=self.generator) if self.shuffle else range(len(self.batches))
        for i in order:
            yield collate([self.dataset[j] for j in self.batches[int(i)]])


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def loss_of(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    device = _device_of(model)
    logits = model(batch["features"].to(device), batch["lengths"].to(device))  # (B, K) or (B, T, K)
    return F.cross_entropy(logits.flatten(0, -2), batch["labels"].to(device).flatten(), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def predict(model: nn.Module, batches: Batches) -> tuple[list[Tensor], list[Tensor]]:
    """Predicted and true labels of every item, unpadded, in batch order."""
    model.eval()
    device = _device_of(model)
    predicted, truth = [], []
    for batch in batches:
        labels = model(batch["features"].to(device), batch["lengths"].to(device)).argmax(-1).cpu()  # (B,) or (B, T)
        for b, length in enumerate(batch["lengths"].tolist()):
            if labels.dim() == 1:
                predicted.append(labels[b]), truth.append(batch["labels"][b])
            else:
                predicted.append(labels[b, :length]), truth.append(batch["labels"][b, :length])
    return predicted, truth


def clip_metrics(model: nn.Module, batches: Batches) -> dict[str, float]:
    predicted, truth = predict(model, batches)
    return {"accuracy": torch.stack(predicted).eq(torch.stack(truth)).float().mean().item()}


def frame_metrics(model: nn.Module, batches: Batches, min_run: int) -> dict[str, float]:
    predicted, truth = predict(model, batches)
    correct = sum(int(p.eq(t).sum()) for p, t in zip(predicted, truth))
    frames = sum(t.numel() for t in truth)
    hypotheses = [decode_frames(p, min_run) for p in predicted]
    references = [decode_frames(t, 1) for t in truth]
    return {"frame_accuracy": correct / frames, "der": digit_error_rate(hypotheses, references)}


def evaluate(model: nn.Module, batches: Batches, config: AudioConfig, train: TrainConfig) -> dict[str, float]:
    if config.task == "clip":
        return clip_metrics(model, batches)
    return frame_metrics(model, batches, train.min_run)


@dataclass
class TrainedModel:
    model: nn.Module
    metrics: dict[str, float]  # test metrics
    history: list[dict]
    train_seconds: float
    params: int


def train_model(config: AudioConfig, train: TrainConfig, datasets: dict[str, Dataset], *, seed: int,
                checkpoint_dir: str | Path | None, resume: bool = True, progress: bool = True,
                device: torch.device | str = "cpu") -> TrainedModel:
    """Train one model with one seed and measure it on ``datasets["test"]``.

    Args:
        config (AudioConfig): the model.
        train (TrainConfig): the protocol.
        datasets (dict[str, Dataset]): ``train``, ``val`` and ``test``.
        seed (int): seeds initialisation, SpecAugment and batch order.
        checkpoint_dir (str | Path, optional): where ``core.lab.harness.fit`` keeps ``last.pt``/``best.pt``.
        resume (bool, default True): continue from ``checkpoint_dir`` when it holds a run.
        progress (bool, default True): show progress bars.
        device (torch.device | str, default "cpu"): where to train.
    """
    seed_everything(seed)
    model = build_model(config)
    model.frontend.set_statistics([datasets["train"][i][0] for i in range(len(datasets["train"]))])
    model.to(device)
    train_batches = Batches(datasets["train"], train.max_frames, shuffle=True, seed=seed)
    val_batches = Batches(datasets["val"], train.max_frames, shuffle=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, pct_start=0.15,
                                                    total_steps=train.epochs * len(train_batches))
    monitor = "val_accuracy" if config.task == "clip" else "val_frame_accuracy"

    def validate(module: nn.Module) -> dict[str, float]:
        return {f"val_{k}": v for k, v in evaluate(module, val_batches, config, train).items()}

    history = fit(model, optimizer, train_data=train_batches, train_step=loss_of, evaluate=validate,
                  epochs=train.epochs, monitor=monitor, patience=train.patience, scheduler=scheduler,
                  scheduler_per_batch=True, grad_clip=train.grad_clip, checkpoint_dir=checkpoint_dir,
                  resume=resume, config={"model": asdict(config), "train": asdict(train), "seed": seed},
                  progress=progress, desc=f"{config.describe()} seed {seed}")
    started = time.perf_counter()
    metrics = evaluate(model, Batches(datasets["test"], train.max_frames, shuffle=False), config, train)
    metrics["test_seconds"] = time.perf_counter() - started
    metrics["best_epoch"] = float(history.best_epoch or 0)
    return TrainedModel(model.cpu(), metrics, history.epochs, history.train_seconds, count_parameters(model))
