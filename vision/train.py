"""How one image classifier is trained with one seed: epochs over the training images, a warm-up + cosine
schedule counted in steps, the weights best on the validation split kept, test scored once at the end.

``train_one`` is what the experiment runner (``core.lab.runner``) calls for every model and seed; the loop
is ``core.lab.harness.fit``. Validation is a tree's own ``val/`` folder or a seeded, stratified share held
out of the training images (``vision.data.holdout``); it picks the kept epoch (and, with ``patience``,
stops early). The accuracy-against-time figure is drawn from the validation scores of every epoch.
``--time-budget`` is an explicit equal-time option: each run stops after the epoch that crosses it (the
schedule stays counted in epochs) and the report says so.

Under torchrun every global batch is split across the processes (``images[rank::world_size]``), so a run
with two processes trains on the batches a single process would; rank 0 alone evaluates and scores test.

Legend: B batch, C channels, H/W image height/width.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.lab.bench import interleaved_rounds, paired_ratio
from core.lab.harness import autocast, load_checkpoint, synchronize, to_plain
from core.lab.runner import MetricsContract, ModelSpec, RunContext, RunRecord
from core.lab.schedule import warmup_cosine_scheduler
from vision.data import ImageBatches, ImageSplit, channel_stats, cutout_side, holdout, load_dataset
from vision.models import PixelModelConfig, build_model, flops_per_image, model_kind

__all__ = ["CONTRACT", "ROLE", "DESCRIPTION", "TrainConfig", "train_config_for", "compare_notes", "sweep_schedule",
           "sweep_specs", "late_gain", "sweep_groups", "seed_gaps", "sweep_summary", "VisionData", "load_vision_data",
           "train_one", "accuracy", "make_optimizer", "classification_step", "timed_steps", "training_contender",
           "load_model",
           "ABLATIONS", "ablation_specs", "ablation_speeds", "ablation_summary"]

#: Test accuracy leads; validation accuracy keeps the weights (and stops early with ``patience``).
CONTRACT = MetricsContract(headline="test_accuracy", select="val_accuracy", mode="max")
#: Also write last.pt every this many steps inside an epoch (unless --checkpoint-every says otherwise).
CHECKPOINT_STEPS = 100


@dataclass
class TrainConfig:
    """How one model is trained; part of every run's identity.

    Args:
        optimizer (str): ``"adamw"`` (pixel hierarchies) or ``"sgd"`` (Nesterov, the ResNet recipe).
        lr (float): peak learning rate of the warm-up + cosine schedule.
        weight_decay (float): on weights (not norms, biases, position tables).
        batch_size (int): images per optimizer step, over all processes.
        label_smoothing (float): of the training cross-entropy.
        warmup_fraction (float): share of the steps spent raising the learning rate.
        grad_clip (float, optional): global gradient-norm clip.
        channels_last (bool): convolution-only models run faster with channels-last tensors on CPU.
        epochs (int): passes over the training images; the schedule ends at learning rate 0 after them.
        patience (int, optional): stop after this many epochs without a better validation accuracy.
        fraction (float): train on this stratified share of the training images (the data-size sweep).
        eval_every (int): evaluate on validation every this many epochs (the sweep's small fractions).
        augment (tuple of str): training augmentations (``vision.data.AUGMENTATIONS``); with ``"flip"``
            validation and test are also scored with flip test-time augmentation and validation chooses
            whether it is used (``choose_flip``).
        precision (str): the training forward passes, ``"fp32"`` or ``"bf16"`` autocast
            (``core.lab.harness.autocast``); validation and test are always scored in float32.
    """

    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    batch_size: int = 128
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.1
    grad_clip: float | None = 1.0
    channels_last: bool = False
    epochs: int = 15
    patience: int | None = None
    fraction: float = 1.0
    eval_every: int = 1
    augment: tuple[str, ...] = ("crop", "flip")
    precision: str = "fp32"


def train_config_for(model_name: str, **changes) -> TrainConfig:
    """The recipe of each model: AdamW for the pixel hierarchies (attention needs it), and for ``cnn`` too
    so that only the operator differs; SGD with Nesterov momentum for the ResNet, its own recipe.
    ``changes`` (not ``None``) override fields."""
    if model_name == "resnet":
        config = TrainConfig(optimizer="sgd", lr=0.2, weight_decay=5e-4, batch_size=256, grad_clip=None,
                             channels_last=True)
    elif model_name in ("attention", "cnn"):
        config = TrainConfig()
    else:
        raise ValueError(f"unknown model {model_name!r}")
    for key, value in changes.items():
        if value is not None:
            setattr(config, key, value)
    return config


#: Each model's part in a comparison, and a line on what it is.
ROLE = {"attention": "attention", "cnn": "baseline", "resnet": "baseline"}
DESCRIPTION = {"attention": "pixel self-attention (local windows, then global)",
               "cnn": "same hierarchy, 3×3 convolution as the operator",
               "resnet": "ResNet-9 (Page's DAWNBench net, width-scaled)"}


def describe(spec: ModelSpec) -> str:
    """One line on what ``spec``'s model is, its stem, attention reach and position bias included where they
    differ."""
    config, name = spec.config, spec.name.split(" @ ")[0]
    if name == "resnet":
        return f"{DESCRIPTION[name]}, first layer {config.width} channels"
    if name != "attention":
        return DESCRIPTION[name]
    stem = (f"the first {config.conv_stages} stage(s) convolutional (a conv stem), attention above: "
            if config.conv_stages else "")
    bias = f", relative 2-D position bias: {config.relative_bias}" if config.relative_bias != "off" else ""
    return (f"{stem}pixel self-attention ({config.window}×{config.window} windows, global on grids of at most "
            f"{config.global_max_tokens} pixels{bias})")


def compare_notes(specs: list[ModelSpec], data: VisionData, how: str, *, quick: bool = False) -> list[str]:
    """The report's notes: the splits, each model and its recipe, the augmentation."""
    augment = specs[0].train.augment
    _, height, width = data.shape
    return [f"data: {len(data.train)} training, {len(data.val)} validation ({how}), {len(data.test)} test images "
            f"of {height}×{width} pixels"
            + (" (--quick: the first images of every class of CIFAR-10, shrunk from 32×32)" if quick else ""),
            *[f"{s.name}: {describe(s)}; {s.train.optimizer}, lr {s.train.lr}, batch {s.train.batch_size}, "
              f"{s.train.epochs} epochs" for s in specs],
            "training forward passes in " + ("bfloat16 (autocast; weights and optimizer in float32)"
                                             if specs[0].train.precision == "bf16" else "float32")
            + "; validation and test scored in float32",
            f"training augmentation: {', '.join(augment) or 'none'}"
            + (" (test_accuracy_flip scores the same weights with horizontal-flip test-time augmentation; "
               "validation chooses whether it is used (val_chose_flip, ties: plain) and test_accuracy_chosen is the "
               "test figure of that choice)" if "flip" in augment else "; no flip test-time augmentation")
            + (f"; cutout sets one {cutout_side(width)}×{cutout_side(width)} square of every training image to the "
               "mean colour" if "cutout" in augment else "")]


def sweep_schedule(epochs: int, fraction: float) -> tuple[int, int]:
    """Epochs and validation interval of one fraction of the data-size sweep.

    A fraction ``f`` of the training images trains for ``epochs / sqrt(f)`` epochs, rounded up, and is
    validated about ``epochs`` times (every ``round(that / epochs)`` epochs). The full set gets ``epochs``, the
    comparison's schedule; a small set gets more passes, because one pass over it is only ``f`` of the steps,
    but fewer steps than the full set (``epochs * sqrt(f)`` full-set passes' worth), because it has less to
    learn. Equal steps at every fraction (``epochs / f`` passes) would over-train the small sets and leave the
    full one at a budget chosen for them; equal epochs would starve the small sets. Whether a run had
    converged is read off its validation curve (``sweep_summary``'s late gain), not assumed.

    Returns:
        (int, int): the epochs and the validation interval in epochs.
    """
    passes = math.ceil(round(epochs / math.sqrt(fraction), 6))
    return passes, max(1, round(passes / epochs))


def sweep_specs(recipes: dict[str, TrainConfig], configs: dict, fractions: list[float],
                all_seeds_up_to: float = 0.05) -> tuple[list[ModelSpec], dict[str, tuple[str, float]]]:
    """The data-size sweep's rows, ``"MODEL @ P%"``: each model's recipe on every fraction, on the schedule of
    ``sweep_schedule`` (the recipe's ``epochs`` are the full set's). Fractions up to ``all_seeds_up_to`` train
    with every seed of the command, larger ones with the first only: small subsets differ from seed to seed
    and their runs are cheap. Returns the rows and ``{row: (model, fraction)}``."""
    specs, rows = [], {}
    for f in fractions:  # fraction by fraction: an interrupted sweep has both models of its first fractions
        for name, base in recipes.items():
            epochs, eval_every = sweep_schedule(base.epochs, f)
            train = train_config_for(name, batch_size=base.batch_size, epochs=epochs, fraction=f,
                                     eval_every=eval_every, patience=base.patience, augment=base.augment)
            row = f"{name} @ {100 * f:g}%"
            specs.append(ModelSpec(row, ROLE[name], configs[name], train=train,
                                   seeds=None if f <= all_seeds_up_to else 1))
            rows[row] = (name, f)
    return specs, rows


def late_gain(history: list[dict], share: float = 1 / 3) -> float:
    """How much a run's best validation accuracy rose in the last ``share`` of its epochs: the best over the
    whole run minus the best over the epochs before that last share (0 when the run peaked earlier). Near 0:
    validation had stopped improving before the schedule ended (converged on validation); large: the run was
    still learning when it ended (part of that rise is the learning rate's annealing, which any length gets)."""
    scored = [(row["epoch"], row["val_accuracy"]) for row in history if "val_accuracy" in row]
    if not scored:
        raise ValueError("the run's history holds no validation accuracy")
    cut = max(row["epoch"] for row in history) * (1 - share)
    early = [accuracy for epoch, accuracy in scored if epoch <= cut]
    return max(a for _, a in scored) - (max(early) if early else 0.0)


def sweep_groups(records: dict[str, list[RunRecord]], rows: dict[str, tuple[str, float]]
                 ) -> dict[float, dict[str, list[RunRecord]]]:
    """The sweep's records by fraction (ascending), then by model kind, each list in seed order."""
    groups: dict[float, dict[str, list[RunRecord]]] = {}
    for name, runs in records.items():
        kind, fraction = rows[name]
        if runs:
            groups.setdefault(fraction, {})[kind] = runs
    return dict(sorted(groups.items()))


def seed_gaps(models: dict[str, list[RunRecord]], split: str, reference: str = "cnn") -> list[float]:
    """``reference``'s accuracy minus the attention model's on ``split``, seed by seed: the two runs of one
    seed trained on the same subset, so their difference is free of the subset's luck."""
    return [ref.metrics[f"{split}_accuracy"] - att.metrics[f"{split}_accuracy"]
            for ref, att in zip(models[reference], models["attention"])]


def sweep_summary(records: dict[str, list[RunRecord]], results, *, rows: dict[str, tuple[str, float]],
                  reference: str = "cnn") -> tuple[list[str], dict]:
    """The sweep's conclusion: at each fraction, the ``reference`` model's lead over the attention model in
    test and validation accuracy seed by seed (``seed_gaps``) with its mean and sample std over seeds, and
    each row's mean late gain (``late_gain``).

    Returns:
        (list[str], dict): report notes and ``{"sweep": {"<P>%": {...}}}`` for metrics.json.
    """
    summary, notes = {}, []
    for fraction, models in sweep_groups(records, rows).items():
        entry = {"train_images": int(next(iter(models.values()))[0].bookkeeping["train_images"]),
                 "late_gain": {kind: statistics.fmean(late_gain(r.history) for r in runs)
                               for kind, runs in models.items()}}
        if "attention" in models and reference in models:
            for split in ("test", "val"):
                gaps = seed_gaps(models, split, reference)
                entry[f"{split}_gap"] = gaps
                entry[f"mean_{split}_gap"] = statistics.fmean(gaps)
                entry[f"std_{split}_gap"] = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
            notes.append(f"{100 * fraction:g}% ({entry['train_images']:,} images): {reference} − attention "
                         f"{100 * entry['mean_test_gap']:+.2f} points test, {100 * entry['mean_val_gap']:+.2f} "
                         f"validation, over {len(entry['test_gap'])} seed(s)"
                         + (f" (test std {100 * entry['std_test_gap']:.2f})" if len(entry["test_gap"]) > 1 else ""))
        summary[f"{100 * fraction:g}%"] = entry
    notes.append("late gain (validation accuracy won in the last third of a run's epochs, points): "
                 + "; ".join(f"{kind} @ {key} {100 * gain:.2f}" for key, entry in summary.items()
                             for kind, gain in entry["late_gain"].items())
                 + " (near 0: converged on validation)")
    return notes, {"sweep": summary}


#: ``python -m vision ablate``: the attention model's recipe with one choice changed at a time, each against the
#: unchanged recipe trained the same way. Key (the row is ``"attention <key>"``) -> (what changes, model config
#: changes, training changes). The choices are the vision issue's: relative bias on or off, window size, widths and
#: depths, learning rate, warm-up, label smoothing, weight decay.
ABLATIONS: dict[str, tuple[str, dict, dict]] = {
    "quadratic-bias": ("relative 2-D position bias, quadratic (on the fused kernel)", {"relative_bias": "quadratic"}, {}),
    "table-bias": ("relative 2-D position bias, a learned table (off the fused kernel)", {"relative_bias": "table"}, {}),
    "window-8": ("8×8 attention tiles at high resolution instead of 4×4", {"window": 8}, {}),
    "global-64": ("global attention only on grids of at most 64 pixels (16×16 windowed too)",
                  {"global_max_tokens": 64}, {}),
    "wider": ("stage widths 24, 64, 128 instead of 16, 48, 96", {"dims": (24, 64, 128)}, {}),
    "deeper": ("blocks per stage 1, 2, 3 instead of 1, 1, 2", {"depths": (1, 2, 3)}, {}),
    "lr-1e-3": ("peak learning rate 1e-3 instead of 2e-3", {}, {"lr": 1e-3}),
    "lr-4e-3": ("peak learning rate 4e-3 instead of 2e-3", {}, {"lr": 4e-3}),
    "no-warmup": ("no learning-rate warm-up (10% of the steps by default)", {}, {"warmup_fraction": 0.0}),
    "no-smoothing": ("no label smoothing (0.1 by default)", {}, {"label_smoothing": 0.0}),
    "wd-0.01": ("weight decay 0.01 instead of 0.05", {}, {"weight_decay": 0.01}),
    "wd-0.2": ("weight decay 0.2 instead of 0.05", {}, {"weight_decay": 0.2}),
}


def ablation_specs(base: PixelModelConfig, cnn: PixelModelConfig, train: TrainConfig,
                   variants: Iterable[str]) -> tuple[list[ModelSpec], list[str]]:
    """The ablation's rows: ``"attention"`` (``base`` with ``train``, the reference every variant is read
    against), ``"cnn"`` (the same hierarchy with the convolution, same training) and one ``"attention <key>"``
    row per variant of ``ABLATIONS``, with its one change. A variant that changes nothing (the base already
    has it, e.g. ``--relative-bias quadratic`` with ``quadratic-bias``) is left out and named in the notes.

    Returns:
        (list[ModelSpec], list[str]): the rows and report notes (what each variant changes).
    """
    specs = [ModelSpec("attention", "attention", base, train=train), ModelSpec("cnn", "baseline", cnn, train=train)]
    notes = []
    for key in variants:
        what, model_changes, train_changes = ABLATIONS[key]
        config = dataclasses.replace(base, **model_changes)
        recipe = dataclasses.replace(train, **train_changes)
        if config == base and recipe == train:
            notes.append(f"attention {key}: left out, the base recipe already has it ({what})")
            continue
        specs.append(ModelSpec(f"attention {key}", "attention", config, train=recipe))
        notes.append(f"attention {key}: {what}")
    return specs, notes


def training_contender(config, train: TrainConfig, shape: tuple[int, int, int], num_classes: int, steps: int,
                       device: torch.device) -> tuple[nn.Module, Callable[[], float]]:
    """The model of ``config`` with its recipe ``train``, and a call that trains it ``steps`` steps on one fixed
    batch of random images of ``shape`` (the same images for every contender: a seeded generator; channels-last
    when the recipe says so) and returns their seconds. What ``benchmarks/vision.py`` and the ablation's speed
    table time."""
    torch.manual_seed(0)
    model = build_model(model_kind(config), config).to(device).train()
    optimizer = make_optimizer(model, train)
    step = classification_step(device, train.label_smoothing, train.precision)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(train.batch_size, *shape, generator=g).to(device)
    if train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    batch = (images, torch.randint(0, num_classes, (train.batch_size,), generator=g).to(device))
    return model, lambda: timed_steps(model, optimizer, step, itertools.repeat(batch, steps), 0, device)


def ablation_speeds(specs: list[ModelSpec], shape: tuple[int, int, int], num_classes: int, device: torch.device,
                    *, rounds: int = 5, steps: int = 3, reference: str = "attention") -> dict[str, dict[str, float]]:
    """Training images/s of every row, timed in interleaved rounds (``core.lab.bench``) after training.

    Rows whose model, batch size, precision and memory layout are the same (the variants that change only
    the optimisation: learning rate, warm-up, smoothing, decay) do the same work per step, so they are timed
    once and share the figure. Every contender trains ``steps`` steps per round on one fixed batch of random
    images of ``shape`` (the same for all), with its own recipe.

    Returns:
        ``{row: {"images_per_s": ..., "speed_vs_<reference>": ..., "timed_as": row timed}}``: images/s from
        the median round, and the median over rounds of the reference's time over the row's (above 1: faster
        than the reference).
    """
    contenders, timed_as = {}, {}
    for spec in specs:
        work = (repr(to_plain(spec.config)), spec.train.batch_size, spec.train.precision, spec.train.channels_last)
        timed_as[spec.name] = next((name for name, (key, _) in contenders.items() if key == work), spec.name)
        if timed_as[spec.name] != spec.name:
            continue
        _, call = training_contender(spec.config, spec.train, shape, num_classes, steps, device)
        contenders[spec.name] = (work, call)

    times = interleaved_rounds({name: call for name, (_, call) in contenders.items()}, rounds)
    out = {}
    for spec in specs:
        name = timed_as[spec.name]
        seconds = statistics.median(r[name] for r in times)
        out[spec.name] = {"images_per_s": spec.train.batch_size * steps / seconds,
                          f"speed_vs_{reference}": paired_ratio(times, timed_as[reference], name), "timed_as": name}
    return out


def ablation_summary(records: dict[str, list[RunRecord]], results, *, specs: list[ModelSpec],
                     shape: tuple[int, int, int], num_classes: int, device: torch.device, val_images: int,
                     rounds: int = 5, steps: int = 3) -> tuple[list[str], dict]:
    """The ablation's reading: every row's training speed (``ablation_speeds``) and validation accuracy
    against the reference ``"attention"`` row, added to the results' bookkeeping (``images_per_s``,
    ``speed_vs_attention``, ``val_vs_attention`` in points), and a verdict per variant.

    A difference in validation accuracy stands out when it exceeds twice the standard error of the
    difference of two accuracies like the reference's, each over ``val_images`` images
    (``2·sqrt(2·p(1 - p)/N)``); anything smaller is called noise. Validation alone is read: test chooses
    nothing here.

    Returns:
        (list[str], dict): report notes and ``{"ablation": {row: {...}}, "ablation_noise_points": ...}``.
    """
    speeds = ablation_speeds(specs, shape, num_classes, device, rounds=rounds, steps=steps)
    by_name = {r.model: r for r in results}
    reference = by_name["attention"].metrics["val_accuracy"]
    noise = 100 * 2 * math.sqrt(2 * reference * (1 - reference) / val_images)
    table, notes = {}, []
    for spec in specs:
        result = by_name[spec.name]
        gain = 100 * (result.metrics["val_accuracy"] - reference)
        speed = {k: v for k, v in speeds[spec.name].items() if k != "timed_as"}
        result.bookkeeping.update(speed, val_vs_attention=gain)
        verdict = ("reference" if spec.name == "attention" else "gain" if gain > noise
                   else "loss" if gain < -noise else "within noise")
        table[spec.name] = {**speeds[spec.name], "val_accuracy": result.metrics["val_accuracy"],
                            "val_vs_attention": gain, "verdict": verdict}
        if spec.name.startswith("attention "):
            notes.append(f"{spec.name}: validation {gain:+.2f} points against attention ({verdict}), "
                         f"{speeds[spec.name]['speed_vs_attention']:.2f}× its training speed")
    notes.insert(0, f"validation chooses: a variant's gain stands out from noise beyond ±{noise:.2f} points (two "
                    f"standard errors of the difference of two accuracies near {100 * reference:.1f}% on "
                    f"{val_images} images); speeds timed after training, {rounds} interleaved rounds of {steps} "
                    "steps on one batch of random images, rows that change only the optimisation timed as the "
                    "reference")
    return notes, {"ablation": table, "ablation_noise_points": noise}


@dataclass
class VisionData:
    """The three splits a comparison uses and the normalisation (training images' channel statistics)."""

    name: str
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit

    def __post_init__(self):
        self.mean, self.std = channel_stats(self.train.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    def info(self) -> dict:
        """Classes, image shape and normalisation, stored in ``best.pt`` (``attention-map`` reads them)."""
        return {"name": self.name, "classes": list(self.train.classes), "shape": list(self.shape),
                "mean": self.mean.tolist(), "std": self.std.tolist()}


def load_vision_data(dataset: str, data_dir: str | None = None, *, image_size: int | None = None,
                     progress: bool = False, val_fraction: float = 0.1, data_seed: int = 0,
                     per_class: dict[str, int] | None = None) -> tuple[VisionData, dict]:
    """The three splits of a comparison and what they are.

    Validation is the tree's ``val/`` folder when it has one, else ``val_fraction`` of every class held out
    of the training images (``vision.data.holdout``, seeded by ``data_seed``).

    Args:
        dataset, data_dir, image_size, progress, per_class: as for ``vision.data.load_dataset``.
        val_fraction (float): the held-out share. (default: ``0.1``)
        data_seed (int): the hold-out's seed. (default: ``0``)

    Returns:
        ``(data, identity)``: identity names the dataset, how validation was made, the split sizes and a
        digest of every image and label (the runner refuses to resume a run on other data).

    Raises:
        ImageDataError, DatasetNotFoundError: see ``load_dataset``; ValueError: a class too small to hold out.
    """
    data = load_dataset(dataset, data_dir, image_size, progress=progress, per_class=per_class)
    if data.val is not None:
        train, val, how = data.train, data.val, "the tree's val/ folder"
    else:
        train, val = holdout(data.train, val_fraction, seed=data_seed)
        how = f"{val_fraction:.0%} of every class held out of the training images (seed {data_seed})"
    digest = hashlib.sha256()
    for split in (train, val, data.test):
        digest.update(split.images.numpy().tobytes())
        digest.update(split.labels.numpy().tobytes())
    identity = {"dataset": data.name, "validation": how, "train": len(train), "val": len(val), "test": len(data.test),
                "sha256": digest.hexdigest()[:16]}
    return VisionData(data.name, train, val, data.test), identity


class RankShare:
    """This process's share of every batch of ``batches``: ``images[rank::world_size]``.

    Every process draws the same global batches (same seed), so the union of the shares is the batch a
    single process would train on. ``generator`` is the batches' own, which ``fit`` saves and restores.
    """

    def __init__(self, batches: ImageBatches, rank: int, world_size: int):
        self.batches, self.rank, self.world_size = batches, rank, world_size
        self.generator = batches.generator

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for images, labels in self.batches:
            yield images[self.rank::self.world_size], labels[self.rank::self.world_size]


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


def classification_step(device: torch.device, label_smoothing: float, precision: str = "fp32"):
    """``train_step`` for ``fit``: the cross-entropy of one batch, the forward pass in ``precision``
    (``"fp32"``, or ``"bf16"`` autocast; the loss is taken in float32 either way)."""
    def train_step(model: nn.Module, batch) -> torch.Tensor:
        images, labels = batch
        with autocast(device, precision):
            logits = model(images.to(device, non_blocking=True))
        return F.cross_entropy(logits.float(), labels.to(device, non_blocking=True), label_smoothing=label_smoothing)
    return train_step


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable, device: torch.device, flip: bool = False) -> dict[str, float]:
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


def choose_flip(model: nn.Module, val_batches: Iterable, test_batches: Iterable, device: torch.device,
                val_plain: float, test_plain: float) -> dict[str, float]:
    """Validation chooses whether flip test-time augmentation is used; test is scored once with it and once
    without (both kept in the record), and the choice picks which of the two is reported.

    ``val_plain`` / ``test_plain`` are the kept weights' accuracies without it. Flip is chosen only when it
    scores strictly higher on validation (ties: plain, the cheaper); test accuracy never enters the choice.

    Returns:
        dict: ``val_accuracy_flip``, ``test_accuracy_flip``, ``val_chose_flip`` (1.0 or 0.0) and
        ``test_accuracy_chosen`` (the test accuracy of the decoding validation chose).
    """
    val_flip = accuracy(model, val_batches, device, flip=True)["accuracy"]
    chosen = val_flip > val_plain
    test_flip = accuracy(model, test_batches, device, flip=True)["accuracy"]
    return {"val_accuracy_flip": val_flip, "test_accuracy_flip": test_flip, "val_chose_flip": float(chosen),
            "test_accuracy_chosen": test_flip if chosen else test_plain}


def timed_steps(model: nn.Module, optimizer: torch.optim.Optimizer, step, batches: Iterable, warmup: int,
                device: torch.device) -> float:
    """Run one training step per batch; return the seconds taken by the steps after the first ``warmup``
    (``benchmarks/vision.py`` times the models with it)."""
    started = None
    for i, batch in enumerate(batches):
        if i == warmup:
            synchronize(device)
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step(model, batch).backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - started


def train_one(spec: ModelSpec, seed: int, ctx: RunContext, *, data: VisionData, kind: str) -> RunRecord:
    """Train ``spec.config`` on ``data.train`` (or its ``ctx.train.fraction``) with one seed.

    Args:
        spec (ModelSpec): the model; ``spec.config`` a ``PixelModelConfig`` or ``ResNetConfig``.
        seed (int): seeds the data order, augmentation and the fraction drawn (the runner seeded the rest).
        ctx (RunContext): run folder, device, processes; ``ctx.train`` is a ``TrainConfig``.
        data (VisionData): the splits (bind with ``functools.partial``).
        kind (str): ``"attention"``, ``"cnn"`` or ``"resnet"`` (how ``attention-map`` rebuilds the model).

    Returns:
        RunRecord: ``val_accuracy`` / ``val_loss`` of the kept weights, then ``test_accuracy``,
        ``test_loss`` scored once on them; where training flipped, ``val_accuracy_flip``,
        ``test_accuracy_flip``, ``val_chose_flip`` and ``test_accuracy_chosen`` (``choose_flip``); bookkeeping
        ``best_epoch``, ``epochs``, ``steps``, ``seconds``, ``params``, ``flops`` (forward, per image) and
        ``train_images``.
    """
    config: TrainConfig = ctx.train
    device = ctx.device
    train = data.train.subset(config.fraction, seed=seed)
    model = ctx.wrap(build_model(kind, spec.config))
    module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    batches = ImageBatches(train, config.batch_size, data.mean, data.std, train=True, augment=config.augment,
                           seed=seed, channels_last=config.channels_last)
    val_batches = ImageBatches(data.val, 500, data.mean, data.std, channels_last=config.channels_last)
    optimizer = make_optimizer(model, config)
    total_steps = config.epochs * len(batches)
    scheduler = warmup_cosine_scheduler(optimizer, total_steps, max(1, round(config.warmup_fraction * total_steps)))

    def evaluate(m: nn.Module) -> dict[str, float]:
        scores = accuracy(m, val_batches, device)
        return {"val_accuracy": scores["accuracy"], "val_loss": scores["loss"]}

    history = ctx.fit(model, optimizer, train_data=RankShare(batches, ctx.dist.rank, ctx.dist.world_size),
                      train_step=classification_step(device, config.label_smoothing, config.precision),
                      evaluate=evaluate,
                      epochs=config.epochs, keep="best", patience=config.patience, scheduler=scheduler,
                      scheduler_per_batch=True, grad_clip=config.grad_clip, eval_every=config.eval_every,
                      checkpoint_every=ctx.checkpoint_every or CHECKPOINT_STEPS,
                      best_extra={"kind": kind, "dataset": data.info()})
    if not ctx.is_main:
        return RunRecord(metrics={}, history=history.epochs)
    test_batches = ImageBatches(data.test, 500, data.mean, data.std, channels_last=config.channels_last)
    final = accuracy(module, test_batches, device)
    metrics = {**history.best_metrics, "test_accuracy": final["accuracy"], "test_loss": final["loss"]}
    if "flip" in config.augment:  # mirrored test images only where mirrored training images were
        metrics.update(choose_flip(module, val_batches, test_batches, device, metrics["val_accuracy"],
                                   metrics["test_accuracy"]))
    bookkeeping = ctx.bookkeeping(history, module, flops=flops_per_image(module, data.shape),
                                  train_images=len(train))
    return RunRecord(metrics=metrics, bookkeeping=bookkeeping, history=history.epochs, model=module.cpu().eval(),
                     extra={"kind": kind})


def load_model(checkpoint_path) -> tuple[nn.Module, dict]:
    """A model and its dataset info from a ``best.pt`` written by ``train_one``.

    Raises:
        ValueError: the file was not written by ``python -m vision`` (no model kind or dataset info).
    """
    checkpoint = load_checkpoint(checkpoint_path)
    if "kind" not in checkpoint or "dataset" not in checkpoint:
        raise ValueError(f"{checkpoint_path}: not a best.pt written by `python -m vision compare` or `sweep`")
    model = build_model(checkpoint["kind"], checkpoint["config"]["config"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint["dataset"]
