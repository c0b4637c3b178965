"""Training one image classifier under a wall-clock budget, through ``core.lab.harness.fit``.

Models are compared at equal *training time*, which is what a CPU budget fixes. A run first times a few
optimizer steps on a throw-away copy of the model, turns the budget into a number of steps, and then
trains for exactly that many steps with a schedule that ends at learning rate 0, so the last step is a
finished run whatever the speed of the machine. The steps are cut into ``rounds``; after each round the
model is scored on a fixed subset of the test set, which draws accuracy against training time.

No weights are picked by test accuracy: the model kept is the one after the last step.

Legend: B batch, C channels, H/W image height/width.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from core.lab.harness import fit, to_plain
from vision.data import ImageBatches, ImageSplit

# Steps timed to calibrate the budget (after warm-up steps that are not timed).
CALIBRATION_WARMUP_STEPS = 2
CALIBRATION_STEPS = 5


@dataclass
class TrainConfig:
    """How one model is trained; saved with every checkpoint."""

    optimizer: str = "adamw"  # "adamw" (pixel hierarchies) or "sgd" (Nesterov, the ResNet recipe)
    lr: float = 2e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 0.05
    batch_size: int = 128
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.1  # share of the steps spent raising the learning rate
    grad_clip: float | None = 1.0
    channels_last: bool = False  # convolution-only models run faster with channels-last tensors on CPU
    steps: int = 0  # optimizer steps; 0 = derived from the time budget
    rounds: int = 8  # evaluations spread over the run (the accuracy-vs-time curve)


def train_config_for(model_name: str, batch_size: int | None = None) -> TrainConfig:
    """The recipe of each model: AdamW for the pixel hierarchies (attention needs it), and for ``cnn``
    too so that only the operator differs; SGD with Nesterov momentum for the ResNet, its own recipe."""
    if model_name == "resnet":
        config = TrainConfig(optimizer="sgd", lr=0.2, weight_decay=5e-4, batch_size=256, grad_clip=None,
                             channels_last=True)
    elif model_name in ("attention", "cnn"):
        config = TrainConfig()
    else:
        raise ValueError(f"unknown model {model_name!r}")
    if batch_size is not None:
        config.batch_size = batch_size
    return config


class StepBatches:
    """``steps`` training batches per iteration, drawn from endless reshuffled epochs of ``batches``.

    ``fit`` iterates its ``train_data`` once per "epoch"; here one iteration is one round of the run, so a
    run of S steps in R rounds is R iterations of S / R batches however large the training set is.
    """

    def __init__(self, batches: ImageBatches, steps: int):
        self.batches = batches
        self.steps = steps
        self.generator = batches.generator  # fit saves and restores it when resuming
        self._epoch: Iterator | None = None

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            batch = next(self._epoch, None) if self._epoch is not None else None
            if batch is None:
                self._epoch = iter(self.batches)
                batch = next(self._epoch)
            yield batch


class FirstBatch:
    """The first batch of ``batches`` only (an untimed warm-up pass)."""

    def __init__(self, batches: ImageBatches):
        self.batches = batches

    def __iter__(self):
        yield next(iter(self.batches))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD; norms, biases and position tables are not decayed."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.dim() < 2 or "position_bias" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99))
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose adamw or sgd")


def one_cycle(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float):
    """Linear warm-up to the peak, then cosine decay to 0 at the last step."""
    warmup = max(1, round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def classification_step(device: torch.device, label_smoothing: float):
    """``train_step`` for ``fit``: the cross-entropy of one batch."""
    def train_step(model: nn.Module, batch) -> torch.Tensor:
        images, labels = batch
        logits = model(images.to(device, non_blocking=True))
        return F.cross_entropy(logits, labels.to(device, non_blocking=True), label_smoothing=label_smoothing)
    return train_step


@torch.no_grad()
def accuracy(model: nn.Module, batches: ImageBatches, device: torch.device, flip: bool = False) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` over ``batches``.

    With ``flip``, each image is scored as the mean of the logits of the image and of its mirror image
    (horizontal-flip test-time augmentation, part of Page's ResNet-9 recipe); training is unchanged.
    """
    was_training = model.training
    model.eval()
    correct, loss, count = 0, 0.0, 0
    for images, labels in batches:
        images = images.to(device)
        logits = model(images)
        if flip:
            logits = (logits + model(images.flip(-1))) / 2
        labels = labels.to(device)
        correct += int((logits.argmax(dim=-1) == labels).sum())
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        count += len(labels)
    model.train(was_training)
    return {"accuracy": correct / count, "loss": loss / count}


def measure_step_seconds(model: nn.Module, config: TrainConfig, batches: ImageBatches,
                         device: torch.device) -> float:
    """Seconds per optimizer step, timed on a copy of the model so the run itself starts fresh."""
    model = copy.deepcopy(model).train()
    optimizer = make_optimizer(model, config)
    step = classification_step(device, config.label_smoothing)
    batches = StepBatches(batches, CALIBRATION_WARMUP_STEPS + CALIBRATION_STEPS)
    return timed_steps(model, optimizer, step, batches, CALIBRATION_WARMUP_STEPS, device) / CALIBRATION_STEPS


def timed_steps(model: nn.Module, optimizer: torch.optim.Optimizer, step, batches: Iterable, warmup: int,
                device: torch.device) -> float:
    """Run one training step per batch; return the seconds taken by the steps after the first `warmup`."""
    started = None
    for i, batch in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step(model, batch).backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


