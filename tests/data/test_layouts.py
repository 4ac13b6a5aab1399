"""The six public density datasets as downloaded (stand-ins built from their published layouts in
tests/standins.py): recognised with no flags, labels mapped, patients grouped as the real set
intends, unlabelled rows counted, views reported, the official split honoured."""

from __future__ import annotations

import json

import pytest
from corpus import FAST, assert_clean, mammo
from standins import MAKERS, StandIn

from mammo_tui.data.inputs import dataset_spec
from mammo_tui.data.layouts import layout_names, load_layout
from mammo_tui.data.sources import scan_dataset
from mammo_tui.labels import CLASS_NAMES

LAYOUT_OF = {"vindr": "vindr_mammo", "rsna": "rsna_screening", "cbis_ddsm": "cbis_ddsm", "inbreast": "inbreast",
             "embed": "embed", "kau_bcmd": "kau_bcmd"}
GROUPED_BY = {"vindr": "study column (one exam; the set has no patient id)", "rsna": "patient_id column",
              "cbis_ddsm": "patient_id column", "inbreast": "group pattern", "embed": "patient_id column",
              "kau_bcmd": "patient_id column"}


@pytest.fixture(scope="module", params=sorted(MAKERS))
def standin(request, tmp_path_factory) -> tuple[str, StandIn]:
    name = request.param
    return name, MAKERS[name](tmp_path_factory.mktemp(name) / "download")


@pytest.fixture(scope="module")
def scanned(standin):
    name, made = standin
    return name, made, scan_dataset(dataset_spec(str(made.root)))


def test_every_maker_has_a_layout():
    assert sorted(LAYOUT_OF.values()) == layout_names() and set(LAYOUT_OF) == set(MAKERS)


def test_recognised_with_no_flags(standin):
    name, made = standin
    spec = dataset_spec(str(made.root))
    assert spec.description["name"] == LAYOUT_OF[name]


def test_labels_mapped_and_patients_grouped_as_the_set_intends(scanned):
    name, made, report = scanned
    pool = [r for r in report.records if r.split != "test"]
    assert len(pool) == made.n_labelled_images
    assert {c: sum(CLASS_NAMES[r.label] == c for r in pool) for c in CLASS_NAMES} == made.class_counts
    assert len({r.group for r in pool}) == made.n_groups_labelled
    assert report.group_source() == GROUPED_BY[name]
    assert report.blocking_problems() == []  # trains with no flag


def test_official_split_is_the_test_side(scanned):
    name, made, report = scanned
    tests = report.test_records()
    assert {c: sum(CLASS_NAMES[r.label] == c for r in tests) for c in CLASS_NAMES} == made.test_class_counts
    if name == "vindr":  # the split is by study: no study on both sides
        assert not {r.group for r in tests} & {r.group for r in report.records if r.split != "test"}


def test_views_reported(scanned):
    _, made, report = scanned
    pool_views: dict[str, int] = {}
    for record in report.records:
        if record.split != "test":
            pool_views[record.view] = pool_views.get(record.view, 0) + 1
    assert pool_views == made.views


# what each stand-in leaves out, by the reason the report gives (the maker's own names on the right)
LEFT_OUT = {
    "vindr": {},
    "rsna": {"'density' is blank": "blank_density"},
    "cbis_ddsm": {"'breast_density': density 0 (not assessed)": "density_0"},
    "inbreast": {"'ACR' is blank": "blank_acr"},
    "embed": {"'tissueden' is blank": "blank_density", "'tissueden': tissueden 5 (normal male breast)": "male_density_5",
              "not a standard 2-D mammogram (FinalImageType is not 2D, e.g. a synthesized C-View)": "cview",
              "spot compression / magnification view (spot_mag)": "spot_mag"},
    "kau_bcmd": {"'Percentage of grandular tissue(density)': ambiguous bin 0%-50% (spans A and B)": "ambiguous_density",
            "image not in this download": "image_missing"},
}


def test_unlabelled_rows_are_counted_by_reason(scanned):
    name, made, report = scanned
    left = report.left_out()
    for reason, theirs in LEFT_OUT[name].items():
        assert left.get(reason) == made.unlabelled[theirs], (reason, left)
    if name == "kau_bcmd":  # rows listed twice are merged (a note), and the =COUNT() row below the data is no image
        assert made.unlabelled["duplicate_row"] == 4 and any("4 rows list an image an earlier row" in n
                                                             for n in report.notes)
        assert left.get("'Percentage of grandular tissue(density)' is blank") == 1
    else:
        assert sum(left.values()) == made.n_unlabelled_rows


