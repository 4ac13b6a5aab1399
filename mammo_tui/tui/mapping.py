"""Wizard step 1b: map the columns of a table mammo-tui does not recognise.

The table's columns with sample values, the guesses for image path / label / patient / study /
view / split, and a live count of the first rows that resolve to a file and whose label maps. The
user fixes what is wrong, saves the description for headless use (ctrl+s) and goes on (enter).
Keyboard-only; fits 80x24 (the body scrolls).
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Select, Static

from mammo_tui.data.inputs import MappingFlags

# (MappingFlags field, label, placeholder)
FIELDS = [
    ("image_col", "Image path column", "a column with each image's path"),
    ("path_template", "or a path template", "images/{study_id}/{image_id}.dcm"),
    ("image_glob", "or a glob (one match)", "AllDICOMs/{File Name}_*.dcm"),
    ("label_col", "Label column", "the density column"),
    ("patient_col", "Patient column", "the woman: the unit of the split"),
    ("study_col", "Study column", "one exam (accession)"),
    ("view_col", "View column", "CC, MLO, ..."),
    ("split_col", "Official split column", "rows saying test are held out"),
]
PREVIEW_DELAY_S = 0.3  # typing pauses this long before the counts are read again


class MappingScreen(ModalScreen):
    """Dismisses with a DatasetSpec (the table read through the mapping), or None (back)."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save description", priority=True),
        Binding("escape", "back", "Back"),
        Binding("f1", "help", "Help", priority=True),
    ]

    def __init__(self, table_path: str, image_root: str | None = None) -> None:
        super().__init__()
        from mammo_tui.data.mapping import guess_mapping
        from mammo_tui.data.table import read_table

        self.table = read_table(table_path)
        self.image_root = image_root or str(Path(table_path).expanduser().resolve().parent)
        self.guess = guess_mapping(self.table)
        self._timer = None

    def compose(self) -> ComposeResult:
        from mammo_tui.data.mapping import samples

        yield Header()
        with VerticalScroll(id="mapping-body"):
            yield Static(Text(f"Step 1 of 4 · Map the columns of {self.table.path.name}", style="bold"),
                         classes="step-title")
            yield Static("mammo-tui does not know this table: say where the images, labels and patients are. "
                         "The guesses are filled in; the counts below follow what you type.", classes="hint")
            table = DataTable(id="columns", cursor_type="row", zebra_stripes=True)
            table.add_columns("column", "sample values")
            for i, column in enumerate(self.table.columns):
                table.add_row(column, ", ".join(samples(self.table, i)))
            yield table
            for name, label, placeholder in FIELDS:
                with Horizontal(classes="mapping-row"):
                    yield Label(label, classes="mapping-label")
                    yield Input(getattr(self.guess, name) or "", placeholder=placeholder, compact=True, id=name)
            with Horizontal(classes="mapping-row"):
                yield Label("Label values read as", classes="mapping-label")
                yield Select([("BI-RADS (A-D, 1-4, DENSITY C)", "birads"), ("percentage bins (0%-25% ...)", "percent")],
                             value=self.guess.label_map or "birads", allow_blank=False, compact=True, id="label_map")
            with Horizontal(classes="mapping-row"):
                yield Label("Images under", classes="mapping-label")
                yield Input(self.image_root, compact=True, id="image_root")
            yield Static("", id="mapping-preview")
            with Horizontal(classes="buttons"):
                yield Button("Use this mapping (enter)", variant="primary", id="use", compact=True)
                yield Button("Save description (ctrl+s)", id="save", compact=True)
                yield Button("Back (esc)", id="back", compact=True)
            yield Static("", id="mapping-error", classes="error-text")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "new run: map the columns"
        self.query_one("#image_col", Input).focus()
        self._update_preview()

    # -- the mapping -------------------------------------------------------------------------------
    def flags(self) -> MappingFlags:
        values = {name: self.query_one(f"#{name}", Input).value.strip() or None for name, _, _ in FIELDS}
        return MappingFlags(**values, label_map=str(self.query_one("#label_map", Select).value))

    def root(self) -> str:
        return self.query_one("#image_root", Input).value.strip() or self.image_root

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(PREVIEW_DELAY_S, self._update_preview)

    def _update_preview(self) -> None:
        from mammo_tui.data.mapping import preview

        flags = self.flags()
        if not (flags.image_col or flags.path_template or flags.image_glob):
            text = "say how a row names its image: a path column, a template or a glob"
        else:
            text = preview(self.table, flags, self.root()).line()
        self.query_one("#mapping-preview", Static).update(Text(text))

    def _spec(self):
        from mammo_tui.data.inputs import dataset_spec

        return dataset_spec(csv=str(self.table.path), image_root=self.root(), flags=self.flags())

    # -- actions -----------------------------------------------------------------------------------
    @on(Input.Submitted)
    @on(Button.Pressed, "#use")
    def action_use(self) -> None:
        from mammo_tui.errors import MammoError

        try:
            spec = self._spec()
        except MammoError as exc:
            self.query_one("#mapping-error", Static).update(str(exc))
            return
        self.dismiss(spec)

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        from mammo_tui.data.mapping import save_description
        from mammo_tui.errors import MammoError

        target = self.table.path.with_name(f"{self.table.path.stem}.dataset.toml")
        try:
            spec = self._spec()
            written = save_description(spec.description, target)
        except (MammoError, OSError) as exc:
            self.query_one("#mapping-error", Static).update(str(exc))
            return
        self.query_one("#mapping-error", Static).update(
            f"saved {written}; headless: mammo-tui train --no-ui {spec.root} --dataset {written}")

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.dismiss(None)

    def action_help(self) -> None:
        self.notify("Tab moves between fields; a template names columns in braces, e.g. images/{id}.dcm; "
                    "enter uses the mapping; ctrl+s saves it as a description for `--dataset`.",
                    title="mapping the columns", timeout=8)
