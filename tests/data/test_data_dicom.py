"""DICOM decoding and header probing, on pydicom's real test files and on small synthetic files."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from mammo_tui.data.images import probe, probe_image, read_image, resize_pad
from mammo_tui.data.records import ImageReadError, patient_digest


def pydicom_file(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom test file {name} is missing"
    return path


def breast_phantom(rows: int = 64, columns: int = 48) -> np.ndarray:
    """12-bit image: background 100, fat ramp, a dense block at 3500."""
    image = np.full((rows, columns), 100, dtype=np.uint16)
    image[8:56, :36] = 1200 + np.arange(36, dtype=np.uint16) * 20
    image[20:40, 5:25] = 3500
    return image


# -- real files -------------------------------------------------------------------------------


def test_window_from_header_follows_the_dicom_linear_formula():
    # MR_small: WindowCenter 600, WindowWidth 1600, no rescale (PS3.3 C.11.2.1.2.1)
    raw = pydicom.dcmread(pydicom_file("MR_small.dcm")).pixel_array.astype(np.float64)
    expected = np.clip((raw - (600 - 0.5)) / (1600 - 1) + 0.5, 0.0, 1.0)
    decoded = read_image(pydicom_file("MR_small.dcm"))
    assert decoded.dtype == np.float32 and decoded.shape == (64, 64)
    np.testing.assert_allclose(decoded, expected, atol=1e-5)
    assert decoded.max() == 1.0  # values above the window saturate


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"])
def test_lossless_jpeg2000_and_rle_decode_to_the_uncompressed_image(name):
    reference = read_image(pydicom_file("MR_small.dcm"))
    info = probe_image(pydicom_file(name))
    assert info.transfer_syntax in ("JPEG 2000 Image Compression (Lossless Only)", "RLE Lossless")
    np.testing.assert_array_equal(read_image(pydicom_file(name)), reference)


def test_lossy_jpeg2000_file_decodes():
    image = read_image(pydicom_file("JPEG2000.dcm"))
    assert image.shape == (1024, 256)
    assert 0.0 <= image.min() < image.max() <= 1.0


def test_monochrome1_is_inverted_relative_to_the_raw_array():
    path = pydicom_file("6154")  # CR, MONOCHROME1, 12-bit, window 1600/2800, rescale intercept 200
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    raw = ds.pixel_array.astype(np.float64)
    decoded = read_image(path).astype(np.float64)
    # the brightest stored value is the darkest displayed pixel, and the mapping is a falling line
    assert decoded.ravel()[raw.argmax()] == decoded.min()
    assert decoded.ravel()[raw.argmin()] == decoded.max()
    assert np.corrcoef(raw.ravel(), decoded.ravel())[0, 1] < -0.999
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    value = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = 1.0 - np.clip((value - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(decoded, expected, atol=1e-5)


def test_rgb_is_converted_to_grayscale():
    path = pydicom_file("SC_rgb_rle.dcm")
    rgb = pydicom.dcmread(path).pixel_array.astype(np.float64)
    expected = (rgb @ [0.299, 0.587, 0.114]) / 255.0
    decoded = read_image(path)
    assert decoded.shape == (100, 100)
    np.testing.assert_allclose(decoded, expected, atol=1e-4)


def test_multiframe_is_refused_at_probe_and_decode_time():
    # frame 1 of a multi-frame object (e.g. a tomosynthesis volume) is not the mammogram
    path = pydicom_file("SC_rgb_rle_2frame.dcm")
    for check in (probe, read_image):
        with pytest.raises(ImageReadError) as caught:
            check(path)
        assert caught.value.kind == "multi_frame"
        assert path in caught.value.message and "2 frames" in caught.value.message


def test_truncated_uncompressed_file_is_caught_by_the_header_probe():
    with pytest.raises(ImageReadError) as caught:
        probe(pydicom_file("MR_truncated.dcm"))
    assert caught.value.kind == "truncated"
    assert "8130 of 8192 bytes" in caught.value.message
    with pytest.raises(ImageReadError) as decoded:
        read_image(pydicom_file("MR_truncated.dcm"))
    assert decoded.value.kind == "truncated"


def test_dicom_without_pixel_data_is_no_pixels():
    with pytest.raises(ImageReadError) as caught:
        probe(pydicom_file("rtplan.dcm"))
    assert caught.value.kind == "no_pixels"
    assert "rtplan.dcm" in caught.value.message


def test_jpeg_ls_without_its_plugin_names_the_package_to_install():
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(ImageReadError) as caught:
        probe(pydicom_file("MR_small_jpeg_ls_lossless.dcm"))
    assert caught.value.kind == "unsupported_compression"
    assert "JPEG-LS Lossless" in caught.value.message
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in caught.value.message
    with pytest.raises(ImageReadError) as decoded:
        read_image(pydicom_file("MR_small_jpeg_ls_lossless.dcm"))
    assert decoded.value.kind == "unsupported_compression"


def test_tiny_image_is_refused_at_probe_time():
    with pytest.raises(ImageReadError) as caught:
        probe(pydicom_file("rtdose_1frame.dcm"))  # 10x10
    assert caught.value.kind == "tiny_image"
    assert "10x10" in caught.value.message


def test_probe_reports_header_facts_and_only_a_patient_digest():
    info, patient = probe(pydicom_file("JPEG2000.dcm"))
    assert (info.width, info.height, info.format) == (256, 1024, "DICOM")
    assert info.transfer_syntax == "JPEG 2000 Image Compression"
    assert (info.photometric, info.modality, info.bits_stored) == ("MONOCHROME2", "NM", 16)
    raw_id = str(pydicom.dcmread(pydicom_file("JPEG2000.dcm"), stop_before_pixels=True).PatientID)
    assert patient == patient_digest(raw_id) and raw_id not in patient


# -- synthetic files --------------------------------------------------------------------------


@pytest.mark.parametrize("window", [None, ("2000", "2400")])
def test_monochrome1_file_decodes_like_the_same_picture_stored_as_monochrome2(tmp_path, make_dicom, window):
    picture = breast_phantom()
    extra = {} if window is None else {"WindowCenter": window[0], "WindowWidth": window[1]}
    mono2 = make_dicom(tmp_path / "m2.dcm", picture, "MONOCHROME2", **extra)
    inverted_extra = {} if window is None else {"WindowCenter": str(4095 - float(window[0])), "WindowWidth": window[1]}
    mono1 = make_dicom(tmp_path / "m1.dcm", 4095 - picture, "MONOCHROME1", **inverted_extra)
    expected = read_image(mono2)
    np.testing.assert_allclose(read_image(mono1), expected, atol=2e-3)
    assert expected[0, 47] == 0.0  # background is black
    assert expected[30, 10] == 1.0  # dense tissue is white


def test_percentile_window_uses_tissue_not_background(tmp_path, make_dicom):
    picture = breast_phantom()
    image = read_image(make_dicom(tmp_path / "p.dcm", picture))
    # background (most of the right side) is black, fat is grey, dense tissue white
    assert image[0, 40] == 0.0
    fat = image[10, 0:36]
    assert 0.0 <= fat.min() < 0.1 and 0.25 < fat.max() < 0.95
    assert np.all(np.diff(fat) >= 0)  # the fat ramp keeps its order
    assert image[30, 10] == 1.0


def test_16_bit_detail_survives_until_normalisation(tmp_path, make_dicom):
    # 4096 distinct 12-bit values inside the tissue range: an 8-bit path would collapse them to 256
    picture = np.full((64, 64), 50, dtype=np.uint16)
    picture[:, :] = np.arange(4096, dtype=np.uint16).reshape(64, 64)
    image = read_image(make_dicom(tmp_path / "ramp.dcm", picture, WindowCenter="2048", WindowWidth="4096"))
    assert image.dtype == np.float32
    assert len(np.unique(image)) > 4000


def test_jpeg2000_written_here_round_trips(tmp_path, make_dicom):
    picture = breast_phantom()
    plain = read_image(make_dicom(tmp_path / "plain.dcm", picture))
    compressed_path = make_dicom(tmp_path / "j2k.dcm", picture, transfer_syntax=JPEG2000Lossless)
    assert probe_image(compressed_path).transfer_syntax.startswith("JPEG 2000")
    np.testing.assert_array_equal(read_image(compressed_path), plain)
    rle_path = make_dicom(tmp_path / "rle.dcm", picture, transfer_syntax=RLELossless)
    np.testing.assert_array_equal(read_image(rle_path), plain)


def test_uncompressed_file_cut_short_is_truncated(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "cut.dcm", breast_phantom())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ImageReadError) as caught:
        probe(str(path))
    assert caught.value.kind == "truncated"
    assert str(path) in caught.value.message


def test_non_dicom_bytes_named_dcm_are_unreadable(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"this is not a dicom file" * 20)
    with pytest.raises(ImageReadError) as caught:
        probe(str(path))
    assert caught.value.kind == "unreadable"
    assert "not a DICOM file" in caught.value.message


# -- resize_pad -------------------------------------------------------------------------------


def test_resize_pad_keeps_aspect_and_pads_with_background():
    image = np.ones((200, 100), dtype=np.float32)
    out = resize_pad(image, 64)
    assert out.shape == (64, 64) and out.dtype == np.float32
    columns_with_tissue = np.flatnonzero(out.sum(axis=0))
    assert len(columns_with_tissue) == 32  # 100/200 of 64, centred
    assert columns_with_tissue[0] == 16
    assert np.all(out[:, :16] == 0) and np.all(out[:, 48:] == 0)
    np.testing.assert_allclose(out[:, 16:48], 1.0, atol=1e-6)


def test_resize_pad_does_not_crop_a_wide_image():
    image = np.zeros((30, 90), dtype=np.float32)
    image[:, 0] = 1.0  # tissue touching the left edge must survive
    image[:, -1] = 1.0
    out = resize_pad(image, 48)
    assert out.shape == (48, 48)
    rows = np.flatnonzero(out.sum(axis=1))
    assert (rows[0], rows[-1]) == (16, 31)
    assert out[20, 0] > 0 and out[20, 47] > 0


def test_jpeg2000_file_cut_short_is_truncated_not_no_pixels(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "j2k.dcm", breast_phantom(), transfer_syntax=JPEG2000Lossless)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(ImageReadError) as caught:
        probe(str(path))
    assert caught.value.kind == "truncated"


# -- bad pixels and odd headers: each a named problem, never a crash or NaN pixels ----------------


def expect_problem(check, path, kind: str) -> str:
    with pytest.raises(ImageReadError) as caught:
        check(str(path))
    assert caught.value.kind == kind, caught.value.message
    assert str(path) in caught.value.message
    return caught.value.message


def with_transfer_syntax(path, uid: str):
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = uid
    ds.save_as(path)
    return path


@pytest.mark.parametrize("attributes", [
    {"RescaleSlope": "nan", "RescaleIntercept": "0"},
    {"RescaleSlope": "1", "RescaleIntercept": "inf"},
    {"RescaleSlope": "-inf", "RescaleIntercept": "0"},
])
def test_non_finite_rescale_is_not_finite_in_probe_and_decode(tmp_path, make_dicom, attributes):
    path = make_dicom(tmp_path / "rescale.dcm", breast_phantom(), **attributes)
    for check in (probe, read_image):
        assert "Rescale" in expect_problem(check, path, "not_finite")


def test_decoded_pixels_that_are_not_finite_are_refused(tmp_path, make_dicom, monkeypatch):
    # whatever produced them (a VOI LUT, a plugin, float data): NaN never leaves read_image
    from mammo_tui.data import images

    path = make_dicom(tmp_path / "ok.dcm", breast_phantom())
    broken = read_image(path)
    broken[3, 4] = np.nan
    monkeypatch.setattr(images, "read_dicom", lambda _: (broken, None))
    assert "1 of" in expect_problem(read_image, path, "not_finite")


def test_float_pixel_data_is_refused_by_decode_like_by_probe(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 32
    values = np.full((32, 32), 0.5, dtype=np.float32)
    values[3, 3] = np.nan
    ds.FloatPixelData = values.tobytes()
    path = tmp_path / "float.dcm"
    ds.save_as(path, enforce_file_format=True)
    expect_problem(probe, path, "no_pixels")
    expect_problem(read_image, path, "no_pixels")


def test_unknown_transfer_syntax_is_a_named_problem(tmp_path, make_dicom):
    path = with_transfer_syntax(make_dicom(tmp_path / "odd.dcm", breast_phantom()), "1.2.3.4.5.6.7")
    for check in (probe, read_image):
        assert "1.2.3.4.5.6.7" in expect_problem(check, path, "unsupported_compression")


def test_unknown_photometric_interpretation_is_named_at_probe_time(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "odd.dcm", breast_phantom(), photometric="WEIRD")
    for check in (probe, read_image):
        assert "WEIRD" in expect_problem(check, path, "unreadable")


def test_garbage_compressed_streams_fail_at_decode_with_the_file_named(tmp_path, make_dicom):
    from pydicom.encaps import encapsulate

    for name, uid, stream in [("j2k.dcm", "1.2.840.10008.1.2.4.90", b"\xff\x4f\xff\x51"),
                              ("jpeg12.dcm", "1.2.840.10008.1.2.4.51", b"\xff\xd8\xff\xc1")]:
        path = make_dicom(tmp_path / name, breast_phantom(), pixel_data=False)
        ds = pydicom.dcmread(path)
        ds.PixelData = encapsulate([stream + bytes(range(256)) * 2])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid
        ds.save_as(path)
        message = expect_problem(read_image, path, "unreadable")
        if get_decoder(uid).missing_dependencies:  # e.g. Pillow reads no 12-bit JPEG: name what does
            assert "another decoder may read it: pip install" in message


def test_huge_image_in_the_header_is_too_large_before_any_decode(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "huge.dcm", breast_phantom(), Rows=20000, Columns=20000)
    for check in (probe, read_image):
        assert "400,000,000 pixels" in expect_problem(check, path, "too_large")


def test_an_exception_nobody_expected_from_a_decoder_names_the_file(tmp_path, make_dicom, monkeypatch):
    from mammo_tui.data import images

    class PluginBug(Exception):
        pass

    def explode(_):
        raise PluginBug("surprise")

    path = make_dicom(tmp_path / "ok.dcm", breast_phantom())
    monkeypatch.setattr(images, "read_dicom", explode)
    assert "PluginBug: surprise" in expect_problem(read_image, path, "unreadable")
    monkeypatch.setattr(images, "read_dicom", lambda _: (_ for _ in ()).throw(MemoryError()))
    expect_problem(read_image, path, "too_large")


# -- PNG / JPEG -------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def handmade_png(path, width: int, height: int, idat: bytes):
    import struct

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat)
                     + png_chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width, height", [(20000, 20000), (10000, 10000)])  # over 2x / over 1x PIL's limit
def test_png_over_the_decompression_bomb_limit_is_too_large(tmp_path, width, height):
    import zlib

    path = handmade_png(tmp_path / "bomb.png", width, height, zlib.compress(bytes(1000)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not leak to the console
        for check in (probe, read_image):
            assert f"{width * height:,} pixels" in expect_problem(check, path, "too_large")


def test_png_with_garbage_pixel_data_or_cut_short_is_unreadable(tmp_path):
    from PIL import Image

    garbage = handmade_png(tmp_path / "idat.png", 64, 64, bytes(range(256)) * 2)
    expect_problem(read_image, garbage, "unreadable")
    good = tmp_path / "good.png"
    Image.fromarray(breast_phantom().astype(np.uint8)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:-40])
    expect_problem(read_image, cut, "unreadable")


def test_animated_png_is_multi_frame(tmp_path):
    from PIL import Image

    frames = [Image.fromarray(np.full((32, 32), v, dtype=np.uint8)) for v in (10, 200)]
    path = tmp_path / "anim.png"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    for check in (probe, read_image):
        assert "2 frames" in expect_problem(check, path, "multi_frame")


@pytest.mark.parametrize("center, width", [("nan", "nan"), ("2000", "inf"), ("inf", "400")])
def test_a_non_finite_window_is_ignored_and_the_pixels_stay_finite(tmp_path, make_dicom, center, width):
    path = make_dicom(tmp_path / "w.dcm", breast_phantom(), WindowCenter=center, WindowWidth=width)
    image = read_image(path)
    assert np.isfinite(image).all()
    np.testing.assert_array_equal(image, read_image(make_dicom(tmp_path / "plain.dcm", breast_phantom())))


@pytest.mark.parametrize("attributes", [
    {"RescaleSlope": "0.5", "RescaleIntercept": "-100"},
    {"RescaleSlope": "2"},
    {"RescaleIntercept": "1024"},
    {},
])
def test_the_rescale_is_pydicoms_in_float32_without_a_float64_copy(make_dicom, tmp_path, attributes):
    # a full-field image is ~8.5 Mpx: a float64 copy of it is ~70 MB per decode, per worker
    from pydicom.pixels import apply_modality_lut

    from mammo_tui.data.dicom import modality_values

    rng = np.random.default_rng(0)
    ds = pydicom.dcmread(make_dicom(tmp_path / "r.dcm", rng.integers(0, 4096, (64, 48)), **attributes))
    pixels = ds.pixel_array
    values = modality_values(pixels, ds)
    assert values.dtype in (np.float32, pixels.dtype)
    np.testing.assert_allclose(values, apply_modality_lut(pixels, ds), rtol=1e-6)


@pytest.mark.parametrize("window", [
    {"WindowCenter": "2000", "WindowWidth": "1500"},
    {"WindowCenter": "1800", "WindowWidth": "1200", "VOILUTFunction": "SIGMOID"},
])
def test_the_voi_window_in_row_bands_is_pydicoms(make_dicom, tmp_path, monkeypatch, window):
    # bands bound pydicom's float64 temporaries; the result must be the whole-image window
    from pydicom.pixels import apply_voi_lut

    from mammo_tui.data import dicom

    monkeypatch.setattr(dicom, "VOI_BAND_ROWS", 7)  # bands that do not divide the 64 rows
    rng = np.random.default_rng(1)
    ds = pydicom.dcmread(make_dicom(tmp_path / "w.dcm", rng.integers(0, 4096, (64, 48)), **window))
    values = ds.pixel_array.astype(np.float32)
    whole = apply_voi_lut(values, ds, index=0)
    lo, hi = sorted(float(v) for v in apply_voi_lut(np.array([-1e12, 1e12]), ds, index=0))
    expected = np.clip((whole - lo) / (hi - lo), 0, 1)
    got = dicom._voi_window(values, ds)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("attributes", [
    {"WindowCenter": "2000", "WindowWidth": "1500"},
    {"RescaleSlope": "1", "RescaleIntercept": "0"},
    {"RescaleSlope": "1", "RescaleIntercept": "0", "WindowCenter": "2000", "WindowWidth": "1500"},
])
def test_decoding_holds_no_full_resolution_8_byte_copy(make_dicom, tmp_path, attributes):
    # peak memory of one decode, per pixel: the file's 2 bytes, the decoded 2, the float32 result 4
    # and one float32 working copy; a float64 copy (pydicom's rescale / VOI) alone would add 8
    import tracemalloc

    from mammo_tui.data.images import read_image

    path = make_dicom(tmp_path / "big.dcm", np.random.default_rng(0).integers(0, 4096, (2048, 2048)), **attributes)
    read_image(path)  # imports and caches warm
    tracemalloc.start()
    try:
        read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / (2048 * 2048) < 15, f"{peak / 2048 ** 2:.1f} bytes per pixel"
