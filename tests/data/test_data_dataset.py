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
