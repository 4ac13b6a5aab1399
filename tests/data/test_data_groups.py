"""Where groups (patients) come from, the loud warning when there are none, and identical image
content under different groups (leakage risk)."""

from __future__ import annotations

import json
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammo_tui.data.fingerprint import fingerprint
from mammo_tui.data.records import patient_digest
from mammo_tui.data.sources import DatasetSpec, scan_dataset
from mammo_tui.data.split import train_val_split
from mammo_tui.errors import DatasetError
from mammo_tui.prepare import prepare_dataset
from tui_helpers import async_test, screen_text

VIEWS = ("L-CC", "L-MLO", "R-CC", "R-MLO")
NO_IDS = "views of one patient may land on both sides of the split"


def write_png(path: Path, size: tuple[int, int] = (40, 32)) -> Path:
    """A small PNG whose bytes are unique to its path (a corner mark from the path's crc32)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full(size, 60, dtype=np.uint8)
    pixels[8:30, :20] = 150
    pixels[0, :4] = list(zlib.crc32(str(path).encode()).to_bytes(4, "big"))
    Image.fromarray(pixels).save(path)
    return path


def twelve_patients_in_class_folders(root: Path) -> Path:
    """12 patients x 4 views, 3 patients per class folder, patient only in the file name."""
    for patient in range(12):
        for view in VIEWS:
            write_png(root / "ABCD"[patient % 4] / f"P{patient:02d}_{view}.png")
    return root


def patient_of(record) -> str:
    return Path(record.path).name.split("_")[0]


def problems_of(report, kind: str):
    return [p for p in report.problems if p.kind == kind]


# -- no patient ids: said loudly --------------------------------------------------------------


def test_class_folders_without_patient_ids_warn_loudly(tmp_path):
    report = scan_dataset(DatasetSpec(images=str(twelve_patients_in_class_folders(tmp_path))))
    assert len(report.records) == 48 and report.problems == []
    assert report.group_sources == {"per_image": 48}
    assert report.ungrouped_images == 48
    assert report.group_source() == "none: one group per image"
    summary = "\n".join(report.summary_lines())
    assert "WARNING: no patient ids" in summary and NO_IDS in summary and "optimistic" in summary
    assert "--group-pattern REGEX" in summary and "patient_id column" in summary and "PatientID" in summary
    assert "Patients (groups): 48, from none: one group per image" in summary

    fp = fingerprint(report)
    assert (fp.n_patients, fp.ungrouped_images) == (48, 48)
    assert fp.group_source == "none: one group per image" and NO_IDS in fp.group_warning
    data = json.loads(json.dumps(fp.to_dict()))
    assert data["group_sources"] == {"per_image": 48} and NO_IDS in data["group_warning"]
    assert NO_IDS in report.to_dict()["group_warning"] and report.to_dict()["ungrouped_images"] == 48

    # what the warning is about: a split by image puts some patient's views on both sides
    split = train_val_split([r.label for r in report.records], [r.group for r in report.records])
    train = {patient_of(report.records[i]) for i in split.train}
    val = {patient_of(report.records[i]) for i in split.val}
    assert train & val


def test_the_warning_reaches_the_run_log_warnings_and_does_not_block(tmp_path):
    prepared = prepare_dataset(DatasetSpec(images=str(twelve_patients_in_class_folders(tmp_path))))
    assert any(NO_IDS in warning for warning in prepared.warnings)


def test_group_pattern_gives_one_group_per_patient_and_a_clean_split(tmp_path):
    root = twelve_patients_in_class_folders(tmp_path)
    report = scan_dataset(DatasetSpec(images=str(root), group_pattern=r"^(P\d+)_"))
    assert report.problems == []
    assert report.group_sources == {"group_pattern": 48} and report.group_source() == "group pattern"
    groups = {r.group for r in report.records}
    assert len(groups) == 12
    assert all(r.group == patient_digest(patient_of(r)) for r in report.records)  # digests, never raw ids
    fp = fingerprint(report)
    assert fp.n_patients == 12 and fp.group_warning is None and fp.ungrouped_images == 0
    summary = "\n".join(report.summary_lines())
    assert NO_IDS not in summary and "Patients (groups): 12, from group pattern" in summary

    split = train_val_split([r.label for r in report.records], [r.group for r in report.records])
    train = {patient_of(report.records[i]) for i in split.train}
    val = {patient_of(report.records[i]) for i in split.val}
    assert train and val and not train & val
    assert len(split.train) + len(split.val) == 48


def test_group_pattern_without_a_group_uses_the_whole_match(tmp_path):
    report = scan_dataset(DatasetSpec(images=str(twelve_patients_in_class_folders(tmp_path)),
                                      group_pattern=r"P\d+"))
    assert {r.group for r in report.records} == {patient_digest(f"P{i:02d}") for i in range(12)}


def test_an_unmatched_path_is_a_counted_problem_never_its_own_group(tmp_path):
    root = twelve_patients_in_class_folders(tmp_path)
    stray = write_png(root / "B" / "scan_0042.png")
    report = scan_dataset(DatasetSpec(images=str(root), group_pattern=r"^(P\d+)_"))
    [problem] = problems_of(report, "no_group")
    assert problem.path == str(stray) and "B/scan_0042.png" in problem.message and "^(P\\d+)_" in problem.message
    assert str(stray) not in {r.path for r in report.records} and len(report.records) == 48
    assert report.problem_counts() == {"no_group": 1}
    assert "no_group: 1" in report.summary_lines()
    with pytest.raises(DatasetError, match="no_group"):  # it removes an image: blocking, like the others
        prepare_dataset(DatasetSpec(images=str(root), group_pattern=r"^(P\d+)_"))
    assert len(prepare_dataset(DatasetSpec(images=str(root), group_pattern=r"^(P\d+)_"),
                               skip_bad_rows=True).records) == 48


def test_unmatched_rows_of_a_generic_csv_name_their_row(tmp_path):
    write_png(tmp_path / "img" / "P01_L-CC.png")
    write_png(tmp_path / "img" / "other.png")
    (tmp_path / "data.csv").write_text("image_path,label\nimg/P01_L-CC.png,A\nimg/other.png,B\n")
    report = scan_dataset(DatasetSpec(csv=str(tmp_path / "data.csv"), group_pattern=r"/(P\d+)_"))
    [problem] = problems_of(report, "no_group")
    assert problem.row == 3 and problem.message.startswith("row 3: img/other.png")
    assert [r.group for r in report.records] == [patient_digest("P01")]


def test_nothing_matching_the_pattern_raises_with_the_count(tmp_path):
    root = twelve_patients_in_class_folders(tmp_path)
    with pytest.raises(DatasetError, match="no_group: 48"):
        scan_dataset(DatasetSpec(images=str(root), group_pattern=r"^patient-(\d+)"))


@pytest.mark.parametrize("pattern, fragment", [("(", "'('"), ("P[0-9", "'P[0-9'"), ("  ", "empty")])
def test_a_bad_group_pattern_is_a_dataset_error_naming_it(tmp_path, pattern, fragment):
    root = twelve_patients_in_class_folders(tmp_path)
    with pytest.raises(DatasetError) as caught:
        scan_dataset(DatasetSpec(images=str(root), group_pattern=pattern))
    assert fragment in str(caught.value) and "--group-pattern" in str(caught.value)


def four_view_csv(folder, column: str, prefix: str, group_id, exams: int) -> Path:
    """A generic CSV of `exams` x 4 views (PNG), with a `column` naming each exam's group."""
    rows = [f"image_path,label,{column}"]
    for exam in range(exams):
        for view in VIEWS:
            write_png(folder / f"{prefix}{exam}_{view}.png")
            rows.append(f"{prefix}{exam}_{view}.png,{'ABCD'[exam % 4]},{group_id(exam)}")
    (folder / "data.csv").write_text("\n".join(rows) + "\n")
    return folder / "data.csv"


