"""Losses and epoch metrics, computed from sums that add up across workers.

Each batch contributes a flat float64 tensor of sufficient statistics (loss and row sums, a
confusion matrix, score histograms for AUC, error sums for regression); one all-reduce of their
per-epoch total gives every rank the metric of the whole split, not of its own shard. AUC from
histograms of `AUC_BINS` score bins is exact up to ties within a bin (scores closer than 1/4096).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from raymlp.data.features import FeaturePipeline

AUC_BINS = 4096


@dataclass(frozen=True)
class MetricSpec:
    task: str
    num_outputs: int
    label_scale: float = 1.0

    @classmethod
    def of(cls, features: FeaturePipeline) -> MetricSpec:
        return cls(features.task, features.num_outputs, features.label_scale)

    @property
    def target_dtype(self) -> torch.dtype:
        return torch.int64 if self.task == "classification" else torch.float32

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy over class logits, or mean squared error of the standardized target."""
        if self.task == "classification":
            return F.cross_entropy(outputs.float(), targets, reduction=reduction)
        return F.mse_loss(outputs.float().squeeze(1), targets, reduction=reduction)

    def size(self) -> int:
        """Length of `sums`."""
        c = self.num_outputs
        return 6 if self.task == "regression" else 2 + c * c + 2 * c * AUC_BINS

    @torch.no_grad()
    def sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """This batch's statistics for everything validation reports: loss and rows, then the
        confusion matrix and AUC score histograms, or the error and target sums R² needs. (A
        training epoch keeps fewer, in a `TrainTally`.)"""
        outputs = outputs.float()
        head = torch.stack([self.loss(outputs, targets, "sum").double(), outputs.new_tensor(len(targets)).double()])
        if self.task == "regression":
            err = outputs.squeeze(1).double() - targets.double()
            y = targets.double()
            return torch.cat([head, torch.stack([(err * err).sum(), err.abs().sum(), y.sum(), (y * y).sum()])])
        c = self.num_outputs
        predicted = outputs.argmax(dim=1)
        confusion = torch.bincount(targets * c + predicted, minlength=c * c).double()
        probs = torch.softmax(outputs, dim=1)
        bins = (probs * AUC_BINS).long().clamp_(max=AUC_BINS - 1) + torch.arange(c, device=probs.device) * AUC_BINS
        every = torch.bincount(bins.flatten(), minlength=c * AUC_BINS)
        positive = torch.bincount(bins.gather(1, targets[:, None]).flatten(), minlength=c * AUC_BINS)
        return torch.cat([head, confusion, positive.double(), (every - positive).double()])

    def tally(self, device: torch.device) -> TrainTally:
        return TrainTally(self.task == "classification", device)

    def summarize(self, sums: torch.Tensor, prefix: str, detailed: bool) -> dict[str, float]:
        """Metrics named `<prefix>_<name>` from summed statistics: `sums`' when `detailed`, else a
        `TrainTally`'s (loss, and accuracy for classification)."""
        s = sums.double().cpu()
        rows = max(s[1].item(), 1.0)
        out = {"loss": s[0].item() / rows}
        if self.task == "regression":
            if detailed:
                sse, sae, sum_y, sum_y2 = s[2:6].tolist()
                variance = sum_y2 - sum_y * sum_y / rows
                out |= {
                    "rmse": math.sqrt(sse / rows) * self.label_scale,
                    "mae": sae / rows * self.label_scale,
                    "r2": 1.0 - sse / variance if variance > 0 else float("nan"),
                }
            return {f"{prefix}_{k}": v for k, v in out.items()}
        if not detailed:
            return {f"{prefix}_loss": out["loss"], f"{prefix}_accuracy": s[2].item() / rows}
        c = self.num_outputs
        confusion = s[2 : 2 + c * c].reshape(c, c)
        histograms = s[2 + c * c :].reshape(2, c, AUC_BINS)
        out |= {"accuracy": confusion.trace().item() / rows, "auc": _auc(histograms[0], histograms[1]), "f1": _f1(confusion)}
        return {f"{prefix}_{k}": v for k, v in out.items()}


class TrainTally:
    """A training epoch's statistics (loss and rows, and correct predictions for classification),
    accumulated in place step by step: a fresh statistics tensor per batch cost ~200 us a step on a
    2-core CPU, as much as the forward pass of a small MLP on 256 rows; this costs a fifth of it."""

    def __init__(self, count_correct: bool, device: torch.device):
        self.count_correct, self.rows = count_correct, 0
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)

    @torch.no_grad()
    def add(self, outputs: torch.Tensor, targets: torch.Tensor, mean_loss: torch.Tensor) -> None:
        self.loss.add_(mean_loss, alpha=len(targets))
        self.rows += len(targets)
        if self.count_correct:
            self.correct.add_((outputs.argmax(dim=1) == targets).sum())

    def sums(self) -> torch.Tensor:
        rows = torch.tensor(float(self.rows), dtype=torch.float64, device=self.loss.device)
        return torch.stack([self.loss, rows, *([self.correct.double()] if self.count_correct else [])])


def _auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """ROC AUC per class (one-vs-rest) from score histograms, macro-averaged over classes that
    have both positives and negatives (for two classes both equal the usual binary AUC). A pair
    in the same bin counts half."""
    above = positive.flip(1).cumsum(1).flip(1) - positive  # positives scoring in higher bins
    pairs = (negative * (above + 0.5 * positive)).sum(1)
    total = positive.sum(1) * negative.sum(1)
    defined = total > 0
    if not defined.any():
        return float("nan")
    return (pairs[defined] / total[defined]).mean().item()


def _f1(confusion: torch.Tensor) -> float:
    """F1 of the second class for binary tasks (the positive class, classes sorted), macro F1 over
    classes otherwise."""
    tp = confusion.diagonal()
    predicted, actual = confusion.sum(0), confusion.sum(1)
    f1 = torch.where(predicted + actual > 0, 2 * tp / (predicted + actual).clamp(min=1), torch.zeros_like(tp))
    return (f1[1] if len(f1) == 2 else f1.mean()).item()

