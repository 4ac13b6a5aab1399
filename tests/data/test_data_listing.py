"""Listing oddities are handled and reported, or refused with a message: duplicated header columns
(also differing only by case or spaces), two folders for one class (a/ + A/, 1/ + A/, 3/ + C/),
symlinks that escape the dataset folder (every layout), and files that are not CSV text."""

from __future__ import annotations

import gzip
import io
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammo_tui.data.sources import DatasetSpec, scan_dataset
from mammo_tui.data.table import read_table
from mammo_tui.errors import DatasetError

needs_symlinks = pytest.mark.skipif(os.name != "posix", reason="POSIX symlinks")


def png(path: Path, level: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([level, zlib.crc32(str(path).encode())])
    Image.fromarray(np.clip(rng.normal(level, 20, (40, 32)), 0, 255).astype(np.uint8)).save(path)
    return path


def generic_csv(root: Path, header: str, rows: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return root / "labels.csv"


def kinds(report) -> list[str]:
    return [p.kind for p in report.problems]


# -- duplicated header columns -------------------------------------------------------------------


@pytest.mark.parametrize("header", ["image_path,label,label", "image_path,Label,label ",
                                    "image_path,label,LABEL", "image path,image_path,label"])
def test_a_needed_column_twice_is_refused_naming_both(tmp_path, header):
    png(tmp_path / "a.png")
    csv = generic_csv(tmp_path, header, ["a.png,A,A"])
    with pytest.raises(DatasetError) as caught:
        scan_dataset(DatasetSpec(csv=str(csv)))
    message = str(caught.value)
    assert "labels.csv" in message, message
    names = [name.strip() for name in header.split(",")]
    key = lambda n: n.replace(" ", "").replace("_", "").lower()  # noqa: E731
    for name in [n for n in names if sum(key(m) == key(n) for m in names) > 1]:
        assert f"'{name}'" in message, message
    assert "rename" in message


def test_a_duplicated_patient_id_column_is_refused(tmp_path):
    png(tmp_path / "a.png")
    csv = generic_csv(tmp_path, "image_path,label,patient_id,Patient ID", ["a.png,A,p1,p2"])
    with pytest.raises(DatasetError, match="patient_id.*Patient ID"):
        scan_dataset(DatasetSpec(csv=str(csv)))


def test_a_duplicated_reference_column_is_refused(tmp_path):
    (tmp_path / "dicom").mkdir()
    csv = generic_csv(tmp_path, "AccessionNumber,Classification,classification", ["ACC1,A,B"])
    with pytest.raises(DatasetError, match="Classification.*classification"):
        scan_dataset(DatasetSpec(csv=str(csv), dicom_root=str(tmp_path / "dicom")))


def test_an_unused_duplicated_column_is_reported_not_refused(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        png(tmp_path / name, level=40 + 50 * "abcd".index(name[0]))
    csv = generic_csv(tmp_path, "image_path,label,notes,Notes",
                      ["a.png,A,x,y", "b.png,B,x,y", "c.png,C,x,y", "d.png,D,x,y"])
    report = scan_dataset(DatasetSpec(csv=str(csv)))
    assert report.rows_usable == 4
    assert any("notes" in note and "Notes" in note for note in report.notes), report.notes


# -- two folders for one class ---------------------------------------------------------------------


def _case_sensitive(tmp_path: Path) -> bool:
    (tmp_path / "probe").mkdir()
    sensitive = not (tmp_path / "PROBE").exists()
    (tmp_path / "probe").rmdir()
    return sensitive


@pytest.mark.parametrize("first,second", [("A", "1"), ("C", "3"), ("b", "2"), ("a", "A"), ("d", "D")])
def test_two_folders_for_one_class_are_refused(tmp_path, first, second):
    if first.lower() == second.lower() and not _case_sensitive(tmp_path):
        pytest.skip("case-insensitive file system: a/ and A/ are one folder")
    png(tmp_path / first / "x.png")
    png(tmp_path / second / "y.png")
    png(tmp_path / "B" / "z.png")
    with pytest.raises(DatasetError) as caught:
        scan_dataset(DatasetSpec(images=str(tmp_path)))
    message = str(caught.value)
    assert f"{first}/" in message and f"{second}/" in message and "one folder" in message, message


# -- symlinks -----------------------------------------------------------------------------------


@needs_symlinks
def test_folder_layout_symlinks_escaping_the_root_are_problems(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    png(outside / "secret.png")
    png(outside / "sub" / "deep.png")
    for c in "ABCD":
        png(root / c / f"{c}1.png", 40 + 50 * "ABCD".index(c))
    (root / "A" / "link.png").symlink_to(outside / "secret.png")  # a file link out
    (root / "B" / "sub").symlink_to(outside / "sub")  # a folder link out
    png(root / "C" / "real.png", 140)
    (root / "C" / "alias.png").symlink_to(root / "C" / "real.png")  # a link inside: fine
    (root / "C" / "inner").symlink_to(root / "D")  # a folder link inside: fine
    report = scan_dataset(DatasetSpec(images=str(root)))
    outside_problems = [p for p in report.problems if p.kind == "outside_root"]
    assert len(outside_problems) == 2, report.problems
    text = " ".join(p.message for p in outside_problems)
    assert "A/link.png" in text and "B/sub" in text and str(outside) in text
    used = {Path(r.path).name for r in report.records}
    assert {"alias.png", "real.png", "D1.png"} <= used and not {"secret.png", "deep.png"} & used
    assert sum(Path(r.path).name == "D1.png" for r in report.records) == 2  # D/ and C/inner/


@needs_symlinks
def test_a_class_folder_that_is_a_symlink_out_is_a_problem(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    png(outside / "x.png")
    for c in "BCD":
        png(root / c / f"{c}1.png", 40 + 50 * "ABCD".index(c))
    (root / "A").symlink_to(outside)
    report = scan_dataset(DatasetSpec(images=str(root)))
    assert [p.kind for p in report.problems if p.kind == "outside_root"] == ["outside_root"]
    assert "A" in report.problems[0].message and str(outside) in report.problems[0].message


@needs_symlinks
def test_a_dataset_root_that_is_a_symlink_still_works(tmp_path):
    real = tmp_path / "real"
    for c in "ABCD":
        png(real / c / f"{c}1.png", 40 + 50 * "ABCD".index(c))
    (tmp_path / "link").symlink_to(real)
    report = scan_dataset(DatasetSpec(images=str(tmp_path / "link")))
    assert report.rows_usable == 4 and "outside_root" not in kinds(report)


@needs_symlinks
def test_reference_layout_symlinks_escaping_the_root_are_problems(tmp_path, make_dicom):
    pixels = np.full((32, 32), 800, dtype=np.uint16)
    root, outside = tmp_path / "dicom", tmp_path / "outside"
    make_dicom(outside / "OUT" / "1.dcm", pixels, patient_id="P9")
    make_dicom(outside / "single.dcm", pixels + 1, patient_id="P9")
    make_dicom(root / "ACC1" / "1.dcm", pixels + 2, patient_id="P1")
    make_dicom(root / "ACC3" / "1.dcm", pixels + 3, patient_id="P3")
    (root / "ACC2").symlink_to(outside / "OUT")  # the accession folder itself links out
    (root / "ACC3" / "2.dcm").symlink_to(outside / "single.dcm")  # one file links out
    (root / "ACC4").symlink_to(root / "ACC1")  # a link inside the root: fine
    (tmp_path / "labels.csv").write_text("AccessionNumber,Classification\nACC1,A\nACC2,B\nACC3,C\nACC4,D\n")
    report = scan_dataset(DatasetSpec(csv=str(tmp_path / "labels.csv"), dicom_root=str(root)))
    outside_problems = [p for p in report.problems if p.kind == "outside_root"]
    assert sorted(p.row for p in outside_problems) == [3, 4], report.problems
    assert all(str(outside) in p.message for p in outside_problems)
    assert sorted((r.row, Path(r.path).name) for r in report.records) == [(2, "1.dcm"), (4, "1.dcm"), (5, "1.dcm")]


@needs_symlinks
def test_generic_csv_paths_through_a_symlink_out_are_problems(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    png(outside / "x.png")
    for c in "ABCD":
        png(root / f"{c}.png", 40 + 50 * "ABCD".index(c))
    (root / "imgs").symlink_to(outside)
    (root / "link.png").symlink_to(outside / "x.png")
    (root / "alias.png").symlink_to(root / "A.png")
    csv = generic_csv(root, "image_path,label", ["A.png,A", "B.png,B", "C.png,C", "D.png,D",
                                                 "imgs/x.png,A", "link.png,B", "alias.png,A"])
    report = scan_dataset(DatasetSpec(csv=str(csv)))
    assert sorted(p.row for p in report.problems if p.kind == "outside_root") == [6, 7]
    assert {Path(r.path).name for r in report.records} == {"A.png", "B.png", "C.png", "D.png", "alias.png"}


# -- files that are not CSV text ---------------------------------------------------------------------


def _xlsx_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return buffer.getvalue()


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("labels.csv", "image_path,label\n")
    return buffer.getvalue()


NOT_TEXT = {
    "gzip": (gzip.compress(b"image_path,label\na.png,A\n"), "gzip"),
    "zip": (_zip_bytes(), "zip"),
    "xlsx": (_xlsx_bytes(), "Excel"),
    "xls": (bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504), "Excel"),
    "png": (b"\x89PNG\r\n\x1a\n" + bytes(64), "PNG"),
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF"),
    "binary": (bytes(range(256)) * 8, "binary"),
}


@pytest.mark.parametrize("kind", sorted(NOT_TEXT))
def test_a_file_that_is_not_csv_text_is_refused_by_name(tmp_path, kind):
    data, named = NOT_TEXT[kind]
    path = tmp_path / "labels.csv"
    path.write_bytes(data)
    with pytest.raises(DatasetError) as caught:
        read_table(path)
    message = str(caught.value)
    assert str(path) in message and named in message and "CSV" in message, message
    assert message.isprintable(), repr(message)  # never the raw bytes


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_without_a_bom_or_with_one_are_read(tmp_path, encoding):
    path = tmp_path / "labels.csv"
    path.write_bytes("image_path,label\na.png,A\nb.png,B\n".encode(encoding))
    table = read_table(path)
    assert table.columns == ["image_path", "label"] and [fields for _, fields in table.rows] == [
        ["a.png", "A"], ["b.png", "B"]]


def test_a_folder_given_as_the_csv_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="is a folder.*--images"):
        read_table(tmp_path)


@needs_symlinks
def test_a_fifo_given_as_the_csv_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(DatasetError, match="not a regular file"):
        read_table(tmp_path / "pipe.csv")