def test_patient_id_column_comes_first_and_no_warning(tmp_path):
    four_view_csv(tmp_path, "patient_id", "p", lambda i: f"PAT{i}", exams=6)
    # a pattern giving other ids is not needed: the column wins, and a note says the pattern was unused
    report = scan_dataset(DatasetSpec(csv=str(tmp_path / "data.csv"), group_pattern=r"^(p\d)_"))
    assert report.problems == []
    assert report.group_sources == {"patient_id_column": 24}
    assert {r.group for r in report.records} == {patient_digest(f"PAT{i}") for i in range(6)}
    summary = "\n".join(report.summary_lines())
    assert "WARNING" not in summary and "from patient_id column" in summary
    assert fingerprint(report).group_warning is None
    assert any("--group-pattern was not needed" in note for note in report.notes)


def test_accession_column_groups_when_there_is_no_patient_id(tmp_path):
    four_view_csv(tmp_path, "AccessionNumber", "e", lambda i: f"ACC-{i}", exams=3)
    report = scan_dataset(DatasetSpec(csv=str(tmp_path / "data.csv")))
    assert report.group_sources == {"accession_column": 12}
    assert len({r.group for r in report.records}) == 3
    assert all(r.group.startswith("pt-") and "ACC" not in r.group for r in report.records)
    assert report.group_warning() is None


