"""DICOM: header probing (no pixel decode) and decoding to a float32 image in [0, 1].

Decoding follows the display pipeline a radiologist's viewer uses: Modality LUT / rescale, then the
VOI LUT or window stored by the modality, else a robust percentile window computed on the breast
(not the background); MONOCHROME1 is inverted so that dense tissue is always bright.
Only technical header fields are read; PatientID leaves this module as a digest, never raw.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder

# Header values that break a VR's rules (VinDr-Mammo's UIDs are md5 hex strings) are read as they
# are: validating them printed one warning per tag per image, thousands of lines for a real set.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

from mammo_tui.data.records import MIN_IMAGE_SIDE, PLACEHOLDER_IDS, ImageInfo, ImageReadError, patient_digest

# Percentiles of breast-tissue intensities mapped to 0 and 1 when the file has no window.
WINDOW_PERCENTILES = (1.0, 99.0)
TISSUE_THRESHOLD = 0.1  # fraction of the background..bright range below which a pixel is background
WINDOW_SAMPLE_SIDE = 1024  # percentile_window reads a grid of about this many px a side
VOI_BAND_ROWS = 256  # rows per pydicom VOI call: bounds its float64 temporaries
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_DATA_TAG_LE, _PIXEL_DATA_TAG_BE = b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"
# Luminance weights (ITU-R BT.601), the same ones PIL uses for convert("L").
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# pydicom also logs what it warns about; without a handler Python would print it on stderr (and
# over the TUI). Applications that configure logging still receive the records.
logging.getLogger("pydicom").addHandler(logging.NullHandler())
# pydicom names its decoder plugins; pip knows some of them by another name.
_PIP_NAMES = {"gdcm": "python-gdcm"}
# Photometric Interpretations the decoder handles (pydicom converts the YBR family to RGB).
_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
                           "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT"})
# PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, ~89.5 Mpx), applied to DICOM too: a
# full-field mammogram has ~14 Mpx, so a header asking for more is damaged or not a mammogram,
# and decoding it could exhaust memory.
MAX_PIXELS = 89_478_485


def require_pixel_count(path: str, width: int, height: int, limit: int = MAX_PIXELS) -> None:
    """Raise ImageReadError(too_large) for an image over the decompression-bomb limit."""
    pixels = width * height
    if pixels > limit:
        raise ImageReadError("too_large", f"{path}: image is {width}x{height} px ({pixels:,} pixels), over the "
                             f"{limit:,}-pixel safety limit (a mammogram has about 14 million); it is damaged "
                             "or not a mammogram: downscale or remove it")


def require_finite(values: np.ndarray, path: str, stage: str = "after decoding") -> None:
    """Raise ImageReadError(not_finite) when any pixel is NaN or infinite (training would learn NaN)."""
    if values.dtype.kind not in "fc":
        return  # integers are always finite
    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if bad:
        raise ImageReadError("not_finite", f"{path}: {bad:,} of {values.size:,} pixels are NaN or infinite "
                             f"{stage}; the file's pixel data or its rescale / VOI LUT values are broken: "
                             "re-export the image or remove it")


def _read(path: str, **kwargs) -> pydicom.Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about harmless VR quirks
            return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError:
        raise ImageReadError("unreadable", f"{path}: not a DICOM file (no 'DICM' marker); "
                             "remove it or convert it to DICOM/PNG") from None
    except Exception as error:  # pydicom raises many types for damaged files
        raise ImageReadError("unreadable", f"{path}: cannot read the DICOM header ({error})") from None


def _has_pixel_data_tag(path: str) -> bool:
    """Whether the bytes of the (7FE0,0010) Pixel Data tag occur in the file.

    pydicom silently drops an element cut short by the end of the file (e.g. encapsulated JPEG 2000
    data), so a truncated image looks like a file without pixels; the tag's bytes tell them apart.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    return _PIXEL_DATA_TAG_LE in data or _PIXEL_DATA_TAG_BE in data


def _int(value: object, default: int = 0) -> int:
    try:
        return int(value)  # IS values may be strings such as "1A"
    except (TypeError, ValueError):
        return default


