"""One training protocol for every node classifier: full-batch Adam, GAT's early stopping, public split.

The loop itself is `core.lab.harness.fit`. This module supplies the graph's train step and evaluation and GAT's
stopping rule (Veličković et al., 2018, reference code): training goes on while the validation accuracy
or the validation loss reaches a new best within `patience` epochs, and the weights kept are those of the
last epoch at which *both* were at their best. Every model, baselines included, is trained this way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.lab.harness import History, fit, seed_everything
from graph.data import Planetoid
from graph.models import GraphModelConfig, NodeClassifier, build_model

__all__ = ["TrainConfig", "RunResult", "PaperEarlyStopping", "train_node_classifier", "accuracy"]


@dataclass
class TrainConfig:
    """How each model is trained (the same for all of them)."""

    epochs: int = 1000  # at most; early stopping ends GAT on Cora after ~300-700
    patience: int = 100  # epochs without a new best validation accuracy or loss


@dataclass
class RunResult:
    """One trained model: its metrics on the public split and its training history."""

    model: NodeClassifier
    metrics: dict[str, float]
    history: History
    inputs: tuple


def accuracy(logits: Tensor, y: Tensor) -> float:
    return (logits.argmax(-1) == y).float().mean().item()


class PaperEarlyStopping:
    """GAT's stopping rule, split between what `fit` tracks and what it keeps.

    `update` returns `progress`, a counter that grows whenever the validation accuracy or loss reaches a
    new best: monitored by `fit` (mode "max"), its patience is GAT's. The weights of the last epoch at
    which both were at their best are kept here; `restore` loads them.
    """

    def __init__(self) -> None:
        self.best_accuracy = -math.inf
        self.best_loss = math.inf
        self.progress = 0
        self.epoch = 0
        self.best_epoch = 0
        self.state: dict[str, Tensor] | None = None

    def update(self, model: nn.Module, val_loss: float, val_accuracy: float) -> int:
        self.epoch += 1
        better_acc, better_loss = val_accuracy >= self.best_accuracy, val_loss <= self.best_loss
        if better_acc and better_loss:
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best_epoch = self.epoch
        if better_acc or better_loss:
            self.progress += 1
            self.best_accuracy = max(self.best_accuracy, val_accuracy)
            self.best_loss = min(self.best_loss, val_loss)
        return self.progress

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def train_node_classifier(
    config: GraphModelConfig,
    data: Planetoid,
    *,
    seed: int,
    train: TrainConfig = TrainConfig(),
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "",
) -> RunResult:
    """Train `config.model` on `data`'s public split with one seed; return test/val/train accuracy.

    Metrics: `test_accuracy`, `val_accuracy`, `train_accuracy`, `val_loss` (of the kept weights),
    `best_epoch`, `epochs` (trained), `ms_per_epoch` (train step plus evaluation).
    """
    seed_everything(seed)
    data = data.to(device)
    model = build_model(config, data.num_features, data.num_classes).to(device)
    x, graph = model.inputs(data)
    optimizer = torch.optim.Adam(model.parameter_groups(), lr=config.lr)
    stopping = PaperEarlyStopping()
    y, train_mask, val_mask = data.y, data.train_mask, data.val_mask

    def train_step(model: nn.Module, _batch: None) -> Tensor:
        logits = model(x, graph)  # (N, K)
        return F.cross_entropy(logits[train_mask], y[train_mask])

    def evaluate(model: nn.Module) -> dict[str, float]:
        logits = model(x, graph)  # (N, K)
        val_loss = F.cross_entropy(logits[val_mask], y[val_mask]).item()
        val_accuracy = accuracy(logits[val_mask], y[val_mask])
        return {"val_accuracy": val_accuracy, "val_loss": val_loss,
                "progress": stopping.update(model, val_loss, val_accuracy)}

    history = fit(model, optimizer, train_data=[None], train_step=train_step, evaluate=evaluate,
                  epochs=train.epochs, monitor="progress", mode="max", patience=train.patience,
                  progress=progress, desc=desc, config={"model": config, "train": train, "seed": seed})
    stopping.restore(model)
    model.eval()
    with torch.no_grad():
        logits = model(x, graph)
    epochs = len(history.epochs)
    metrics = {
        "test_accuracy": accuracy(logits[data.test_mask], y[data.test_mask]),
        "val_accuracy": accuracy(logits[val_mask], y[val_mask]),
        "train_accuracy": accuracy(logits[train_mask], y[train_mask]),
        "val_loss": F.cross_entropy(logits[val_mask], y[val_mask]).item(),
        "best_epoch": float(stopping.best_epoch),
        "epochs": float(epochs),
        "ms_per_epoch": 1000.0 * history.train_seconds / max(epochs, 1),
    }
    return RunResult(model, metrics, history, (x, graph))
