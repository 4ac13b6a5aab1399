"""Crop a mammogram to the breast and flip it so the chest wall is always on the left.

A full-field mammogram is tall and mostly background; resized whole to img_size x img_size, a
large share of the input pixels is black. Cropping to the breast first puts more of them on tissue
at the same img_size, and one canonical side means the network does not have to learn every
pattern twice (left and right breasts are mirror images).

The breast is the largest connected component above dicom.tissue_threshold (a label, marker or
ruler in the background is a smaller component, so it is dropped), and the crop is its bounding box
plus a small margin on every side (a marker beside the chest wall is cut off too). Which side the
chest wall is on comes from the image when it is clear (the chest wall half holds clearly more of
the tissue mass: a header can be wrong, or describe a flipped display); the DICOM laterality
(dicom.header_laterality; R: chest wall on the image's right, the standard display) decides only
when the pixels do not.
Whatever the image (blank, tiny, all tissue), the result is a valid, non-empty image: when no
breast can be found the image is returned unchanged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from mammo_tui.data.dicom import tissue_threshold

CANONICAL_SIDE = "L"  # the chest wall ends up on the image's left, as in a left breast
MARGIN = 0.02  # of the image side, added around the breast box (keeps the skin line)
MASK_SIDE = 512  # the mask is found on a copy this size at most: cheap on 14 Mpx images
MIN_BREAST_FRACTION = 0.01  # a largest component smaller than this share is not a breast
# the chest wall half holds at least this much more of the tissue mass than the other (as a share
# of both): the pixels decide. Below it (a breast seen edge-on, a blob) the header does.
CLEAR_SIDE = 0.2


class Box(NamedTuple):
    top: int
    bottom: int  # exclusive
    left: int
    right: int  # exclusive


def _shrunk(image: np.ndarray) -> np.ndarray:
    """The image at MASK_SIDE px at most on its longer side (INTER_AREA: mirror-symmetric)."""
    height, width = image.shape
    scale = min(1.0, MASK_SIDE / max(height, width))
    if scale == 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def breast_mask(image: np.ndarray) -> np.ndarray | None:
    """bool mask of the largest component above the tissue threshold; None when there is none.

    The mask has the image's size when its longer side is <= MASK_SIDE, else _shrunk(image)'s.
    """
    if float(image.max()) <= float(image.min()):
        return None  # blank: nothing to tell breast from background
    binary = (image > tissue_threshold(image)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < MIN_BREAST_FRACTION * binary.size:
        return None
    return labels == largest


def chest_wall_side(image: np.ndarray, mask: np.ndarray) -> tuple[str, float]:
    """('L' | 'R', clarity): the half of the image holding more of the breast's tissue mass (the
    chest wall is thickest), and by how much, as a share of both halves (0: even, 1: all)."""
    columns = (image * mask).sum(axis=0, dtype=np.float64)
    half = columns.size // 2
    left, right = columns[:half].sum(), columns[columns.size - half:].sum()
    clarity = abs(right - left) / (right + left) if right + left > 0 else 0.0
    return ("R" if right > left else "L"), float(clarity)


def decide_side(pixels: str, clarity: float, laterality: str | None) -> str:
    """The chest wall side: the image's when it is clear, else the header's, else the image's guess."""
    if clarity >= CLEAR_SIDE or laterality not in ("L", "R"):
        return pixels
    return laterality


def breast_box(mask: np.ndarray, shape: tuple[int, int] | None = None) -> Box:
    """Bounding box of the mask plus MARGIN on every side, in the coordinates of an image of
    `shape` (default: the mask's). Floor / ceil when scaling up keep the box mirror-symmetric: a
    mirrored image gets the mirrored box. A breast against the chest wall edge reaches it anyway;
    what lies between the edge and a breast that does not (a marker, a paddle) is cut off."""
    small_h, small_w = mask.shape
    height, width = shape or mask.shape
    sy, sx = height / small_h, width / small_w
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    pad_y, pad_x = round(MARGIN * height), round(MARGIN * width)
    top = max(0, math.floor(rows[0] * sy) - pad_y)
    bottom = min(height, math.ceil((rows[-1] + 1) * sy) + pad_y)
    left = max(0, math.floor(cols[0] * sx) - pad_x)
    right = min(width, math.ceil((cols[-1] + 1) * sx) + pad_x)
    return Box(top, bottom, left, right)


def crop_and_flip(image: np.ndarray, laterality: str | None = None) -> np.ndarray:
    """The breast region with the chest wall on the CANONICAL_SIDE (a new float32 array).

    laterality: 'L' | 'R' from the header (which breast; its chest wall is on that side of the
    image), or None. It decides the side only where the image does not (decide_side).
    """
    image = np.asarray(image, dtype=np.float32)
    small = _shrunk(image)
    mask = breast_mask(small)
    if mask is None:
        side = laterality or CANONICAL_SIDE
        cropped = image
    else:
        side = decide_side(*chest_wall_side(small, mask), laterality)
        box = breast_box(mask, image.shape)
        cropped = image[box.top:box.bottom, box.left:box.right]
    if side != CANONICAL_SIDE:
        cropped = cropped[:, ::-1]
    return np.ascontiguousarray(cropped)


def tissue_fraction(image: np.ndarray, threshold: float | None = None) -> float:
    """Share of the pixels above `threshold` (default: the image's own tissue threshold): how much
    of a network input is breast. Pass the source image's threshold to compare two inputs fairly."""
    if not image.size:
        return 0.0
    return float(np.mean(image > (tissue_threshold(image) if threshold is None else threshold)))