@dataclass
class RunResult:
    """What one training run produced."""

    metrics: dict[str, float]  # final test accuracy / loss and the run's size figures
    curve: list[dict[str, float]]  # per round: cumulative seconds, steps, test-subset accuracy
    train_seconds: float
    steps: int
    checkpoint: str


def train_classifier(
    model_name: str, model: nn.Module, model_config, train_config: TrainConfig, *,
    train: ImageSplit, test: ImageSplit, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
    time_budget_s: float | None, run_dir: Path, seed: int, eval_images: int, resume: bool, progress: bool,
    dataset_info: dict,
) -> RunResult:
    """Train ``model`` for ``train_config.steps`` steps, or as many as fit in ``time_budget_s``.

    Args:
        model_name (str): ``attention``, ``cnn`` or ``resnet`` (stored in checkpoints).
        model (nn.Module): the freshly initialised model, on ``device``.
        model_config: its config dataclass (stored in checkpoints, so ``attention-map`` can rebuild it).
        train_config (TrainConfig): the recipe; ``steps = 0`` means "derive from the budget".
        train, test (ImageSplit): the data; ``test`` is scored on an evenly spaced subset of
            ``eval_images`` after each round and in full at the end.
        mean, std (Tensor): (C,) normalisation.
        time_budget_s (float, optional): wall-clock seconds for training, evaluations included.
        run_dir (Path): checkpoints (``last.pt``, ``best.pt``) and the step plan go here.
        seed (int): seeds the data order and augmentation (the model is seeded by the caller).
        eval_images (int): size of the test subset scored after each round.
        resume (bool): continue an interrupted run from ``run_dir``.
        progress (bool): progress bars.
        dataset_info (dict): classes, image shape, normalisation; stored in checkpoints.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    batches = ImageBatches(train, train_config.batch_size, mean, std, train=True, seed=seed,
                           channels_last=train_config.channels_last)
    stride = max(1, len(test) // eval_images)
    subset = ImageSplit(test.images[::stride], test.labels[::stride], test.classes)
    subset_batches = ImageBatches(subset, 500, mean, std, channels_last=train_config.channels_last)
    test_batches = ImageBatches(test, 500, mean, std, channels_last=train_config.channels_last)

    plan_file = run_dir / "plan.json"
    config = copy.deepcopy(train_config)
    if config.steps <= 0 and resume and plan_file.exists():
        # A resumed budget run keeps the step count it was planned with (and so its schedule).
        config.steps = json.loads(plan_file.read_text())["steps"]
    elif config.steps <= 0:
        if time_budget_s is None:
            raise ValueError("give either a number of steps or a time budget")
        step_seconds = measure_step_seconds(model, config, batches, device)
        accuracy(model, FirstBatch(subset_batches), device)  # warm-up: first calls set up kernels
        started = time.perf_counter()
        accuracy(model, subset_batches, device)
        eval_seconds = time.perf_counter() - started
        evaluations = config.rounds + len(test) / len(subset)  # the rounds, then the full test set
        calibration = (CALIBRATION_WARMUP_STEPS + CALIBRATION_STEPS) * step_seconds + eval_seconds
        usable = time_budget_s - evaluations * eval_seconds - calibration
        config.steps = max(config.rounds, int(usable / step_seconds))
    config.rounds = min(config.rounds, config.steps)
    plan_file.write_text(json.dumps({"steps": config.steps}))

    steps_per_round = config.steps // config.rounds
    total_steps = steps_per_round * config.rounds
    optimizer = make_optimizer(model, config)
    scheduler = one_cycle(optimizer, total_steps, config.warmup_fraction)

    def evaluate(module: nn.Module) -> dict[str, float]:
        scores = accuracy(module, subset_batches, device)
        # "step" only grows, so fit's "best" is always the latest round: nothing is chosen on test data.
        return {"step": scheduler.last_epoch, "test_subset_accuracy": scores["accuracy"]}

    checkpoint_config = {
        "model": model_name, "model_config": to_plain(model_config), "train": to_plain(config),
        "dataset": dataset_info, "seed": seed,
    }
    history = fit(
        model, optimizer, train_data=StepBatches(batches, steps_per_round),
        train_step=classification_step(device, config.label_smoothing), evaluate=evaluate,
        epochs=config.rounds, monitor="step", mode="max", scheduler=scheduler, scheduler_per_batch=True,
        grad_clip=config.grad_clip, checkpoint_dir=run_dir, resume=resume, config=checkpoint_config,
        progress=progress, desc=f"{model_name} seed {seed}",
        # A guard, not the plan: a machine much slower than at calibration still stops.
        time_budget_s=None if time_budget_s is None else 1.5 * time_budget_s,
    )
    final = accuracy(model, test_batches, device)
    final_flip = accuracy(model, test_batches, device, flip=True)
    curve, elapsed = [], 0.0
    for row in history.epochs:
        elapsed += row["seconds"]
        curve.append({"seconds": elapsed, "step": row.get("step", float("nan")),
                      "test_subset_accuracy": row.get("test_subset_accuracy", float("nan"))})
    steps_done = steps_per_round * len(history.epochs)
    return RunResult(
        metrics={
            "test_accuracy": final["accuracy"], "test_loss": final["loss"],
            "test_accuracy_flip": final_flip["accuracy"],
            "epochs": steps_done / len(batches),
        },
        curve=curve, train_seconds=history.train_seconds, steps=steps_done,
        checkpoint=str(run_dir / "best.pt"),
    )
