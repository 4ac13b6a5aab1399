"""The run's data: the images of its splits, how they are cut into batches, the train and validation
DataLoaders (weighted or distributed samplers), and backbone features computed once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, WeightedRandomSampler

from mammo_tui.config import TrainConfig
from mammo_tui.engine.distributed import DistInfo, DistributedWeightedSampler
from mammo_tui.engine.losses import inverse_frequency_weights
from mammo_tui.engine.models import Classifier, default_num_workers
from mammo_tui.errors import MammoError
from mammo_tui.events import EventSink, LogMessage, ProgressMeter
from mammo_tui.labels import CLASS_NAMES, NUM_CLASSES
from mammo_tui.preprocessing import Preprocessing


@dataclass
class Splits:
    """Views by index into the one preprocessed array (never copies), with their labels."""

    train_images: Any
    train_labels: np.ndarray
    val_images: Any
    val_labels: np.ndarray
    test_images: Any  # the official test side
    test_labels: np.ndarray
    test_groups: list
    train_counts: list[int]


def load_splits(setup: Any, cfg: TrainConfig, sink: EventSink, is_main: bool,
                world: int) -> tuple[Splits, list[LogMessage]]:
    """The preprocessed images of the run's splits, and what to say about them once the run starts."""
    from mammo_tui.data.cache import PreprocessCache, load_images
    from mammo_tui.data.dataset import Rows

    records = setup.prepared.records
    cache = PreprocessCache.of(Preprocessing.of(cfg))
    t0 = time.perf_counter()
    # rank 0 preprocesses and builds the shared memory-mapped file; other ranks wait for it
    progress = ProgressMeter("preprocessing images", sink) if is_main else None
    images = load_images(records, cache, progress, workers=cfg.preprocess_workers)
    notes = [LogMessage("info", f"loaded {len(records)} images at {cfg.img_size} px in "
                                f"{time.perf_counter() - t0:.1f} s ({cache.decodes} decoded, "
                                f"{cache.hits} from cache)")]
    notes += [LogMessage("warning", message) for message in cache.warnings]
    labels = np.array([r.label for r in records], dtype=np.int64)
    tr, va, te = setup.train_idx, setup.val_idx, setup.test_idx
    train_labels = labels[tr]
    data = Splits(Rows(images, tr), train_labels, Rows(images, va), labels[va], Rows(images, te), labels[te],
                  [records[i].group for i in te], np.bincount(train_labels, minlength=NUM_CLASSES).tolist())
    n = len(train_labels)
    if n < 2:
        raise MammoError("the training split has fewer than 2 images; the dataset is too small")
    share, batch, _ = batching(n, world, cfg.batch_size)
    if share < 2:
        raise MammoError(f"{n} training images over {world} processes leave "
                         f"{share} per process; BatchNorm needs batches of 2 or more. Use fewer processes.")
    if batch < cfg.batch_size:
        where = (f"the {n} training images" if world == 1 else
                 f"each process's share of the training images ({share} of {n} on each of {world} processes)")
        notes.append(LogMessage("warning", f"batch_size {cfg.batch_size} is larger than {where}; using {batch}"))
    present = set(train_labels.tolist())
    absent = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if c not in present]
    if absent:
        notes.append(LogMessage("warning", f"no training images for class {', '.join(absent)}: "
                                "the model cannot learn it"))
    return data, notes


