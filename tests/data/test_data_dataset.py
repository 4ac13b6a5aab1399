"""ImageDataset: tensors, normalisation, reproducible augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammo_tui.data.dataset import NORM_MEAN, NORM_STD, ImageDataset


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    batch = np.zeros((6, 32, 32), dtype=np.float16)
    batch[:, 8:24, 4:20] = rng.uniform(0.3, 1.0, size=(6, 16, 16))
    return batch


def test_item_is_a_normalised_float_tensor_and_int_label(images):
    dataset = ImageDataset(images, [0, 1, 2, 3, 2, 1], augment=False)
    tensor, label = dataset[2]
    assert tensor.shape == (1, 32, 32) and tensor.dtype == torch.float32
    assert label == 2 and isinstance(label, int)
    expected = (images[2].astype(np.float32) - NORM_MEAN) / NORM_STD
    np.testing.assert_allclose(tensor[0].numpy(), expected)
    assert tensor[0, 0, 0].item() == pytest.approx(-2.0)  # background


def test_augmentation_is_reproducible_and_changes_images(images):
    first = [ImageDataset(images, [0] * 6, augment=True, seed=5)[i][0] for i in range(6)]
    again = [ImageDataset(images, [0] * 6, augment=True, seed=5)[i][0] for i in range(6)]
    plain = [ImageDataset(images, [0] * 6, augment=False)[i][0] for i in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert sum(not torch.allclose(a, p) for a, p in zip(first, plain)) >= 3
    for tensor in first:  # augmented on [0, 1], then normalised: range stays [-2, 2]
        assert tensor.min() >= -2.0 - 1e-5 and tensor.max() <= 2.0 + 1e-5


def test_works_in_a_dataloader(images):
    loader = torch.utils.data.DataLoader(ImageDataset(images, [0, 1, 2, 3, 0, 1], augment=True), batch_size=4)
    batch, labels = next(iter(loader))
    assert batch.shape == (4, 1, 32, 32) and labels.tolist() == [0, 1, 2, 3]


def test_length_mismatch_is_refused(images):
    with pytest.raises(ValueError):
        ImageDataset(images, [0, 1], augment=False)


def _chest_wall_side(tensor: torch.Tensor) -> str:
    image = tensor[0].numpy()
    return "left" if image[:, :16].mean() > image[:, 16:].mean() else "right"


def test_images_the_crop_turned_chest_wall_left_are_never_flipped_back():
    """The breast crop flips every right breast so the chest wall is on the left; a horizontal flip
    in the augmentation would undo that for half the training inputs, while every evaluation input
    keeps it on the left. Without the crop, flipping left and right breasts is the augmentation."""
    batch = np.zeros((40, 32, 32), dtype=np.float32)
    batch[:, 4:28, 0:10] = 0.9  # the chest wall side: bright, on the left
    batch[:, 8:24, 10:18] = 0.4
    canonical = ImageDataset(batch, [0] * 40, augment=True, seed=3, flip=False)
    assert {_chest_wall_side(canonical[i][0]) for i in range(40)} == {"left"}
    free = ImageDataset(batch, [0] * 40, augment=True, seed=3, flip=True)
    assert {_chest_wall_side(free[i][0]) for i in range(40)} == {"left", "right"}


@pytest.mark.parametrize("crop_breast, flips", [(True, False), (False, True)])
def test_the_training_loader_flips_only_images_without_a_canonical_side(crop_breast, flips, tiny_config):
    from mammo_tui.engine.loaders import Splits, train_loader
    from mammo_tui.preprocessing import Preprocessing

    cfg = tiny_config(crop_breast=crop_breast, augment=True)
    assert Preprocessing.of(cfg).canonical_side is crop_breast
    labels = np.array([0, 1, 2, 3] * 4)
    none = np.zeros((0, 32, 32), dtype=np.float16)
    data = Splits(np.zeros((16, 32, 32), dtype=np.float16), labels, none, labels[:0], none, labels[:0], [],
                  np.bincount(labels).tolist())
    loader = train_loader(cfg, data, epoch=1, features=None, balanced=False, dist=None, device=torch.device("cpu"))
    assert loader.dataset.flip is flips
