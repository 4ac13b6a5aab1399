"""The wizard's mapping step for a table it does not recognise: guesses, live counts, fixing a
field, saving the description for headless use, and going on to the fingerprint. Keyboard-only."""

from __future__ import annotations

from pathlib import Path

from corpus import png
from textual.widgets import Input, Select

from mammo_tui.data.description import load_description
from mammo_tui.data.mapping import guess_mapping, preview
from mammo_tui.data.table import read_table
from mammo_tui.tui.app import MammoApp
from mammo_tui.tui.fingerprint_view import FingerprintScreen
from mammo_tui.tui.mapping import MappingScreen
from tui_helpers import async_test, screen_text, wait_until


def _unknown_table(root: Path) -> Path:
    """A research group's own export: nothing mammo-tui knows by name except what it can guess."""
    (root / "scans").mkdir(parents=True)
    rows = ["Scan File;Woman;breast density;View;Age"]
    for c, letter in enumerate("ABCD"):
        for i in range(4):
            png(root / "scans" / f"{letter}{i}.png", 40 + 50 * c)
            rows.append(f"scans/{letter}{i}.png;W{letter}{i % 2};DENSITY {letter};{'CC' if i % 2 else 'MLO'};5{i}")
    rows.append("scans/missing.png;W9;;CC;60")  # no label: counted, never blocking
    (root / "export.csv").write_text("\n".join(rows) + "\n")
    return root / "export.csv"


def test_guesses_and_preview_read_the_table(tmp_path):
    table = read_table(_unknown_table(tmp_path))
    guess = guess_mapping(table)
    assert (guess.image_col, guess.label_col, guess.patient_col, guess.view_col) == (
        "Scan File", "breast density", "Woman", "View")
    assert guess.label_map == "birads"
    shown = preview(table, guess, str(tmp_path))
    assert (shown.rows, shown.resolved, shown.mapped, shown.left_out) == (17, 16, 16, 1)
    guess.label_col = "Age"
    assert "not mapped: '50', '51'" in preview(table, guess, str(tmp_path)).line()


@async_test
async def test_the_mapping_step_from_an_unknown_table_to_the_fingerprint(tmp_path):
    table = _unknown_table(tmp_path)
    app = MammoApp("wizard", runs_root=str(tmp_path / "runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        screen.query_one("#layout", Select).value = "generic"
        await pilot.pause()
        screen.query_one("#first", Input).value = str(table)
        screen.query_one("#first", Input).focus()
        await pilot.press("enter")  # a generic CSV without image_path/label: the mapping step opens
        await wait_until(pilot, lambda: isinstance(app.screen, MappingScreen), what="the mapping step")
        mapping = app.screen
        await wait_until(pilot, lambda: "16 resolve to a file" in screen_text(app), timeout=10,
                         what="the live count")
        assert "16 labels map to A-D, 1 blank" in screen_text(app)
        # a wrong column is said at once, by name
        mapping.query_one("#label_col", Input).value = "Density!"
        await wait_until(pilot, lambda: "no column 'Density!'" in screen_text(app), timeout=10, what="the error")
        mapping.query_one("#label_col", Input).value = "breast density"
        await pilot.pause(0.5)
        await pilot.press("ctrl+s")
        saved = tmp_path / "export.dataset.toml"
        await wait_until(pilot, saved.is_file, timeout=10, what="the saved description")
        description = load_description(saved)
        assert (description.image_column, description.patient_column) == ("Scan File", "Woman")
        mapping.query_one("#image_col", Input).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, FingerprintScreen), what="the fingerprint")
        fp = app.screen.wizard.fingerprint
        assert fp.n_images == 16 and fp.n_patients == 8 and fp.left_out == {"'breast density' is blank": 1}
        assert "Left out" in screen_text(app)


def test_a_saved_description_trains_headless_as_the_wizard_read_it(tmp_path):
    from mammo_tui.data.inputs import dataset_spec
    from mammo_tui.data.mapping import save_description
    from mammo_tui.data.sources import scan_dataset

    table = _unknown_table(tmp_path)
    guess = guess_mapping(read_table(table))
    spec = dataset_spec(csv=str(table), flags=guess)
    saved = save_description(spec.description, tmp_path / "mine.toml")
    again = dataset_spec(str(tmp_path), description=str(saved))
    assert len(scan_dataset(again).records) == len(scan_dataset(spec).records) == 16


def test_a_downloaded_folder_in_step_one_is_read_by_its_layout(tmp_path):
    import pytest
    from standins import make_inbreast

    from mammo_tui.errors import DatasetError
    from mammo_tui.tui.wizard import mapping_table, spec_from_inputs

    made = make_inbreast(tmp_path / "INbreast")
    for choice in ("download", "reference", "generic"):  # a folder typed under any choice but class folders
        assert spec_from_inputs(choice, str(made.root), "").description["name"] == "inbreast"
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match="not a dataset layout"):
        spec_from_inputs("download", str(tmp_path / "other"), "")
    (tmp_path / "other" / "meta.csv").write_text("file,dens\na.png,A\n")
    assert mapping_table("download", str(tmp_path / "other")) == str(tmp_path / "other" / "meta.csv")