def install_hint(transfer_syntax: pydicom.uid.UID) -> str:
    """`pip install ...` options for a compressed transfer syntax, derived from what pydicom reports."""
    try:
        missing = get_decoder(transfer_syntax).missing_dependencies
    except NotImplementedError:
        return "no Python decoder exists for it; convert the files to an uncompressed or JPEG 2000 syntax"
    options = []
    for line in missing:  # e.g. "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"
        plugin, _, requirements = line.partition(" - requires ")
        names = [re.split(r"[<>=!~ ]", r.strip())[0] for r in requirements.split(" and ")]
        names = [_PIP_NAMES.get(n, n) for n in names if n and n != "numpy"]
        if plugin.strip() == "pylibjpeg":  # the pylibjpeg host ships with mammo-tui: list it first
            options.insert(0, names)
        elif names:
            options.append(names)
    if not options:
        return "install a pydicom decoder plugin for it"
    first, *others = ["pip install " + " ".join(names) for names in options]
    return first + ("" if not others else " (or: " + "; ".join(others) + ")")


def _require_decoder(path: str, transfer_syntax: pydicom.uid.UID) -> None:
    if not transfer_syntax.is_transfer_syntax:  # pydicom cannot tell how its pixels are encoded
        raise ImageReadError("unsupported_compression", f"{path}: unknown Transfer Syntax UID "
                             f"{str(transfer_syntax)!r}, so the pixels cannot be decoded; re-export the file "
                             "uncompressed (Explicit VR Little Endian) or as JPEG 2000")
    if not transfer_syntax.is_compressed:
        return
    try:
        available = get_decoder(transfer_syntax).is_available
    except NotImplementedError:  # private or unknown syntax
        available = False
    if not available:
        raise ImageReadError("unsupported_compression", f"{path}: pixel data is compressed with "
                             f"{transfer_syntax.name}; {install_hint(transfer_syntax)}")


def _other_decoders(transfer_syntax: pydicom.uid.UID) -> str:
    """'; if the file is intact, ...: pip install ...' when pydicom knows decoders not installed here
    (e.g. Pillow cannot read 12-bit JPEG, pylibjpeg-libjpeg can)."""
    if not transfer_syntax.is_compressed:
        return ""
    try:
        missing = get_decoder(transfer_syntax).missing_dependencies
    except NotImplementedError:
        return ""
    return f"; if the file is intact, another decoder may read it: {install_hint(transfer_syntax)}" if missing else ""


def _check_pixel_length(ds: pydicom.Dataset, path: str, transfer_syntax: pydicom.uid.UID) -> None:
    """Catch files cut short inside uncompressed pixel data without reading the pixels."""
    raw = ds.get_item(0x7FE00010, keep_deferred=True)  # do not read the pixels
    length = getattr(raw, "length", None)
    if length is None or length == _UNDEFINED_LENGTH or transfer_syntax.is_compressed:
        return  # encapsulated data: checked when decoding
    frames = _frames(ds)
    bits = _int(ds.get("BitsAllocated", 0))
    pixels = _int(ds.Rows) * _int(ds.Columns) * _int(ds.get("SamplesPerPixel", 1), 1) * frames
    expected = (pixels * bits + 7) // 8
    if length < expected:
        raise ImageReadError("truncated", f"{path}: pixel data has {length} bytes, the header needs "
                             f"{expected}; the file is damaged (copy it again from the source)")
    value_tell = getattr(raw, "value_tell", None)
    if value_tell is not None and not transfer_syntax.is_deflated:
        available = os.path.getsize(path) - value_tell
        if available < expected:
            raise ImageReadError("truncated", f"{path}: file ends after {max(available, 0)} of {expected} "
                                 "bytes of pixel data; the file is truncated (copy it again from the source)")


def _frames(ds: pydicom.Dataset) -> int:
    return max(1, _int(ds.get("NumberOfFrames", 1), 1))


