"""Dataset descriptions: label maps, placeholder patient ids, mapping flags, and every mistake in a
description named by column, row and value (exit 2), nothing dropped without a count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus import FAST, assert_clean, mammo, png

from mammo_tui.data.described import list_described
from mammo_tui.data.grouping import placeholder_ids
from mammo_tui.data.description import from_mapping
from mammo_tui.data.inputs import MappingFlags, dataset_spec
from mammo_tui.data.sources import scan_dataset
from mammo_tui.errors import DatasetError
from mammo_tui.labels import parse_label, percent_label
from mammo_tui.prepare import prepare_dataset, train_refusal


@pytest.mark.parametrize("value, expected", [("DENSITY C", 2), ("density a", 0), ("ACR 4", 3), ("BI-RADS density B", 1), ("BI-RADS 2", None), ("C - heterogeneously dense", 2), ("Extremely dense", 3),
                                             ("2", 1), ("4.0", 3), ("", None), ("DENSITY E", None), ("5", None)])
def test_birads_map_reads_the_public_spellings(value, expected):
    assert parse_label(value) == expected


@pytest.mark.parametrize("value, expected", [("0%-25%", 0), ("26%-50%", 1), ("25-50%", 1), ("51%-75%", 2),
                                             (">75%", 3), ("76-100%", 3), ("<25%", 0), ("0-50%", None),
                                             ("3", None), ("120%", None)])
def test_percent_map_reads_quartile_bins(value, expected):
    assert percent_label(value) == expected


def test_placeholder_ids_are_the_usual_words_and_a_constant():
    assert placeholder_ids(["removed"] * 3 + ["p1", "p2", "p3"]) == {"removed"}
    assert placeholder_ids(["SITE1"] * 7 + ["p1", "p2"]) == {"SITE1"}  # one value on most rows
    assert placeholder_ids([f"p{i}" for i in range(10)]) == set()


def _pngs(root: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        png(root / name, 40 + 50 * (i % 4))


def _table(root: Path, text: str, name: str = "meta.csv") -> Path:
    (root / name).write_text(text)
    return root / name


def _describe(root: Path, **sections) -> dict:
    return {"name": "mine", "files": ["meta.csv"], **sections}


def test_template_naming_a_missing_column_is_refused_naming_it(tmp_path):
    _pngs(tmp_path, ["img/a.png"])
    _table(tmp_path, "id,density\na,A\n")
    description = from_mapping(_describe(tmp_path, image={"template": "img/{image_id}.png"},
                                         label={"column": "density"}), "test")
    with pytest.raises(DatasetError, match="'image_id'.*id, density"):
        list_described(description, str(tmp_path))


def test_a_label_the_map_does_not_know_is_refused_naming_column_row_and_value(tmp_path):
    _pngs(tmp_path, ["a.png", "b.png", "c.png"])
    _table(tmp_path, "path,density\na.png,A\nb.png,grade two\nc.png,grade two\n")
    description = from_mapping(_describe(tmp_path, image={"column": "path"}, label={"column": "density"}), "test")
    with pytest.raises(DatasetError, match=r"column 'density'.*'grade two' on 2 rows \(first: meta.csv row 3\)"):
        list_described(description, str(tmp_path))
    # mapped in the description: fine
    mapped = from_mapping(_describe(tmp_path, image={"column": "path"},
                                    label={"column": "density", "values": {"grade two": "B"}}), "test")
    assert [c.label for c in list_described(mapped, str(tmp_path)).candidates] == [0, 1, 1]


def test_a_join_key_with_no_match_is_refused_naming_column_row_and_value(tmp_path):
    _pngs(tmp_path, ["a.png", "b.png"])
    _table(tmp_path, "path,exam\na.png,E1\nb.png,E9\n")
    _table(tmp_path, "exam,density\nE1,2\n", name="clinical.csv")
    description = from_mapping(_describe(tmp_path, image={"column": "path"}, label={"column": "density"},
                                         join={"files": ["clinical.csv"], "on": "exam", "columns": ["density"]}), "t")
    with pytest.raises(DatasetError, match=r"column 'exam'.*meta.csv row 3: 'E9'"):
        list_described(description, str(tmp_path))


def test_a_glob_matching_two_files_is_refused_naming_both(tmp_path):
    _pngs(tmp_path, ["all/7_x_R.png", "all/7_y_L.png"])
    _table(tmp_path, "file,density\n7,B\n")
    description = from_mapping(_describe(tmp_path, image={"glob": "all/{file}_*.png"}, label={"column": "density"}), "t")
    with pytest.raises(DatasetError, match=r"meta.csv row 2.*matches 2 files.*7_x_R.png, all/7_y_L.png"):
        list_described(description, str(tmp_path))


def test_unknown_keys_in_a_description_are_named():
    with pytest.raises(DatasetError, match="unknown key colum in \\[label\\]"):
        from_mapping({"files": ["m.csv"], "image": {"column": "p"}, "label": {"colum": "x"}}, "mine.toml")


def _blank_label_set(root: Path) -> Path:
    names = [f"{c}{i}.png" for c in "ABCD" for i in range(4)]
    _pngs(root / "img", names + ["u1.png", "u2.png", "m.png"])
    rows = ["file,density,woman,kind"]
    rows += [f"{name},{name[0]},w{name[0]}{int(name[1]) % 2},2D" for name in names]
    rows += ["u1.png,,wx,2D", "u2.png,5,wy,2D", "m.png,B,wz,cview"]
    return _table(root, "\n".join(rows) + "\n")


def test_blank_and_not_density_rows_are_left_out_counted_and_never_block(tmp_path):
    _blank_label_set(tmp_path)
    description = from_mapping(_describe(tmp_path, image={"template": "img/{file}"},
                                         label={"column": "density", "values": {"5": "exclude: male"}},
                                         group={"patient": "woman"},
                                         exclude=[{"column": "kind", "keep": ["2D"], "reason": "synthesized 2-D"}]), "t")
    from mammo_tui.data.sources import DatasetSpec

    spec = DatasetSpec(root=str(tmp_path), description=description.to_dict())
    report = scan_dataset(spec)
    assert len(report.records) == 16 and report.left_out() == {"'density' is blank": 1, "'density': male": 1,
                                                               "synthesized 2-D": 1}
    assert report.blocking_problems() == [] and train_refusal(report, skip_bad_rows=False) is None
    assert len({r.group for r in report.records}) == 8
    assert prepare_dataset(spec).report.rows_read == 19  # train reads the same and goes on


def test_mapping_flags_read_a_table_outside_the_image_folder(tmp_path):
    images = tmp_path / "readonly"
    _blank_label_set(images)
    table = tmp_path / "elsewhere" / "meta.csv"
    table.parent.mkdir()
    (images / "meta.csv").rename(table)
    spec = dataset_spec(csv=str(table), image_root=str(images),
                        flags=MappingFlags(path_template="img/{file}", label_col="density", patient_col="woman"))
    with pytest.raises(DatasetError, match=r"'5' on 1 row \(first: meta.csv row 19\)"):
        scan_dataset(spec)  # 5 means nothing to the plain BI-RADS map: refused, named


def test_generic_csv_with_image_root_reads_paths_from_there(tmp_path):
    images = tmp_path / "images"
    _pngs(images, [f"{c}{i}.png" for c in "ABCD" for i in range(3)])
    table = tmp_path / "labels" / "labels.csv"
    table.parent.mkdir()
    table.write_text("image_path,label,patient_id\n" + "".join(f"{c}{i}.png,{c},p{c}{i}\n" for c in "ABCD" for i in range(3)))
    report = scan_dataset(dataset_spec(csv=str(table), image_root=str(images)))
    assert len(report.records) == 12 and report.group_source() == "patient_id column"


def test_placeholder_patient_column_falls_back_to_the_file_name_pattern(tmp_path):
    names = [f"AllDICOMs/{100 + i}_{'abcdefgh'[i // 2]}_MG_R_CC_ANON.png" for i in range(16)]
    _pngs(tmp_path, names)
    rows = ["Patient ID;File Name;ACR"] + [f"removed;{100 + i};{1 + i % 4}" for i in range(16)]
    _table(tmp_path, "\n".join(rows) + "\n")
    description = from_mapping(_describe(tmp_path, image={"glob": "AllDICOMs/{File Name}_*.png"},
                                         label={"column": "ACR"},
                                         group={"patient": "Patient ID", "pattern": r"\d+_([a-z]+)_MG_"}), "t")
    listing = list_described(description, str(tmp_path))
    assert len({c.group for c in listing.candidates}) == 8
    assert {c.group_source for c in listing.candidates} == {"group_pattern"}
    assert any("'removed' on 16 of 16 rows is a placeholder" in note for note in listing.notes)


def test_dicom_patient_id_unique_per_image_is_a_leakage_warning(tmp_path, make_dicom):
    import numpy as np

    rows = ["image_path,label"]
    for i in range(8):
        pixels = np.full((32, 32), 100 + 30 * i, dtype=np.uint16)
        make_dicom(tmp_path / f"v{i}.dcm", pixels, patient_id=f"Mass-Training_P_0000{i // 4}_VIEW{i}")
        rows.append(f"v{i}.dcm,{'ABCD'[i % 4]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    report = scan_dataset(dataset_spec(csv=str(tmp_path / "labels.csv")))
    assert report.group_source() == "DICOM PatientID"
    assert any("leakage risk: the DICOM PatientID is unique per image" in note for note in report.group_notes)
    assert any("leakage risk" in line for line in report.summary_lines())


def test_cli_refuses_a_bad_template_with_exit_2(tmp_path):
    _pngs(tmp_path, ["img/a.png"])
    _table(tmp_path, "id,density\na,A\n")
    proc = mammo("plan", "--csv", tmp_path / "meta.csv", "--path-template", "img/{image_id}.png", "--label-col",
                 "density", cwd=tmp_path)
    assert_clean(proc, 2, "image_id", "meta.csv")


@pytest.mark.slow
def test_plan_and_train_agree_on_blank_labels(tmp_path):
    """RSNA's blank densities: plan exits 0 and counts them, train trains without --skip-bad-rows."""
    _blank_label_set(tmp_path)
    flags = ["--csv", tmp_path / "meta.csv", "--path-template", "img/{file}", "--label-col", "density",
             "--patient-col", "woman"]
    # 5 is not in the plain BI-RADS map: both refuse it the same way, naming it
    assert_clean(mammo("plan", *flags, cwd=tmp_path), 2, "'5'")
    (tmp_path / "meta.csv").write_text((tmp_path / "meta.csv").read_text().replace("u2.png,5,", "u2.png,,"))
    proc = mammo("plan", *flags, "--json", cwd=tmp_path)
    assert_clean(proc, 0)
    plan = json.loads(proc.stdout)
    assert plan["can_train"] and plan["dataset"]["left_out"] == {"'density' is blank": 2}
    proc = mammo("train", "--no-ui", *flags, "--outdir", tmp_path / "runs", *FAST, cwd=tmp_path)
    assert_clean(proc, (0, 3))


