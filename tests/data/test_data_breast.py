"""Breast crop + canonical flip (data/breast.py) and its wiring into images.preprocess."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mammo_tui.data.breast import (
    CANONICAL_SIDE,
    MARGIN,
    breast_box,
    breast_mask,
    crop_and_flip,
    tissue_fraction,
)
from mammo_tui.data.dicom import laterality_from_text
from mammo_tui.data.images import preprocess, read_image_and_laterality


def synthetic(rows=400, columns=300, chest_wall="L", marker=True) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A half-ellipse breast against the chest wall edge, denser near the wall, plus a bright
    marker blob in the far background corner. Returns (image, breast bbox top, bottom, left, right)."""
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    depth = xx if chest_wall == "L" else columns - 1 - xx
    a, b, centre = 0.6 * columns, 0.35 * rows, 0.5 * rows
    radius = (depth / a) ** 2 + ((yy - centre) / b) ** 2
    breast = radius <= 1.0
    image = np.where(breast, 0.3 + 0.5 * np.sqrt(np.clip(1 - radius, 0, 1)), 0.02).astype(np.float32)
    if marker:  # e.g. a lead "R" marker: bright, small, away from the breast
        far = slice(columns - 30, columns - 10) if chest_wall == "L" else slice(10, 30)
        image[10:30, far] = 1.0
    rows_in, cols_in = np.flatnonzero(breast.any(axis=1)), np.flatnonzero(breast.any(axis=0))
    return image, (rows_in[0], rows_in[-1] + 1, cols_in[0], cols_in[-1] + 1)


def test_the_crop_box_is_the_breast_plus_a_margin_and_drops_the_marker():
    image, (top, bottom, left, right) = synthetic(chest_wall="L")
    mask = breast_mask(image)
    assert mask is not None and not mask[10:30, -30:-10].any()  # the marker is not the breast
    box = breast_box(mask, "L")
    pad_y, pad_x = round(MARGIN * 400), round(MARGIN * 300)
    assert box.left == 0  # the chest wall edge is kept
    assert abs(box.top - (top - pad_y)) <= 2 and abs(box.bottom - (bottom + pad_y)) <= 2
    assert abs(box.right - (right + pad_x)) <= 2 and box.right < 300 - 40  # background (and marker) cut off


@pytest.mark.parametrize("rows, columns", [(400, 300), (1331, 1024)])  # the larger: mask on a downscaled copy
def test_a_right_breast_is_found_on_the_right_and_flipped_to_the_canonical_side(rows, columns):
    left, _ = synthetic(rows, columns, chest_wall="L")
    right, _ = synthetic(rows, columns, chest_wall="R")
    out_left, out_right = crop_and_flip(left), crop_and_flip(right)
    assert CANONICAL_SIDE == "L"
    # chest wall (the brightest, thickest column) on the left in both outputs
    for out in (out_left, out_right):
        assert out[:, : out.shape[1] // 4].mean() > out[:, -out.shape[1] // 4:].mean()
        assert out.shape[1] < columns * 0.75  # cropped
    np.testing.assert_allclose(out_left, out_right, atol=1e-6)  # mirrored inputs, the same output


def test_header_laterality_wins_over_the_image():
    image, _ = synthetic(chest_wall="L")
    # a header saying R means the chest wall is on the right: the image is flipped
    as_right = crop_and_flip(image, "R")
    assert as_right[:, -as_right.shape[1] // 4:].mean() > as_right[:, : as_right.shape[1] // 4].mean()


@pytest.mark.parametrize("image", [np.zeros((50, 40), np.float32), np.full((50, 40), 0.7, np.float32),
                                   np.zeros((1, 1), np.float32), np.random.default_rng(0).random((3, 2)).astype(np.float32)])
def test_blank_flat_and_tiny_images_come_back_valid(image):
    out = crop_and_flip(image)
    assert out.ndim == 2 and out.size > 0 and np.isfinite(out).all()
    assert preprocess_array(out).shape == (32, 32)


def preprocess_array(image):
    from mammo_tui.data.images import resize_pad

    return resize_pad(image, 32)


def test_an_image_that_is_all_tissue_is_kept_whole():
    rng = np.random.default_rng(1)
    image = (0.5 + 0.4 * rng.random((120, 90))).astype(np.float32)
    assert crop_and_flip(image).shape == (120, 90)


def test_laterality_from_header_text():
    assert laterality_from_text("L") == "L" and laterality_from_text("RIGHT") == "R"
    assert laterality_from_text(None, "", "R MLO") == "R"
    assert laterality_from_text("LCC") == "L" and laterality_from_text("r-mlo") == "R"
    assert laterality_from_text("L R") is None and laterality_from_text("CC", "bilateral") is None
    assert laterality_from_text("B", "Left CC") == "L"  # ImageLaterality B (both): the description decides


def test_the_crop_puts_more_of_the_input_on_tissue():
    image, _ = synthetic(rows=600, columns=400, marker=False)
    threshold = 0.15
    plain = preprocess_array(image)
    cropped = preprocess_array(crop_and_flip(image))
    assert tissue_fraction(cropped, threshold) > tissue_fraction(plain, threshold) + 0.1


def test_preprocess_uses_the_dicom_laterality_and_png_the_image(tmp_path, make_dicom):
    image, _ = synthetic(chest_wall="L", marker=False)
    stored = np.rint(image * 4000).astype(np.uint16)
    # the header says R although the picture has its chest wall on the left: the header wins
    path = make_dicom(tmp_path / "r.dcm", stored, ImageLaterality="R")
    assert read_image_and_laterality(path)[1] == "R"
    out = preprocess(path, 64, crop_breast=True)
    assert out[:, 40:].mean() > out[:, :24].mean()  # flipped: the chest wall went right
    png = tmp_path / "r.png"
    Image.fromarray(np.rint(image[:, ::-1] * 255).astype(np.uint8)).save(png)  # a right breast, no header
    assert read_image_and_laterality(png)[1] is None
    flipped = preprocess(png, 64, crop_breast=True)
    assert flipped[:, :24].mean() > flipped[:, 40:].mean()  # from the image: chest wall to the left
    assert not np.allclose(preprocess(png, 64), flipped)  # crop_breast changes what the network sees


def test_monochrome1_is_cropped_like_monochrome2(tmp_path, make_dicom):
    image, _ = synthetic(chest_wall="R")
    stored = np.rint(image * 4000).astype(np.uint16)
    mono2 = preprocess(make_dicom(tmp_path / "m2.dcm", stored), 64, crop_breast=True)
    mono1 = preprocess(make_dicom(tmp_path / "m1.dcm", 4095 - stored, photometric="MONOCHROME1"), 64, crop_breast=True)
    np.testing.assert_allclose(mono1, mono2, atol=2e-3)
    assert mono2[:, :24].mean() > mono2[:, 40:].mean()