def _finite_number(ds: pydicom.Dataset, keyword: str, path: str) -> None:
    """A rescale value must be a finite number, or every pixel becomes NaN / infinite."""
    if keyword not in ds:
        return
    raw = ds[keyword].value
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ImageReadError("unreadable", f"{path}: {keyword} {raw!r} is not a number; re-export the image "
                             "from the PACS") from None
    if not math.isfinite(value):
        raise ImageReadError("not_finite", f"{path}: {keyword} is {raw!r}, so every pixel would be NaN or "
                             "infinite; the header is damaged: re-export the image from the PACS")


def _check_header(ds: pydicom.Dataset, path: str) -> tuple[pydicom.uid.UID, int, int]:
    """What probe and decode both require of the header; (transfer syntax, rows, columns)."""
    rows, columns = _int(ds.get("Rows", 0)), _int(ds.get("Columns", 0))
    if rows <= 0 or columns <= 0:
        raise ImageReadError("no_pixels", f"{path}: DICOM header gives no image size (Rows/Columns)")
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if transfer_syntax is None:
        raise ImageReadError("unreadable", f"{path}: DICOM file meta has no Transfer Syntax UID, so the "
                             "pixels cannot be decoded; re-export the file from the PACS")
    _require_decoder(path, transfer_syntax)
    frames = _frames(ds)
    if frames > 1:  # e.g. tomosynthesis: frame 1 is one slice, not the 2-D mammogram
        raise ImageReadError("multi_frame", f"{path}: DICOM file has {frames} frames (e.g. a tomosynthesis "
                             "volume); only single-frame 2-D mammograms are supported: use the 2-D (or "
                             "synthesised 2-D) view instead")
    require_pixel_count(path, columns, rows)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in _PHOTOMETRICS:
        raise ImageReadError("unreadable", f"{path}: Photometric Interpretation {photometric!r} is not one "
                             "this decoder knows; re-export the image as MONOCHROME2")
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        _finite_number(ds, keyword, path)
    return transfer_syntax, rows, columns


def probe_dicom(path: str) -> tuple[ImageInfo, str | None]:
    """Header facts and the patient digest (None when the file has no PatientID).

    Raises ImageReadError(kind) with kind unreadable | no_pixels | truncated |
    unsupported_compression | tiny_image | multi_frame | too_large | not_finite.
    """
    # defer_size keeps the pixel data on disk while still telling us its declared length and offset
    ds = _read(path, defer_size=1024)
    if "PixelData" not in ds:
        if _has_pixel_data_tag(path):
            raise ImageReadError("truncated", f"{path}: the file ends inside its pixel data; it is truncated "
                                 "(copy it again from the source)")
        raise _no_pixels(ds, path)
    transfer_syntax, rows, columns = _check_header(ds, path)
    _check_pixel_length(ds, path, transfer_syntax)
    if min(rows, columns) < MIN_IMAGE_SIDE:
        raise ImageReadError("tiny_image", f"{path}: image is {columns}x{rows} px, smaller than "
                             f"{MIN_IMAGE_SIDE} px on a side")
    info = ImageInfo(
        width=columns,
        height=rows,
        format="DICOM",
        photometric=str(ds.get("PhotometricInterpretation", "")),
        transfer_syntax=transfer_syntax.name,
        modality=str(ds.get("Modality", "")),
        bits_stored=_int(ds.get("BitsStored", 0)),
        frames=_frames(ds),
        view=_view_text(ds),
        laterality=str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").strip()[:1].upper(),
        study=_study_digest(ds),
    )
    patient_id = str(ds.get("PatientID", "") or "").strip()
    # `removed`, `anonymous` ...: what de-identification leaves is no patient
    usable = patient_id and patient_id.lower() not in PLACEHOLDER_IDS
    return info, (patient_digest(patient_id) if usable else None)


def _view_text(ds: pydicom.Dataset) -> str:
    """ViewPosition, unless the header says the image is a synthesized 2-D view (C-View: ImageType
    GENERATED_2D, the series description) or a spot-compression / magnification view (the view
    modifier codes): the fingerprint counts those apart."""
    from mammo_tui.data.listing import view_category

    position = str(ds.get("ViewPosition", "") or "").strip()
    words = [str(ds.get("SeriesDescription", "") or "")]
    image_type = ds.get("ImageType", None) or []
    words += [str(v) for v in ([image_type] if isinstance(image_type, str) else image_type)]
    for view in ds.get("ViewCodeSequence", None) or []:
        words += [str(m.get("CodeMeaning", "")) for m in view.get("ViewModifierCodeSequence", None) or []]
    special = view_category(" ".join(words).replace("GENERATED_2D", "SYNTHESIZED"))
    return special if special in ("synthesized", "spot", "magnification") else position


