"""Loss functions for imbalanced classification (defense layer 3)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """scikit-learn's 'balanced' weights n / (k * count); absent classes get weight 0."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels)
    present = np.unique(labels)
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


class FocalLoss(nn.Module):
    """Lin et al. 2017: down-weights easy examples by (1 - p_t)^gamma."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        log_pt = log_p.gather(1, target[:, None]).squeeze(1)
        loss = -((1 - log_pt.exp()) ** self.gamma) * log_pt
        if self.weight is not None:
            w = self.weight[target]
            return (loss * w).sum() / w.sum().clamp_min(1e-12)
        return loss.mean()


class LogitAdjustedLoss(nn.Module):
    """Menon et al. 2021 logit-adjusted cross-entropy: CE(logits + tau * log prior).

    Training against prior-shifted logits makes the raw logits estimate balanced posteriors, so
    plain argmax at test time is already balanced; no sampler needed.
    """

    def __init__(self, priors: Sequence[float], tau: float = 1.0, weight: torch.Tensor | None = None):
        super().__init__()
        priors = torch.as_tensor(np.asarray(priors, dtype=np.float64).clip(1e-8), dtype=torch.float32)
        self.register_buffer("adjustment", tau * priors.log())
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float() + self.adjustment, target, weight=self.weight)


def build_loss(name: str, train_labels: Sequence[int], num_classes: int, class_weights: str,
               focal_gamma: float, la_tau: float) -> nn.Module:
    weight = None
    if class_weights == "balanced":
        weight = torch.as_tensor(balanced_class_weights(train_labels, num_classes), dtype=torch.float32)
    if name == "focal":
        return FocalLoss(focal_gamma, weight)
    if name == "logit_adjusted":
        counts = np.bincount(np.asarray(train_labels), minlength=num_classes).astype(np.float64)
        return LogitAdjustedLoss(counts / counts.sum(), la_tau, weight)
    return nn.CrossEntropyLoss(weight=weight)


def inverse_frequency_weights(labels: Sequence[int], num_classes: int, power: float = 1.0) -> np.ndarray:
    """Per-sample weights count(class) ** -power for WeightedRandomSampler: power 1 gives
    near-uniform batches, 0.5 square-root sampling (rare classes favoured, but less), 0 none."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return counts[labels] ** -float(power)
