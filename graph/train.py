"""How one node classifier is trained with one seed: full-batch Adam, the public split, GAT's stopping rule.

The loop is `core.lab.harness.fit`, run through the experiment runner (`core.lab.runner`): this module
supplies the graph's train step, its evaluation and the run's record. The stopping rule is the GAT paper's
(Veličković et al., 2018, reference code), as `core.lab.harness.GATEarlyStopping`: training goes on while
the validation accuracy or the validation loss reaches a new best within `patience` epochs, and the weights
kept are those of the last epoch at which *both* were at their best. Every model, baselines included, is
trained this way.

Legend: N nodes, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.lab.harness import GATEarlyStopping
from core.lab.runner import MetricsContract, ModelSpec, RunContext, RunRecord
from graph.data import Planetoid
from graph.models import NodeClassifier, build_model

__all__ = ["CONTRACT", "TrainConfig", "train_one", "accuracy", "split_metrics"]

#: Test accuracy is the headline; validation accuracy (with the loss, by GAT's rule) selects the weights.
CONTRACT = MetricsContract(
    headline="test_accuracy", select="val_accuracy", mode="max",
    rule="by GAT's rule: the last epoch at which val_accuracy and val_loss were both at their best")
#: Write last.pt every this many epochs: a full-batch epoch on Cora is shorter than writing the checkpoint.
CHECKPOINT_EPOCHS = 50


@dataclass
class TrainConfig:
    """How each model is trained (the same for all of them)."""

    epochs: int = 1000  # at most; early stopping ends GAT on Cora after ~300-700
    patience: int = 100  # epochs with neither a new best validation accuracy nor loss


def accuracy(logits: Tensor, y: Tensor) -> float:
    return (logits.argmax(-1) == y).float().mean().item()


@torch.no_grad()
def split_metrics(model: NodeClassifier, data: Planetoid, inputs: tuple) -> dict[str, float]:
    """Accuracy on the three splits and the validation loss of `model` as it is (eval mode)."""
    model.eval()
    logits = model(*inputs)  # (N, K)
    y = data.y
    return {
        "train_accuracy": accuracy(logits[data.train_mask], y[data.train_mask]),
        "val_accuracy": accuracy(logits[data.val_mask], y[data.val_mask]),
        "val_loss": F.cross_entropy(logits[data.val_mask], y[data.val_mask]).item(),
        "test_accuracy": accuracy(logits[data.test_mask], y[data.test_mask]),
    }


def train_one(spec: ModelSpec, seed: int, ctx: RunContext, *, data: Planetoid) -> RunRecord:
    """Train `spec.config` on `data`'s public split with one seed (the runner has seeded everything).

    Args:
        spec (ModelSpec): the model; `spec.config` is a `graph.models.GraphModelConfig`.
        seed (int): the seed (names the run; the runner seeded the generators).
        ctx (RunContext): the run's folder, device and training configuration (`ctx.train`, a `TrainConfig`).
        data (Planetoid): the graph (bind with `functools.partial`).

    Returns:
        RunRecord: metrics `train_accuracy`, `val_accuracy`, `val_loss`, `test_accuracy` of the kept weights;
        bookkeeping `best_epoch`, `epochs`, `steps`, `seconds`, `params`, `ms_per_epoch`; the trained model.
    """
    train: TrainConfig = ctx.train
    data = data.to(ctx.device)
    model = build_model(spec.config, data.num_features, data.num_classes).to(ctx.device)
    x, graph = model.inputs(data)
    optimizer = torch.optim.Adam(model.parameter_groups(), lr=spec.config.lr)
    y, train_mask, val_mask = data.y, data.train_mask, data.val_mask

    def train_step(model: nn.Module, _batch: None) -> Tensor:
        logits = model(x, graph)  # (N, K)
        return F.cross_entropy(logits[train_mask], y[train_mask])

    def evaluate(model: nn.Module) -> dict[str, float]:
        logits = model(x, graph)  # (N, K)
        return {"val_accuracy": accuracy(logits[val_mask], y[val_mask]),
                "val_loss": F.cross_entropy(logits[val_mask], y[val_mask]).item()}

    history = ctx.fit(model, optimizer, train_data=[None], train_step=train_step, evaluate=evaluate,
                      epochs=train.epochs, keep="best", stopper=GATEarlyStopping(train.patience),
                      checkpoint_epochs=CHECKPOINT_EPOCHS)
    metrics = split_metrics(model, data, (x, graph))
    epochs = len(history.epochs)
    bookkeeping = ctx.bookkeeping(history, model, ms_per_epoch=1000.0 * history.train_seconds / max(epochs, 1))
    return RunRecord(metrics=metrics, bookkeeping=bookkeeping, history=history.epochs, model=model)
