"""One image file -> header facts (probe) or float32 pixels in [0, 1] (read), and resize_pad.

Formats are recognised by their first bytes, not by the file name: DICOM (with or without the .dcm
extension), PNG (8/16-bit) and JPEG. 8-bit PNG/JPEG are taken as already windowed for display
(value / 255); 16-bit PNG holds raw detector values, so it gets the same percentile window as a
DICOM without a window.

Whatever goes wrong with one file (a decoder plugin's own exception, PIL's decompression-bomb
guard, NaN or infinite pixels, several frames) leaves probe/read_image as an ImageReadError
naming the file, so callers report it as a problem of that image and go on.
"""

from __future__ import annotations

import os
import re
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mammo_tui.data.breast import crop_and_flip
from mammo_tui.data.dicom import (
    MAX_PIXELS,
    percentile_window,
    probe_dicom,
    read_dicom,
    require_finite,
    require_pixel_count,
)
from mammo_tui.data.records import MIN_IMAGE_SIDE, ImageInfo, ImageReadError, require_regular_file

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def sniff_format(path: str) -> str:
    """DICOM | PNG | JPEG from the file's first bytes; raises ImageReadError for anything else."""
    require_regular_file(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except FileNotFoundError:
        raise ImageReadError("missing_file", f"{path}: file not found") from None
    except OSError as error:
        raise ImageReadError("unreadable", f"{path}: cannot open ({error.strerror})") from None
    if not head:
        raise ImageReadError("unreadable", f"{path}: empty file (0 bytes)")
    if head.startswith(_PNG_MAGIC):
        return "PNG"
    if head.startswith(_JPEG_MAGIC):
        return "JPEG"
    if head[128:132] == b"DICM" or path.lower().endswith(_DICOM_SUFFIXES):
        return "DICOM"  # a .dcm without the marker is reported by pydicom as not DICOM
    raise ImageReadError("unreadable", f"{path}: not a DICOM, PNG or JPEG file; remove it or convert it")


def _as_problem(path: str, error: Exception) -> ImageReadError:
    """Any exception from probing or decoding one image, as a problem naming that image."""
    if isinstance(error, ImageReadError):
        return error
    if isinstance(error, Image.DecompressionBombError):  # PIL refuses before it tells the size
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        return ImageReadError("too_large", f"{path}: image has {size}, over the {MAX_PIXELS:,}-pixel safety "
                              "limit (a mammogram has about 14 million); downscale or remove it")
    if isinstance(error, MemoryError):
        return ImageReadError("too_large", f"{path}: not enough memory to decode this image; free memory, "
                              "or downscale or remove the image")
    return ImageReadError("unreadable", f"{path}: cannot decode the image ({type(error).__name__}: {error})")


def _open_pil(path: str) -> Image.Image:
    """Image.open (header only) that refuses images over the decompression-bomb limit or with frames."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with the size
            image = Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise ImageReadError("unreadable", f"{path}: cannot read the image ({error})") from None
    try:
        require_pixel_count(path, *image.size)
        frames = getattr(image, "n_frames", 1)
        if frames > 1:  # an animated PNG or a multi-picture JPEG: which frame is the mammogram?
            raise ImageReadError("multi_frame", f"{path}: image has {frames} frames (animated or multi-picture); "
                                 "only single-frame images are supported: save the mammogram alone")
    except BaseException:
        image.close()
        raise
    return image


def probe(path: str) -> tuple[ImageInfo, str | None]:
    """Header facts plus the patient digest from DICOM (None otherwise); no pixel decoding.

    Raises ImageReadError for anything wrong with the file, whatever the library raised.
    """
    try:
        return _probe(path)
    except Exception as error:
        raise _as_problem(path, error) from error


def _probe(path: str) -> tuple[ImageInfo, str | None]:
    fmt = sniff_format(path)
    if fmt == "DICOM":
        return probe_dicom(path)
    with _open_pil(path) as image:  # lazy: reads the header only
        width, height = image.size
        mode = image.mode
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageReadError("tiny_image", f"{path}: image is {width}x{height} px, smaller than "
                             f"{MIN_IMAGE_SIDE} px on a side")
    bits = 16 if mode in _SIXTEEN_BIT_MODES else 8
    return ImageInfo(width=width, height=height, format=fmt, photometric=mode, bits_stored=bits), None


def probe_image(path: str | os.PathLike) -> ImageInfo:
    """Header-only facts; raises ImageReadError(kind, message)."""
    return probe(os.fspath(path))[0]


def _read_pil(path: str) -> np.ndarray:
    with _open_pil(path) as image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = ImageOps.exif_transpose(image)
                image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageReadError("unreadable", f"{path}: cannot decode the image ({error})") from None
        if image.mode in _SIXTEEN_BIT_MODES:
            values = np.asarray(image, dtype=np.float32)
            require_finite(values, path, "in the file")  # mode F: before the window hides how many
            return percentile_window(values)
        if image.mode != "L":
            image = image.convert("L")
        return np.asarray(image, dtype=np.float32) / 255.0


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to float32 HxW in [0, 1] (dense tissue bright).

    Raises ImageReadError for any failure, including pixels that are not all finite: what returns
    is safe to train on (the dataset scan calls this through cache.check_decodes).
    """
    return read_image_and_laterality(path)[0]


def read_image_and_laterality(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """read_image's pixels and the breast side the header names ('L' | 'R'); None for PNG/JPEG
    (no header) and for DICOM files that do not say. The header comes from the same single read."""
    path = os.fspath(path)
    laterality = None
    try:
        if sniff_format(path) == "DICOM":
            image, laterality = read_dicom(path)
        else:
            image = _read_pil(path)
    except Exception as error:  # e.g. a malformed LUT or a plugin's own error: name the file
        raise _as_problem(path, error) from error
    if image.ndim != 2:
        raise ImageReadError("unreadable", f"{path}: decoded to an array of shape {image.shape}, not one 2-D "
                             "image; convert it to a single greyscale image")
    require_finite(image, path)  # NaN pixels would train NaN weights and predict NaN
    return image, laterality


def preprocess(path: str | os.PathLike, size: int, crop_breast: bool = False) -> np.ndarray:
    """The one preprocessing every path uses (the training cache, eval, predict): decode, then
    (crop_breast) crop to the breast and flip to a canonical side, then resize_pad to size x size
    (the cropped breast's chest wall at the left edge, as a full-field image has it)."""
    image, laterality = read_image_and_laterality(path)
    if crop_breast:
        image = crop_and_flip(image, laterality)
    return resize_pad(image, size, left_edge=crop_breast)


def resize_pad(image: np.ndarray, size: int, left_edge: bool = False) -> np.ndarray:
    """Aspect-preserving resize so the longer side is `size`, then pad with 0 (background): centred,
    or with `left_edge` on the right only, so the image's left edge (the chest wall of a cropped,
    canonical breast) stays the input's left edge.

    Nothing is cropped, so no tissue is lost; INTER_AREA averages when shrinking (no aliasing).
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image.astype(np.float32, copy=False), (new_w, new_h), interpolation=interpolation)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new_h) // 2, 0 if left_edge else (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out
