"""scan_dataset on the three inputs and on every kind of bad input."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammo_tui.data.demo import demo_class_counts
from mammo_tui.data.records import patient_digest
from mammo_tui.data.sources import DatasetSpec, scan_dataset
from mammo_tui.errors import DatasetError


def phantom(rows: int = 40, columns: int = 32, dense: int = 3000) -> np.ndarray:
    image = np.full((rows, columns), 80, dtype=np.uint16)
    image[5:35, :24] = 1500
    image[12:24, 4:16] = dense
    return image


def marked(pixels: np.ndarray, path: Path) -> np.ndarray:
    """The picture with a corner mark from the file's path: every file's bytes differ (unless a test
    copies one on purpose), so no test meets an unintended duplicate_content warning."""
    pixels = pixels.copy()
    pixels[0, :4] = list(zlib.crc32(str(path).encode()).to_bytes(4, "big"))
    return pixels


def write_png(path: Path, bits: int = 8, size: tuple[int, int] = (40, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = phantom(*size)
    if bits == 8:
        Image.fromarray(marked((pixels // 16).astype(np.uint8), path)).save(path)
    else:
        Image.fromarray(marked(pixels.astype(np.uint16), path)).save(path)
    return path


def write_jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(marked((phantom() // 16).astype(np.uint8), path)).convert("RGB").save(path, quality=95)
    return path


def write_csv(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def problems_of(report, kind: str):
    return [p for p in report.problems if p.kind == kind]


# -- reference layout ---------------------------------------------------------------------------


def test_reference_layout_uses_every_image_and_hashes_patient_ids(demo_dataset, demo_dataset_size):
    report = scan_dataset(DatasetSpec(csv=str(demo_dataset.csv), dicom_root=str(demo_dataset.dicom_root)))
    assert report.kind == "reference_csv"
    n_rows = len(demo_dataset.csv.read_text().strip().splitlines()) - 1
    n_files = len(list(demo_dataset.dicom_root.rglob("*.dcm")))
    assert report.rows_read == n_rows == report.rows_usable
    assert len(report.records) == n_files == sum(demo_class_counts(demo_dataset_size))
    assert report.class_counts() == demo_class_counts(demo_dataset_size)
    assert report.problems == []
    # groups are patients (some have two exams), never the raw PatientID
    groups = {r.group for r in report.records}
    assert all(g.startswith("pt-") for g in groups)
    assert len(groups) < n_rows
    dumped = json.dumps(report.to_dict()) + repr(report.records) + repr(report.image_infos)
    assert "DEMO-P" not in dumped
    # all images of one accession share one group
    by_row: dict[int, set[str]] = {}
    for record in report.records:
        by_row.setdefault(record.row, set()).add(record.group)
    assert all(len(g) == 1 for g in by_row.values())


def test_reference_layout_problems(tmp_path, make_dicom):
    root = tmp_path / "dicom"
    make_dicom(root / "ACC1" / "a.dcm", phantom(), patient_id="P1")
    make_dicom(root / "ACC1" / "b.dcm", phantom(), patient_id="P1")
    (root / "ACC1" / "notes.txt").write_text("not an image")
    make_dicom(root / "ACC2" / "a.dcm", phantom())  # no PatientID: the accession is the group
    (root / "EMPTY").mkdir()
    make_dicom(root / "ACC3" / "a.dcm", phantom(), patient_id="P3")
    make_dicom(root / "ACC4" / "a.dcm", phantom(), patient_id="P4")
    csv = write_csv(tmp_path / "labels.csv", [
        "AccessionNumber,Classification",
        "ACC1,A",  # 2
        "ACC2,2",  # 3
        "MISSING,C",  # 4
        "EMPTY,D",  # 5
        "ACC1,B",  # 6 duplicate with another label
        "../outside,A",  # 7
        "ACC3,E",  # 8
        "ACC4,d",  # 9
    ])
    report = scan_dataset(DatasetSpec(csv=str(csv), dicom_root=str(root)))
    assert report.rows_read == 8
    assert report.rows_usable == 3
    assert len(report.records) == 4  # ACC1 has two images
    assert report.class_counts() == [2, 1, 0, 1]
    counts = report.problem_counts()
    assert counts == {"missing_file": 2, "outside_root": 1, "duplicate_path": 1, "unknown_label": 1,
                      "empty_class": 1}
    missing = {p.row: p.message for p in problems_of(report, "missing_file")}
    assert "MISSING" in missing[4] and "has no image files" in missing[5]
    duplicate = problems_of(report, "duplicate_path")[0]
    assert duplicate.row == 6 and "row 2" in duplicate.message and "label A there, B here" in duplicate.message
    assert problems_of(report, "unknown_label")[0].row == 8 and "'E'" in problems_of(report, "unknown_label")[0].message
    assert "class C" in problems_of(report, "empty_class")[0].message
    groups = {Path(r.path).parent.name: r.group for r in report.records}
    assert groups == {"ACC1": patient_digest("P1"), "ACC2": "acc-ACC2", "ACC4": patient_digest("P4")}
    assert any("non-image files" in note for note in report.notes)


def test_reference_columns_without_dicom_root_say_so(demo_dataset):
    with pytest.raises(DatasetError, match="--dicom-root"):
        scan_dataset(DatasetSpec(csv=str(demo_dataset.csv)))


def test_reference_layout_missing_column_is_named(tmp_path):
    (tmp_path / "dicom").mkdir()
    csv = write_csv(tmp_path / "labels.csv", ["AccessionNumber,Density", "1,A"])
    with pytest.raises(DatasetError) as caught:
        scan_dataset(DatasetSpec(csv=str(csv), dicom_root=str(tmp_path / "dicom")))
    assert "missing column 'Classification'" in str(caught.value)
    assert "AccessionNumber, Density" in str(caught.value)


# -- generic CSV --------------------------------------------------------------------------------


def test_generic_csv_reads_dicom_png8_png16_and_jpeg(tmp_path, make_dicom):
    make_dicom(tmp_path / "img" / "a.dcm", phantom(), patient_id="PAT-7")
    write_png(tmp_path / "img" / "b.png", bits=8)
    write_png(tmp_path / "img" / "c16.png", bits=16)
    write_jpeg(tmp_path / "img" / "d.jpg")
    make_dicom(tmp_path / "img" / "no_extension", phantom(), patient_id="PAT-9")
    csv = write_csv(tmp_path / "data.csv", [
        "image_path,label,patient_id,view",
        "img/a.dcm,A,,L-CC",
        "img/b.png,b ,p2,R-CC",
        "img/c16.png,3,p2,",
        "img/d.jpg,4.0,p4,",
        "img/no_extension,1,,",
    ])
    report = scan_dataset(DatasetSpec(csv=str(csv)))
    assert report.kind == "generic_csv"
    assert report.problems == []
    assert [r.label for r in report.records] == [0, 1, 2, 3, 0]
    assert [r.row for r in report.records] == [2, 3, 4, 5, 6]
    assert report.records[0].view == "L-CC"
    groups = [r.group for r in report.records]
    assert groups == [patient_digest("PAT-7"), patient_digest("p2"), patient_digest("p2"),
                      patient_digest("p4"), patient_digest("PAT-9")]
    infos = [report.image_infos[r.path] for r in report.records]
    assert [i.format for i in infos] == ["DICOM", "PNG", "PNG", "JPEG", "DICOM"]
    assert [i.bits_stored for i in infos] == [12, 8, 16, 8, 12]
    assert (infos[1].width, infos[1].height) == (32, 40)
    assert all(Path(r.path).is_absolute() for r in report.records)


def test_generic_csv_every_bad_row_is_a_problem(tmp_path, make_dicom):
    good = make_dicom(tmp_path / "good.dcm", phantom(), patient_id="G")
    make_dicom(tmp_path / "nopixels.dcm", phantom(), pixel_data=False)
    (tmp_path / "corrupt.dcm").write_bytes(b"\x00garbage" * 50)
    truncated = make_dicom(tmp_path / "truncated.dcm", phantom())
    truncated.write_bytes(truncated.read_bytes()[:-500])
    write_png(tmp_path / "tiny.png", size=(10, 30))
    for name in ("b.png", "c.png", "d.png"):
        write_png(tmp_path / name)
    csv = write_csv(tmp_path / "data.csv", [
        "image_path,label",
        "good.dcm,A",  # 2
        "b.png,0",  # 3 unknown label
        "b.png,5",  # 4 unknown label
        "b.png,E",  # 5 unknown label
        "b.png,",  # 6 blank label
        "b.png,b ",  # 7 ok
        "nothere.png,C",  # 8 missing file
        "corrupt.dcm,C",  # 9 unreadable
        "nopixels.dcm,C",  # 10 no pixels
        "truncated.dcm,C",  # 11 truncated
        "b.png,B",  # 12 duplicate of row 7
        "../../etc/passwd,C",  # 13 outside root
        "/etc/passwd,C",  # 14 outside root
        "tiny.png,C",  # 15 tiny
        "c.png,C",  # 16 ok
        "./d.png,D",  # 17 ok
        f"{good},A",  # 18 absolute path inside the folder, already listed as row 2
    ])
    report = scan_dataset(DatasetSpec(csv=str(csv)))
    assert report.rows_read == 17
    assert [r.row for r in report.records] == [2, 7, 16, 17]
    assert report.class_counts() == [1, 1, 1, 1]
    assert report.problem_counts() == {"missing_file": 1, "outside_root": 2, "duplicate_path": 2,
                                       "unknown_label": 4, "unreadable": 1, "truncated": 1,
                                       "no_pixels": 1, "tiny_image": 1}
    # every removed row is accounted for, with its row number
    removed_rows = {p.row for p in report.problems}
    assert removed_rows == set(range(3, 7)) | set(range(8, 16)) | {18}
    labels = {p.row: p.message for p in problems_of(report, "unknown_label")}
    assert "'0'" in labels[3] and "'5'" in labels[4] and "'E'" in labels[5] and "empty" in labels[6]
    outside = {p.row: p.message for p in problems_of(report, "outside_root")}
    assert "../../etc/passwd" in outside[13] and "/etc/passwd" in outside[14]
    by_row = {p.row: p for p in report.problems}
    assert "nothere.png" in by_row[8].message
    assert by_row[9].kind == "unreadable" and "corrupt.dcm" in by_row[9].message
    assert by_row[10].kind == "no_pixels"
    assert by_row[11].kind == "truncated"
    assert "row 7" in by_row[12].message
    assert "30x10" in by_row[15].message
    summary = "\n".join(report.summary_lines())
    assert "unknown_label: 4" in summary and "rows usable: 4" in summary


def test_generic_csv_missing_column_is_named(tmp_path):
    csv = write_csv(tmp_path / "data.csv", ["path,label", "a.png,A"])
    with pytest.raises(DatasetError) as caught:
        scan_dataset(DatasetSpec(csv=str(csv)))
    assert "missing column 'image_path'" in str(caught.value)
    assert "path, label" in str(caught.value)


def test_generic_columns_with_dicom_root_say_so(tmp_path):
    csv = write_csv(tmp_path / "data.csv", ["image_path,label", "a.png,A"])
    with pytest.raises(DatasetError, match="without --dicom-root"):
        scan_dataset(DatasetSpec(csv=str(csv), dicom_root=str(tmp_path)))


def test_latin1_csv_is_read(tmp_path):
    write_png(tmp_path / "mammo_é.png")
    write_png(tmp_path / "other.png")
    csv = write_csv(tmp_path / "data.csv", ["image_path,label,patient_id", "mammo_é.png,A,Zoë", "other.png,B,Zoë"],
                    encoding="latin-1")
    report = scan_dataset(DatasetSpec(csv=str(csv)))
    assert report.problem_counts() == {"empty_class": 2}
    assert [Path(r.path).name for r in report.records] == ["mammo_é.png", "other.png"]
    assert report.records[0].group == patient_digest("Zoë")
    assert any("not UTF-8" in note for note in report.notes)


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_csv_are_read(tmp_path, delimiter):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    csv = write_csv(tmp_path / "data.csv", [f"image_path{delimiter}label", f"a.png{delimiter}C", f"b.png{delimiter}4"])
    report = scan_dataset(DatasetSpec(csv=str(csv)))
    assert [r.label for r in report.records] == [2, 3]
    assert any("separator" in note for note in report.notes)


def test_empty_class_is_a_dataset_level_problem(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / name)
    csv = write_csv(tmp_path / "data.csv", ["image_path,label", "a.png,A", "b.png,B", "c.png,C"])
    report = scan_dataset(DatasetSpec(csv=str(csv)))
    empty = problems_of(report, "empty_class")
    assert len(empty) == 1 and "class D" in empty[0].message and empty[0].row is None
    assert len(report.records) == 3  # nothing removed for it


def test_nothing_usable_raises_with_the_problems(tmp_path):
    csv = write_csv(tmp_path / "data.csv", ["image_path,label", "a.png,A", "b.png,Z"])
    with pytest.raises(DatasetError) as caught:
        scan_dataset(DatasetSpec(csv=str(csv)))
    message = str(caught.value)
    assert "none of the 2" in message and "missing_file: 1" in message and "unknown_label: 1" in message


def test_missing_csv_and_no_input_raise(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        scan_dataset(DatasetSpec(csv=str(tmp_path / "nope.csv")))
    with pytest.raises(DatasetError, match="No dataset given"):
        scan_dataset(DatasetSpec())


def test_progress_is_reported(tmp_path):
    for name in ("a.png", "b.png"):
        write_png(tmp_path / name)
    csv = write_csv(tmp_path / "data.csv", ["image_path,label", "a.png,A", "b.png,B"])
    calls = []
    scan_dataset(DatasetSpec(csv=str(csv)), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 2), (1, 2), (2, 2)]


def test_without_image_checks_no_header_is_read(tmp_path):
    (tmp_path / "corrupt.dcm").write_bytes(b"not dicom")
    write_png(tmp_path / "b.png")
    csv = write_csv(tmp_path / "data.csv", ["image_path,label", "corrupt.dcm,A", "b.png,B"])
    report = scan_dataset(DatasetSpec(csv=str(csv)), check_images=False)
    assert len(report.records) == 2 and report.image_infos == {}


# -- folders ------------------------------------------------------------------------------------


def test_class_folders_case_insensitive_and_digits(tmp_path, make_dicom):
    write_png(tmp_path / "a" / "x1.png")
    write_png(tmp_path / "a" / "x2.png")
    write_jpeg(tmp_path / "B" / "y1.jpg")
    make_dicom(tmp_path / "3" / "z1.dcm", phantom(), patient_id="P-Z")
    make_dicom(tmp_path / "d" / "nested" / "w1.dcm", phantom())
    (tmp_path / "d" / ".hidden.png").write_bytes(b"")
    write_png(tmp_path / "other" / "ignored.png")
    report = scan_dataset(DatasetSpec(images=str(tmp_path)))
    assert report.kind == "folders"
    assert report.rows_read == 5 and report.rows_usable == 5
    assert report.class_counts() == [2, 1, 1, 1]
    groups = {Path(r.path).name: r.group for r in report.records}
    assert groups == {"x1.png": "x1", "x2.png": "x2", "y1.jpg": "y1", "z1.dcm": patient_digest("P-Z"), "w1.dcm": "w1"}
    assert all(r.row == 0 for r in report.records)
    assert any("other" in note for note in report.notes)


def test_folders_without_class_folders_raise(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no class folders.*train/"):
        scan_dataset(DatasetSpec(images=str(tmp_path)))


def test_utf16_csv_with_windows_paths_is_read(tmp_path):
    write_png(tmp_path / "img" / "a.png")
    write_png(tmp_path / "img" / "b.png")
    csv = tmp_path / "data.csv"
    csv.write_bytes("image_path\tlabel\r\nimg\\a.png\tA\r\nimg\\b.png\tB\r\n".encode("utf-16"))
    report = scan_dataset(DatasetSpec(csv=str(csv)))
    assert [Path(r.path).name for r in report.records] == ["a.png", "b.png"]
    assert [r.row for r in report.records] == [2, 3]


# -- every image is decoded at scan time; any failure is a problem naming the file -----------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bad_image_dataset(root: Path, make_dicom) -> tuple[Path, dict[str, str]]:
    """A generic CSV with 4 good images and one of each kind of bad pixels; {file name: kind}."""
    import struct

    import pydicom

    rows = ["image_path,label,patient_id"]
    for i in range(4):
        rows.append(f"{write_png(root / f'good{i}.png').name},{'ABCD'[i]},p{i}")
    bad = {"slope_nan.dcm": "not_finite", "frames.dcm": "multi_frame", "syntax.dcm": "unsupported_compression",
           "bomb.png": "too_large", "cut.png": "unreadable", "odd.dcm": "unreadable"}
    make_dicom(root / "slope_nan.dcm", phantom(), RescaleSlope="nan", RescaleIntercept="0")
    make_dicom(root / "frames.dcm", phantom(), NumberOfFrames=2, PixelData=np.stack([phantom()] * 2).tobytes())
    ds = pydicom.dcmread(make_dicom(root / "syntax.dcm", phantom()))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    ds.save_as(root / "syntax.dcm")
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)  # 400 Mpx of 8-bit grey
    (root / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
                                    + png_chunk(b"IDAT", zlib.compress(bytes(100))) + png_chunk(b"IEND", b""))
    data = write_png(root / "whole.png").read_bytes()
    (root / "whole.png").unlink()
    (root / "cut.png").write_bytes(data[: len(data) - 30])  # the header is fine, the pixels end early
    make_dicom(root / "odd.dcm", phantom())  # decodes fine by itself; the test breaks its decoder
    rows += [f"{name},B,px{i}" for i, name in enumerate(bad)]
    return write_csv(root / "data.csv", rows), bad


def test_scan_decodes_every_image_and_names_each_bad_one(tmp_path, make_dicom, monkeypatch):
    from mammo_tui.data import dicom

    csv, bad = bad_image_dataset(tmp_path, make_dicom)
    real = dicom.modality_values

    def plugin_bug(pixels, ds):  # an exception type nobody expected, from deep inside a decode
        if "odd.dcm" in str(ds.filename):
            raise LookupError("plugin bug")
        return real(pixels, ds)

    monkeypatch.setattr(dicom, "modality_values", plugin_bug)
    report = scan_dataset(DatasetSpec(csv=str(csv)))
    assert sorted(Path(r.path).name for r in report.records) == [f"good{i}.png" for i in range(4)]
    found = {Path(p.path).name: p for p in report.blocking_problems()}
    assert {name: p.kind for name, p in found.items()} == bad
    for name, problem in found.items():
        assert name in problem.message and problem.row is not None
    assert "LookupError: plugin bug" in found["odd.dcm"].message
    assert report.rows_read == report.rows_usable + len(report.blocking_problems())
    assert "Problems: none" not in report.summary_lines()


def test_an_unexpected_exception_while_probing_is_a_problem_not_a_crash(tmp_path, monkeypatch):
    from mammo_tui.data import cache

    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    csv = write_csv(tmp_path / "data.csv", ["image_path,label", "a.png,A", "b.png,B"])
    real = cache.probe  # replaced whole: the scan itself must contain what probe lets escape
    monkeypatch.setattr(cache, "probe", lambda p: real(p) if p.endswith("a.png") else 1 / 0)
    report = scan_dataset(DatasetSpec(csv=str(csv)))
    assert [Path(r.path).name for r in report.records] == ["a.png"]
    (problem,) = report.blocking_problems()
    assert problem.kind == "unreadable" and "b.png" in problem.message and "ZeroDivisionError" in problem.message


def test_second_scan_of_the_same_content_decodes_nothing(tmp_path, monkeypatch):
    from mammo_tui.data import cache

    for name in ("a.png", "b.png"):
        write_png(tmp_path / name)
    csv = write_csv(tmp_path / "data.csv", ["image_path,label", "a.png,A", "b.png,B"])
    decoded = []
    real = cache.read_image
    monkeypatch.setattr(cache, "read_image", lambda p: decoded.append(Path(p).name) or real(p))
    scan_dataset(DatasetSpec(csv=str(csv)))
    assert sorted(decoded) == ["a.png", "b.png"]
    cache._hash_memo.clear()  # as in a new process: the on-disk records answer
    scan_dataset(DatasetSpec(csv=str(csv)))
    assert sorted(decoded) == ["a.png", "b.png"]


def _finishes(call, timeout: float = 20.0):
    """call() in a thread; its result, or a failure if it is still blocked after `timeout` s."""
    import threading

    out: dict = {}

    def target():
        try:
            out["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            out["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked on a special file"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_special_files_are_named_problems_never_a_hang(tmp_path):
    """A FIFO named x.png in a class folder stalled the scan; `predict RUN fifo.png` or /dev/zero
    never returned. Anything that is not a regular file is a named problem wherever an image is read."""
    import os

    from mammo_tui.data.cache import PreprocessCache
    from mammo_tui.data.images import read_image
    from mammo_tui.data.records import ImageReadError

    for label in "ABCD":
        for index in range(2):
            write_png(tmp_path / label / f"{label}{index}.png")
    fifo = tmp_path / "B" / "x.png"
    os.mkfifo(fifo)
    report = _finishes(lambda: scan_dataset(DatasetSpec(images=str(tmp_path))))
    assert [p.path for p in problems_of(report, "unreadable")] == [str(fifo)]
    assert "FIFO" in problems_of(report, "unreadable")[0].message and len(report.records) == 8
    for path, what in ((str(fifo), "FIFO"), ("/dev/zero", "device")):
        with pytest.raises(ImageReadError, match=what):
            _finishes(lambda: read_image(path))
        with pytest.raises(ImageReadError, match=what):  # predict's path: the cache hashes the file first
            _finishes(lambda: PreprocessCache(32, root=tmp_path / "cache").load(path))
