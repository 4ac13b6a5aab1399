"""torch Dataset over preloaded images (see cache.load_images). The only data module importing torch.

Augmentation runs on [0, 1] float32 images (albumentations clips float32 to [0, 1], so it must come
before normalisation): horizontal flip (left and right breasts; never when the preprocessing put
every chest wall on the left, which a flip would undo), a small affine (scale, shift, rotation;
padding with 0 = background) and brightness/contrast jitter. Then
x -> (x - NORM_MEAN) / NORM_STD, which maps the [0, 1] range to [-2, 2]: background (0) to -2 and
a typical breast (~0.3-0.7) around 0, close to what a pretrained network's first layer expects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network version check at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset, get_worker_info  # noqa: E402

from mammo_tui.preprocessing import NORM_MEAN, NORM_STD  # noqa: E402


def build_augmentation(seed: int = 0, flip: bool = True) -> A.Compose:
    """`flip`: False when the images share one orientation (Preprocessing.canonical_side)."""
    return A.Compose(
        [
            *([A.HorizontalFlip(p=0.5)] if flip else []),
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10),
                     border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.7),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        ],
        seed=seed,
    )


def normalise(image: np.ndarray) -> np.ndarray:
    return (image - NORM_MEAN) / NORM_STD


class Rows:
    """Some rows of an image array (or of cache.MappedImages / StreamedImages) by index, without
    copying them: `array[indices]` would copy a memory-mapped dataset into each process."""

    def __init__(self, images, indices: Sequence[int]) -> None:
        self.images = images
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.images[int(self.indices[index])]

    def __array__(self, dtype=None, copy=None):
        stacked = np.stack([self[i] for i in range(len(self))])
        return stacked if dtype is None else stacked.astype(dtype, copy=False)


class ImageDataset(Dataset):
    """(float32 tensor [1, S, S], int label) from a float16/float32 array [N, S, S] in [0, 1], or
    anything indexable by row like it (Rows, cache.MappedImages, cache.StreamedImages)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], augment: bool, seed: int = 0,
                 flip: bool = True) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images  # kept by reference: no copy of a preloaded dataset
        self.labels = [int(label) for label in labels]
        self.augment = augment
        self.seed = seed
        self.flip = flip
        self._transform = build_augmentation(seed, flip) if augment else None
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def _reseed_in_worker(self) -> None:
        # DataLoader workers get copies of this object with identical RNG state; torch gives each
        # worker (and each epoch's new workers) a distinct initial seed, derived from torch's RNG.
        info = get_worker_info()
        if info is None or self._transform is None:
            return
        worker_seed = torch.initial_seed() % 2**32
        if worker_seed != self._worker_seed:
            self._transform.set_random_seed(worker_seed)
            self._worker_seed = worker_seed

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = np.asarray(self.images[index], dtype=np.float32)
        if self._transform is not None:
            self._reseed_in_worker()
            image = self._transform(image=image)["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(normalise(image), dtype=np.float32))
        return tensor.unsqueeze(0), self.labels[index]