def _study_digest(ds: pydicom.Dataset) -> str:
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    return patient_digest(f"study:{study}") if study else ""


def tissue_threshold(values: np.ndarray) -> float:
    """Intensity where breast tissue starts: a tenth of the way from background to the bright end.

    Background is the darkest level (0.5th percentile; dark once MONOCHROME1 is inverted), the bright
    end the 99th percentile. Otsu is not used: on dense breasts it splits fat from fibroglandular
    tissue instead of breast from background, and the fat would then vanish into the background.
    """
    sample = values[:: max(1, values.shape[0] // 512), :: max(1, values.shape[1] // 512)]  # speed
    background, bright = (float(v) for v in np.percentile(sample, (0.5, 99.0)))
    return background + TISSUE_THRESHOLD * (bright - background)


def percentile_window(values: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> np.ndarray:
    """Map the 1st..99th percentile of tissue intensities to 0..1; background falls to 0."""
    values = values.astype(np.float32, copy=False)
    # the percentiles of a regular grid of the pixels: the same window (to well under one grey level
    # in 256), ~9x less to sort on a full-field image; images up to 2 * WINDOW_SAMPLE_SIDE use all
    grid = values[:: max(1, values.shape[0] // WINDOW_SAMPLE_SIDE), :: max(1, values.shape[1] // WINDOW_SAMPLE_SIDE)]
    tissue = grid[grid > tissue_threshold(values)]
    sample = tissue if tissue.size >= 0.01 * grid.size else grid.ravel()
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if hi <= lo:  # flat tissue (or a binary image): fall back to the full range
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, np.float32)
    out = np.subtract(values, np.float32(lo), dtype=np.float32)  # the one full-size result array
    out *= np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def _voi_window(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray | None:
    """Apply the file's VOI LUT / window and scale its output range to [0, 1]; None if unusable."""
    lut = "VOILUTSequence" in ds
    if lut:
        probe = np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max], dtype=np.int64)
    else:
        probe = np.array([-1e12, 1e12])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the output range of the window or LUT: what the extremes of any input map to
        lo, hi = sorted(float(v) for v in apply_voi_lut(probe, ds, index=0))
        if not hi > lo or not np.isfinite([lo, hi]).all():
            return None
        # pydicom works in float64 (int64 for a LUT): a band of rows at a time, into float32, so a
        # full-field image never has a full-resolution 8-byte copy (~70 MB per worker)
        windowed = np.empty(values.shape, np.float32)
        for top in range(0, values.shape[0], VOI_BAND_ROWS):
            band = values[top : top + VOI_BAND_ROWS]
            if lut:  # LUT indexing needs integers; rescaled values are integer-valued in practice
                band = np.rint(band).astype(np.int64)
            windowed[top : top + VOI_BAND_ROWS] = apply_voi_lut(band, ds, index=0)
    windowed -= np.float32(lo)
    windowed *= np.float32(1.0 / (hi - lo))
    return np.clip(windowed, 0.0, 1.0, out=windowed)


def _has_voi(ds: pydicom.Dataset) -> bool:
    if "VOILUTSequence" in ds:
        return True
    widths = ds.get("WindowWidth")
    if widths is None or "WindowCenter" not in ds:
        return False
    first = widths[0] if isinstance(widths, pydicom.multival.MultiValue) else widths
    try:
        return float(first) > 1  # a width of 0/1 is a broken window, not a display choice
    except (TypeError, ValueError):
        return False


def _to_gray(rgb: np.ndarray, max_value: float) -> np.ndarray:
    return np.clip(rgb[..., :3].astype(np.float32) @ _LUMA / max_value, 0.0, 1.0)


def _no_pixels(ds: pydicom.Dataset, path: str) -> ImageReadError:
    other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
    detail = f"it has {other[0]}, which is not supported" if other else "it is not an image (e.g. a report)"
    return ImageReadError("no_pixels", f"{path}: DICOM file without pixel data; {detail}")


# Header values that may name the breast, most specific first (descriptions are free text).
LATERALITY_KEYWORDS = ("ImageLaterality", "Laterality", "SeriesDescription", "ProtocolName")
_SIDE_WORDS = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}
_VIEW_PREFIX = re.compile(r"^(L|R)(CC|MLO|ML|LM|LMO|XCCL|XCCM|FB|SIO|AT|CV)$")


def laterality_from_text(*texts: object) -> str | None:
    """'L' | 'R' from header values such as 'L', 'RIGHT', 'L-CC', 'RMLO', 'Left MLO'; None if unsure.

    The first value that names exactly one side wins (ImageLaterality before descriptions).
    """
    for text in texts:
        if text is None:
            continue
        tokens = [t for t in re.split(r"[^A-Z]+", str(text).upper()) if t]
        sides = {_SIDE_WORDS[t] for t in tokens if t in _SIDE_WORDS}
        sides |= {m.group(1) for t in tokens if (m := _VIEW_PREFIX.match(t))}
        if len(sides) == 1:
            return sides.pop()
    return None


def header_laterality(ds: pydicom.Dataset) -> str | None:
    """'L' | 'R' from ImageLaterality, Laterality, or the series description / protocol name
    (e.g. 'R MLO'); None when none names exactly one side."""
    return laterality_from_text(*(ds.get(keyword) for keyword in LATERALITY_KEYWORDS))


def decode_dicom(path: str) -> np.ndarray:
    """Decode a single-frame DICOM file to float32 HxW in [0, 1], dense tissue bright.

    Raises ImageReadError for anything the header probe refuses, and for pixels that cannot be
    decoded; the caller (images.read_image) checks the result is finite.
    """
    return read_dicom(path)[0]


def read_dicom(path: str) -> tuple[np.ndarray, str | None]:
    """decode_dicom's image and the header's laterality ('L' | 'R' | None), from one read of the file."""
    ds = _read(path)
    return _decode(ds, path), header_laterality(ds)


def modality_values(pixels: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """The Modality LUT / rescale. A linear rescale is done in float32: pydicom's
    apply_modality_lut makes a full-resolution float64 copy (~70 MB for one full-field image);
    a Modality LUT Sequence (rare) goes through pydicom. Without either, the stored values."""
    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(pixels, ds)
    if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:  # pydicom's rule: both, or none
        return pixels
    values = pixels.astype(np.float32)
    values *= np.float32(float(ds.RescaleSlope))
    values += np.float32(float(ds.RescaleIntercept))
    return values


def _decode(ds: pydicom.Dataset, path: str) -> np.ndarray:
    if "PixelData" not in ds:
        raise _no_pixels(ds, path)
    transfer_syntax, _, _ = _check_header(ds, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except Exception as error:  # whatever a decoder plugin raises: name the file
        kind = "truncated" if "less than expected" in str(error) else "unreadable"
        detail = " ".join(str(error).split()) or type(error).__name__  # plugins list their errors on lines
        raise ImageReadError(kind, f"{path}: cannot decode the pixel data ({detail})"
                             f"{_other_decoders(transfer_syntax)}") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    bits = _int(ds.get("BitsStored", 8), 8)
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        return _to_gray(rgb, float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "iu" else 1.0)
    if pixels.ndim == 3:  # RGB (pydicom converts YBR to RGB by default)
        return _to_gray(pixels, float(2**bits - 1))
    values = modality_values(pixels, ds)
    require_finite(values, path, "after its Modality LUT / rescale")  # a window could hide them
    inverted = photometric == "MONOCHROME1"
    if _has_voi(ds):
        windowed = _voi_window(values, ds)
        if windowed is not None:
            return 1.0 - windowed if inverted else windowed
    # MONOCHROME1: high values are dark; negate so tissue is bright before finding it
    values = values.astype(np.float32, copy=True if values is pixels else False)  # ours to change in place
    if inverted:
        np.negative(values, out=values)
    return percentile_window(values)
