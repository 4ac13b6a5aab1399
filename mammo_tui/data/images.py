"""One image file -> header facts (probe) or float32 pixels in [0, 1] (read), and resize_pad.

Formats are recognised by their first bytes, not by the file name: DICOM (with or without the .dcm
extension), PNG (8/16-bit) and JPEG. 8-bit PNG/JPEG are taken as already windowed for display
(value / 255); 16-bit PNG holds raw detector values, so it gets the same percentile window as a
DICOM without a window.
"""

from __future__ import annotations

import os
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mammo_tui.data.dicom import decode_dicom, percentile_window, probe_dicom
from mammo_tui.data.records import MIN_IMAGE_SIDE, ImageInfo, ImageReadError

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def sniff_format(path: str) -> str:
    """DICOM | PNG | JPEG from the file's first bytes; raises ImageReadError for anything else."""
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


def _open_pil(path: str) -> Image.Image:
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise ImageReadError("unreadable", f"{path}: cannot read the image ({error})") from None


def probe(path: str) -> tuple[ImageInfo, str | None]:
    """Header facts plus the patient digest from DICOM (None otherwise); no pixel decoding."""
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
            return percentile_window(np.asarray(image, dtype=np.float32))
        if image.mode != "L":
            image = image.convert("L")
        return np.asarray(image, dtype=np.float32) / 255.0


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to float32 HxW in [0, 1] (dense tissue bright); raises ImageReadError."""
    path = os.fspath(path)
    try:
        return decode_dicom(path) if sniff_format(path) == "DICOM" else _read_pil(path)
    except (ImageReadError, MemoryError):
        raise
    except Exception as error:  # e.g. a malformed LUT: whatever it is, name the file
        raise ImageReadError("unreadable", f"{path}: cannot decode the image ({type(error).__name__}: "
                             f"{error})") from error


def resize_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Aspect-preserving resize so the longer side is `size`, then centre-pad with 0 (background).

    Nothing is cropped, so no tissue is lost; INTER_AREA averages when shrinking (no aliasing).
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image.astype(np.float32, copy=False), (new_w, new_h), interpolation=interpolation)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out