def test_generic_csv_without_patient_ids_falls_back_per_image_and_warns(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_png(tmp_path / f"{name}.png")
    (tmp_path / "data.csv").write_text("image_path,label\na.png,A\nb.png,B\nc.png,C\nd.png,D\n")
    report = scan_dataset(DatasetSpec(csv=str(tmp_path / "data.csv")))
    assert report.ungrouped_images == 4
    assert "all 4 images have no patient id" in report.group_warning()  # all: loud even when few


def test_dicom_patient_id_in_class_folders_groups_without_a_warning(tmp_path, make_dicom):
    rng = np.random.default_rng(0)
    for patient in range(4):
        for view in VIEWS:
            make_dicom(tmp_path / "ABCD"[patient] / f"{patient}-{view}.dcm",
                       rng.integers(0, 4000, (40, 32)), patient_id=f"PID{patient}")
    report = scan_dataset(DatasetSpec(images=str(tmp_path)))
    assert report.problems == []
    assert report.group_sources == {"dicom_patient_id": 16} and report.group_source() == "DICOM PatientID"
    assert {r.group for r in report.records} == {patient_digest(f"PID{i}") for i in range(4)}
    fp = fingerprint(report)
    assert fp.n_patients == 4 and fp.group_warning is None
    assert "WARNING" not in "\n".join(report.summary_lines())


def test_a_handful_without_ids_is_mixed_and_quiet_more_is_loud(tmp_path, make_dicom):
    rng = np.random.default_rng(1)
    for i in range(20):
        make_dicom(tmp_path / "ABCD"[i % 4] / f"{i}.dcm", rng.integers(0, 4000, (40, 32)), patient_id=f"P{i // 2}")
    for i in range(5):
        write_png(tmp_path / "C" / f"loose{i}.png")
    report = scan_dataset(DatasetSpec(images=str(tmp_path)))
    assert report.group_sources == {"dicom_patient_id": 20, "per_image": 5}
    assert report.group_source() == "mixed: DICOM PatientID 20, none: one group per image 5"
    assert report.group_warning() is None  # 5 of 25: a handful
    write_png(tmp_path / "C" / "loose5.png")
    report = scan_dataset(DatasetSpec(images=str(tmp_path)))
    assert "6 of 26 images have no patient id" in report.group_warning()


# -- identical content ----------------------------------------------------------------------------


def test_identical_bytes_under_different_groups_are_a_leakage_risk(tmp_path):
    write_png(tmp_path / "p1_cc.png")
    shutil.copyfile(tmp_path / "p1_cc.png", tmp_path / "p2_cc.png")  # the same image under patient p2
    write_png(tmp_path / "p3_cc.png")
    shutil.copyfile(tmp_path / "p3_cc.png", tmp_path / "p3_cc_copy.png")  # a copy within one patient
    write_png(tmp_path / "p4_cc.png")
    (tmp_path / "data.csv").write_text("image_path,label,patient_id\np1_cc.png,A,p1\np2_cc.png,C,p2\n"
                                       "p3_cc.png,B,p3\np3_cc_copy.png,B,p3\np4_cc.png,D,p4\n")
    report = scan_dataset(DatasetSpec(csv=str(tmp_path / "data.csv")))
    assert len(report.records) == 5  # nothing removed
    leak, twice = problems_of(report, "duplicate_content")
    assert leak.row == 3 and "row 2 (p1_cc.png)" in leak.message and "leakage risk" in leak.message
    assert "labels differ (A there, C here)" in leak.message
    assert twice.row == 5 and "same patient" in twice.message and "leakage" not in twice.message
    assert report.leakage_risks == 1
    summary = "\n".join(report.summary_lines())
    assert "WARNING: leakage risk: 1 images" in summary and "duplicate_content: 2" in summary
    data = report.to_dict()
    assert data["problem_counts"]["duplicate_content"] == 2 and data["leakage_risks"] == 1
    fp = fingerprint(report)
    assert (fp.duplicate_content, fp.leakage_risks) == (2, 1)
    # a warning, not a bad row: training goes on without --skip-bad-rows, and the run log says it
    prepared = prepare_dataset(DatasetSpec(csv=str(tmp_path / "data.csv")))
    assert len(prepared.records) == 5 and report.blocking_problems() == []
    assert any("leakage risk" in warning for warning in prepared.warnings)


def test_identical_files_in_class_folders_without_ids_are_reported(tmp_path):
    root = twelve_patients_in_class_folders(tmp_path)
    shutil.copyfile(root / "A" / "P00_L-CC.png", root / "D" / "copy.png")
    report = scan_dataset(DatasetSpec(images=str(root)))
    [problem] = problems_of(report, "duplicate_content")
    assert "D/copy.png" in problem.message and "A/P00_L-CC.png" in problem.message
    assert "leakage risk" in problem.message and report.leakage_risks == 1


def test_content_is_hashed_once_for_the_scan_and_the_preprocess_cache(tmp_path, monkeypatch):
    import hashlib

    from mammo_tui.data.cache import PreprocessCache

    root = twelve_patients_in_class_folders(tmp_path / "data")
    reads = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda f, d: reads.append(f.name) or real(f, d))
    report = scan_dataset(DatasetSpec(images=str(root)))
    assert len(reads) == 48
    cache = PreprocessCache(32, tmp_path / "cache")
    for record in report.records[:5]:
        cache.load(record.path)
    assert len(reads) == 48, "the cache reused the scan's content hashes"
    scan_dataset(DatasetSpec(images=str(root)))
    assert len(reads) == 48


