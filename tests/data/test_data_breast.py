"""Breast crop + canonical flip (data/breast.py) and its wiring into images.preprocess."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mammo_tui.data.breast import (
    CANONICAL_SIDE,
    CLEAR_SIDE,
    MARGIN,
    breast_box,
    chest_wall_side,
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
    box = breast_box(mask)
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


def test_the_image_wins_over_a_header_that_contradicts_it_and_the_header_breaks_a_tie():
    """A header that says R on an image whose chest wall is clearly on the left (a wrong header, a
    flipped display) used to flip it to the wrong side; the pixels decide where they are clear."""
    image, _ = synthetic(chest_wall="L")
    side, clarity = chest_wall_side(image, breast_mask(image))
    assert side == "L" and clarity >= CLEAR_SIDE
    as_right = crop_and_flip(image, "R")
    np.testing.assert_allclose(as_right, crop_and_flip(image))
    assert as_right[:, : as_right.shape[1] // 4].mean() > as_right[:, -as_right.shape[1] // 4:].mean()
    # a breast seen with no clear side (a blob in the middle): the header decides
    blob = np.full((200, 200), 0.02, np.float32)
    yy, xx = np.mgrid[0:200, 0:200]
    blob[(yy - 100) ** 2 + (xx - 100) ** 2 < 60**2] = 0.6
    blob[90:110, 100:140] = 0.65  # a little denser right of centre: not a clear side
    assert chest_wall_side(blob, breast_mask(blob))[1] < CLEAR_SIDE
    np.testing.assert_allclose(crop_and_flip(blob, "R"), crop_and_flip(blob, "L")[:, ::-1])


def test_a_marker_between_the_chest_wall_edge_and_the_breast_is_cut_off():
    """The box used to reach the image edge on the chest wall side, keeping what lay between."""
    image, (top, bottom, left, right) = synthetic(chest_wall="L", marker=False)
    shifted = np.full_like(image, 0.02)
    shifted[:, 40:] = image[:, :-40]  # the breast starts 40 px from the edge
    shifted[180:200, 5:20] = 1.0  # a marker beside the chest wall, in the breast's rows
    out = crop_and_flip(shifted)
    assert out.max() < 1.0  # the marker's pixels are gone
    assert out.shape[1] < shifted.shape[1] - 40 + 2 * round(MARGIN * 300)


def test_the_cropped_breast_keeps_its_chest_wall_at_the_inputs_left_edge():
    """resize_pad centred the (tall) crop, leaving a band of background between the input's edge
    and the chest wall; it pads on the skin side only now, for every breast."""
    for chest_wall in ("L", "R"):
        image, _ = synthetic(rows=600, columns=300, chest_wall=chest_wall, marker=False)
        out = preprocess_array(crop_and_flip(image), left_edge=True)
        assert out[12:20, 0].mean() > 0.3  # tissue at the very first column
        assert out[:, -3:].max() == 0.0  # the padding is on the right


@pytest.mark.parametrize("image", [np.zeros((50, 40), np.float32), np.full((50, 40), 0.7, np.float32),
                                   np.zeros((1, 1), np.float32), np.random.default_rng(0).random((3, 2)).astype(np.float32)])
def test_blank_flat_and_tiny_images_come_back_valid(image):
    out = crop_and_flip(image)
    assert out.ndim == 2 and out.size > 0 and np.isfinite(out).all()
    assert preprocess_array(out).shape == (32, 32)


def preprocess_array(image, left_edge=False):
    from mammo_tui.data.images import resize_pad

    return resize_pad(image, 32, left_edge=left_edge)


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
    # the header says R although the picture has its chest wall clearly on the left: the picture wins
    path = make_dicom(tmp_path / "r.dcm", stored, ImageLaterality="R")
    assert read_image_and_laterality(path)[1] == "R"
    out = preprocess(path, 64, crop_breast=True)
    assert out[:, :24].mean() > out[:, 40:].mean()  # not flipped: the chest wall stays left
    # where the picture has no clear side, the header's R decides: flipped
    yy, xx = np.mgrid[0:200, 0:200]
    blob = np.where((yy - 100) ** 2 + (xx - 100) ** 2 < 60**2, 1500 + 10 * xx, 50).astype(np.uint16)
    assert chest_wall_side(blob / 4000.0, breast_mask(blob / 4000.0))[1] < CLEAR_SIDE  # denser right, not clearly
    window = {"WindowCenter": 2048, "WindowWidth": 4096}  # the file's own window: the gradient stays mild
    as_left = preprocess(make_dicom(tmp_path / "bl.dcm", blob, ImageLaterality="L", **window), 64, crop_breast=True)
    as_right = preprocess(make_dicom(tmp_path / "br.dcm", blob, ImageLaterality="R", **window), 64, crop_breast=True)
    assert not np.allclose(as_left, as_right)
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
