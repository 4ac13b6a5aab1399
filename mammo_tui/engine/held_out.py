"""The dataset's official test side, touched once: by the chosen (best) checkpoint, after training.

Training and selection never see these images (data/split.held_out_split keeps them out of train
and validation); this is the only place that reads their labels. The figures go into summary.json
(`test_metrics`) and the run log; nothing is decided on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mammo_tui.labels import NUM_CLASSES
from mammo_tui.metrics import compute_metrics


def evaluate_held_out(model: torch.nn.Module, images: Any, labels: np.ndarray, groups: list[str],
                      device: torch.device, batch_size: int) -> dict[str, Any]:
    """compute_metrics on the held-out images, plus how many images and patients they are."""
    from mammo_tui.data.dataset import ImageDataset

    model.eval()
    chunks = []
    loader = DataLoader(ImageDataset(images, labels, augment=False), batch_size=batch_size, shuffle=False,
                        num_workers=0)
    with torch.no_grad():
        for x, _ in loader:
            chunks.append(torch.softmax(model(x.to(device)).float(), dim=1).cpu())
    probs = torch.cat(chunks).double().numpy()
    metrics = compute_metrics(labels, probs.argmax(axis=1), probs, NUM_CLASSES)
    return {**metrics, "n_images": int(len(labels)), "n_patients": len(set(groups))}


def describe_held_out(metrics: dict[str, Any], epoch: int | None) -> str:
    return (f"official test side ({metrics['n_images']} images, {metrics['n_patients']} patients), best checkpoint "
            f"(epoch {epoch}), touched once: kappa_q {metrics['kappa_quadratic']:.3f} "
            f"bal_acc_adj {metrics['balanced_accuracy_adjusted']:.3f}")