def test_views_from_dicom_headers_are_counted_and_filtered(tmp_path, make_dicom):
    """Synthesized 2-D (ImageType GENERATED_2D) is counted apart from CC/MLO; --views CC,MLO leaves
    it out, counted, without blocking; the same patient placeholder rule holds for PatientID."""
    import numpy as np

    rows = ["image_path,label,patient_id"]
    for i in range(12):
        extra = {"ImageType": ["DERIVED", "PRIMARY", "GENERATED_2D"]} if i >= 10 else {}
        make_dicom(tmp_path / f"v{i}.dcm", np.full((32, 32), 100 + 20 * i), patient_id="anonymous",
                   ViewPosition="CC" if i % 2 else "MLO", **extra)
        rows.append(f"v{i}.dcm,{'ABCD'[i % 4]},p{i // 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    report = scan_dataset(dataset_spec(csv=str(tmp_path / "labels.csv")))
    assert report.view_counts() == {"CC": 5, "MLO": 5, "synthesized": 2}
    kept = scan_dataset(dataset_spec(csv=str(tmp_path / "labels.csv"), views="CC,MLO"))
    assert len(kept.records) == 10 and kept.blocking_problems() == []
    assert kept.left_out() == {"view synthesized is not one of --views CC,MLO": 2}


def test_a_symlink_out_of_the_image_root_is_refused_not_read(tmp_path):
    outside = tmp_path / "outside"
    _pngs(outside, ["secret.png", "dir/inner.png"])
    root = tmp_path / "root"
    _pngs(root, ["img/a.png"])
    (root / "img" / "link.png").symlink_to(outside / "secret.png")
    (root / "linked").symlink_to(outside / "dir")
    _table(root, "path,density\nimg/a.png,A\nimg/link.png,B\nlinked/inner.png,C\n../outside/secret.png,D\n")
    description = from_mapping(_describe(root, image={"column": "path"}, label={"column": "density"}), "t")
    listing = list_described(description, str(root))
    assert [c.relative for c in listing.candidates] == ["img/a.png"]
    kinds = sorted((p.kind, p.row) for p in listing.problems)
    assert kinds == [("outside_root", 3), ("outside_root", 4), ("outside_root", 5)]


@pytest.mark.parametrize("text", [
    "id;path;density\n1;a.png;A\n2;b.png;\n3;\"c,d.png\";C\n",            # plain rows: pandas reads them
    "id;path;density\n1;a.png;A\n\n2;\"b\nx.png\";B\n",                     # a blank line, a quoted newline
    "id;path;density\n1;a.png\n2;b.png;B;extra\n",                           # short and long rows
])
def test_the_fast_reader_gives_the_same_table_and_line_numbers(tmp_path, text):
    from mammo_tui.data.table import read_table

    (tmp_path / "t.csv").write_text(text)
    from mammo_tui.data.table import _read_fast

    slow = read_table(tmp_path / "t.csv", only={"path", "density"})
    fast = read_table(tmp_path / "t.csv", only={"path", "density"}, fast_above=0)
    assert (fast.columns, fast.rows) == (slow.columns, slow.rows)
    lines = text.count("\n")
    by_pandas = _read_fast(tmp_path / "t.csv", "utf-8-sig", ";", "id;path;density", {"path", "density"}, lines, [])
    if text.startswith("id;path;density\n1;a.png;A\n2;b.png;\n"):
        assert by_pandas is not None  # the fast path is taken where lines are rows
    if "\n\n" in text:
        assert by_pandas is None  # a blank line would shift pandas' row numbers: the csv module reads it