def test_the_hash_memo_is_bounded(tmp_path, monkeypatch):
    from mammo_tui.data import cache

    monkeypatch.setattr(cache, "_HASH_MEMO_MAX", 3)
    monkeypatch.setattr(cache, "_hash_memo", type(cache._hash_memo)())
    paths = [write_png(tmp_path / f"{i}.png") for i in range(5)]
    digests = [cache.content_hash(p, tmp_path / "cache") for p in paths]
    assert len(cache._hash_memo) == 3 and len(set(digests)) == 5
    assert cache.content_hash(paths[0], tmp_path / "cache") == digests[0]  # back from the on-disk index


@async_test
async def test_fingerprint_screen_shows_the_warning_and_the_patients_source(tmp_path):
    """The wizard's fingerprint step: the warning in its own panel, the patients' source in the facts."""
    from mammo_tui.planner import plan
    from mammo_tui.tui.app import MammoApp
    from mammo_tui.tui.fingerprint_view import FingerprintScreen
    from mammo_tui.tui.job import WizardState

    report = scan_dataset(DatasetSpec(images=str(twelve_patients_in_class_folders(tmp_path))))
    fp = fingerprint(report)
    state = WizardState(report=report, fingerprint=fp, plan=plan(fp.n_images, fp.class_counts))
    app = MammoApp("wizard")
    async with app.run_test(size=(120, 40)) as pilot:
        await app.push_screen(FingerprintScreen(state))
        await pilot.pause()
        panel = app.screen.query_one("#group-warning")
        assert panel.border_title == "split warning"
        warning = str(panel.render())
        text = re.sub(r"\s+", " ", screen_text(app))
    assert "no patient ids" in warning and NO_IDS in warning and "--group-pattern REGEX" in warning
    assert "⚠ no patient ids: all 48 images have no patient id" in text  # on screen, not scrolled away
    assert "48 (from none: one group per image)" in text
    assert "Continue (enter)" in text  # nothing was removed: no "without N bad rows"