def batching(n_train: int, world: int, batch_size: int) -> tuple[int, int, bool]:
    """(images per process, batch size, drop_last). Each process draws ceil(n / world) images
    (the samplers pad to equal shares); batches are cut from that share, never from n, so no
    process ends an epoch with zero batches."""
    share = -(-n_train // world)
    batch = min(batch_size, share)
    return share, batch, share > batch


def steps_per_epoch(n_train: int, world: int, cfg: TrainConfig) -> int:
    share, batch, drop_last = batching(n_train, world, cfg.batch_size)
    steps = share // batch if drop_last else -(-share // batch)
    return min(steps, cfg.max_batches_per_epoch) if cfg.max_batches_per_epoch else steps


def workers(cfg: TrainConfig, device: torch.device) -> int:
    return cfg.num_workers if cfg.num_workers >= 0 else default_num_workers(device.type)


def train_loader(cfg: TrainConfig, data: Splits, epoch: int, features: torch.Tensor | None, balanced: bool,
                 dist: DistInfo | None, device: torch.device) -> DataLoader:
    """An epoch's training batches, seeded by the epoch. `balanced` (cRT): class-balanced sampling."""
    from mammo_tui.data.dataset import ImageDataset

    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    if features is not None:
        dataset = TensorDataset(features, torch.as_tensor(data.train_labels))
    else:
        dataset = ImageDataset(data.train_images, data.train_labels, augment=cfg.augment,
                               seed=cfg.seed * 1000 + epoch, flip=not Preprocessing.of(cfg).canonical_side)
    sampler = None
    seed = cfg.seed * 1000 + epoch
    if balanced or (cfg.sampler == "weighted" and cfg.sampler_power > 0):
        power = 1.0 if balanced else cfg.sampler_power
        weights = inverse_frequency_weights(data.train_labels, NUM_CLASSES, power)
        if dist:
            sampler = DistributedWeightedSampler(weights, len(weights), dist, seed)
        else:
            sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                            num_samples=len(weights), replacement=True, generator=generator)
    elif dist:
        sampler = DistributedSampler(dataset, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=seed)
    _, batch, drop_last = batching(len(data.train_labels), dist.world if dist else 1, cfg.batch_size)
    n_workers = 0 if features is not None else workers(cfg, device)
    return DataLoader(dataset, batch_size=batch, sampler=sampler, shuffle=sampler is None,
                      generator=generator, num_workers=n_workers, pin_memory=device.type == "cuda",
                      drop_last=drop_last, persistent_workers=False)


def val_loader(cfg: TrainConfig, data: Splits, features: torch.Tensor | None, device: torch.device) -> DataLoader:
    from mammo_tui.data.dataset import ImageDataset

    if features is not None:
        dataset = TensorDataset(features, torch.as_tensor(data.val_labels))
    else:
        dataset = ImageDataset(data.val_images, data.val_labels, augment=False)
    return DataLoader(dataset, batch_size=max(cfg.batch_size, 64), shuffle=False,
                      num_workers=0 if features is not None else workers(cfg, device),
                      pin_memory=device.type == "cuda")


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def backbone_features(model: Classifier, images: Any, device: torch.device, autocast: Any) -> torch.Tensor:
    """Backbone features computed once, for epochs where only the head trains. `autocast()`: the AMP context."""
    from mammo_tui.data.dataset import ImageDataset

    loader = DataLoader(ImageDataset(images, np.zeros(len(images), dtype=np.int64), augment=False),
                        batch_size=128, num_workers=0)
    model.eval()
    chunks = []
    with torch.no_grad(), autocast():
        for x, _ in loader:
            chunks.append(model.backbone(to_device(x, device)).float().cpu())
    return torch.cat(chunks)


class FeatureCache:
    """The backbone features of the train and validation images, computed once per trainable stage
    while nothing below the head trains (frozen backbone, no augmentation)."""

    def __init__(self) -> None:
        self.stage: str | None = None  # the stage the features belong to
        self.train: torch.Tensor | None = None
        self.val: torch.Tensor | None = None

    def clear(self) -> None:
        self.stage = None

    def update(self, model: Classifier, stage: str, data: Splits, device: torch.device, autocast: Any) -> float | None:
        """Computes the features unless they belong to `stage` already; the seconds it took, or None."""
        if self.stage == stage:
            return None
        t0 = time.perf_counter()
        self.train = backbone_features(model, data.train_images, device, autocast)
        self.val = backbone_features(model, data.val_images, device, autocast)
        self.stage = stage
        return time.perf_counter() - t0