def test_cbis_per_view_patient_id_is_never_the_group(tmp_path):
    made = MAKERS["cbis_ddsm"](tmp_path / "download")
    report = scan_dataset(dataset_spec(str(made.root)))
    # the CSV's woman, not the DICOM's per-view case name: fewer groups than images
    assert len({r.group for r in report.records}) < len(report.records) / 1.5
    assert any("both sides of the dataset's official split" in w for w in _split_warnings(report))


def _split_warnings(report) -> list[str]:
    from mammo_tui.data.split import held_out_split

    return held_out_split(report.records, 0.2, 0).warnings


def test_plan_json_names_the_layout_and_the_women(standin):
    name, made = standin
    proc = mammo("plan", made.root, "--json", cwd=made.root.parent)
    assert_clean(proc, 0)
    plan = json.loads(proc.stdout)
    assert plan["dataset"]["layout"] == LAYOUT_OF[name] and plan["can_train"]
    assert plan["dataset"]["n_test_images"] == sum(made.test_class_counts.values())


def test_layout_flag_forces_one_and_an_unknown_one_is_named(tmp_path):
    (tmp_path / "meta.csv").write_text("a,b\n1,2\n")
    proc = mammo("plan", tmp_path, cwd=tmp_path)
    assert_clean(proc, 2, "not a dataset layout", "--layout NAME", "--dataset FILE.toml")
    assert_clean(mammo("plan", tmp_path, "--layout", "nope", cwd=tmp_path), 2, "unknown layout 'nope'", "vindr_mammo")


def test_layouts_command_prints_a_copyable_description(tmp_path):
    out = assert_clean(mammo("layouts", cwd=tmp_path), 0, *layout_names())
    assert "--dataset" in out
    text = assert_clean(mammo("layouts", "inbreast", cwd=tmp_path), 0)
    (tmp_path / "mine.toml").write_text(text)
    from mammo_tui.data.description import load_description

    assert load_description(tmp_path / "mine.toml").image_glob == load_layout("inbreast").image_glob


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_train_headless_on_the_folder_as_downloaded(name, tmp_path):
    made = MAKERS[name](tmp_path / "download")
    proc = mammo("train", "--no-ui", made.root, "--outdir", tmp_path / "runs", *FAST, cwd=tmp_path)
    assert_clean(proc, (0, 3))
    run = next((tmp_path / "runs").iterdir())
    recorded = json.loads((run / "dataset.json").read_text())["spec"]
    assert recorded["description"]["name"] == LAYOUT_OF[name]  # resume / eval read it the same way
    sides = [line.rsplit(",", 1)[-1] for line in (run / "splits.csv").read_text().splitlines()[1:]]
    assert sides.count("test") == sum(made.test_class_counts.values())
    summary = json.loads((run / "summary.json").read_text())
    if sides.count("test"):
        assert summary["test_metrics"]["n_images"] == sides.count("test")
    else:
        assert summary["test_metrics"] is None


def test_rows_add_up(scanned):
    """Every row read is usable, merged into an image listed before, or left out by reason."""
    _, _, report = scanned
    left = sum(report.left_out().values())
    assert report.rows_read == report.rows_usable + left + len(report.blocking_problems())


def test_cbis_images_nested_by_the_nbia_retriever_are_found(tmp_path):
    """The NBIA Data Retriever writes CBIS-DDSM/ inside manifest-<id>/; the CSVs sit on top."""
    import shutil

    made = MAKERS["cbis_ddsm"](tmp_path / "download")
    (made.root / "manifest-1601570342867").mkdir()
    shutil.move(str(made.root / "CBIS-DDSM"), str(made.root / "manifest-1601570342867" / "CBIS-DDSM"))
    report = scan_dataset(dataset_spec(str(made.root)))
    assert len([r for r in report.records if r.split != "test"]) == made.n_labelled_images
    assert report.blocking_problems() == []


def test_the_folder_above_the_download_works_too(tmp_path):
    """INbreast unpacks into "INbreast Release 1.0/": given the folder above it, the table is found one
    level down and the images are looked for beside it."""
    made = MAKERS["inbreast"](tmp_path / "above" / "INbreast Release 1.0")
    report = scan_dataset(dataset_spec(str(tmp_path / "above")))
    assert report.layout == "inbreast" and len(report.records) == made.n_labelled_images
