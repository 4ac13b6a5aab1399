"""Wizard step 1: pick a dataset (typed paths, a file browser, or the demo) and scan it.

The scan runs in a thread worker (it opens every image header); progress reaches the screen via
post_message. The later steps live in fingerprint_view.py, decision.py and configure.py and share
one WizardState (job.py); each step imports only the next one (step.py holds their base class).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Footer, Header, Input, Label, ProgressBar, Select, Static

from mammo_tui.console import format_duration
from mammo_tui.tui.job import WizardState
from mammo_tui.tui.messages import ScanDone, ScanProgress
from mammo_tui.tui.step import WizardStep

LAYOUTS = [
    ("Reference CSV + DICOM folders (AccessionNumber,Classification)", "reference"),
    ("Generic CSV (image_path,label[,patient_id,view])", "generic"),
    ("Class folders (A/ B/ C/ D/ or 1/ 2/ 3/ 4/)", "folders"),
    ("Dataset folder as downloaded (VinDr, RSNA, CBIS-DDSM, INbreast, EMBED, KAU-BCMD)", "download"),
    ("Any table: map its columns", "table"),
]
FIRST_LABELS = {"folders": ("Folder with one sub-folder per class", "path/to/images/"),
                "download": ("The dataset's top folder, as downloaded", "path/to/dataset/"),
                "table": ("The metadata table (CSV, TSV or .xlsx)", "path/to/metadata.csv")}
SECOND_LABEL = "DICOM root (one folder per accession; default: the CSV's dicom/ sub-folder, else its folder)"
PROGRESS_INTERVAL_S = 0.1  # scan progress messages: a few per second is enough


def spec_from_inputs(layout: str, first: str, second: str):
    """DatasetSpec from the form; a directory typed as the CSV means class folders."""
    from mammo_tui.data.sources import DatasetSpec
    from mammo_tui.errors import DatasetError

    first, second = first.strip(), second.strip()
    if not first:
        what = {"folders": "the class-folder directory", "download": "the dataset folder",
                "table": "the metadata table"}.get(layout, "the label CSV")
        raise DatasetError(f"type the path of {what}, or press ctrl+d for the demo dataset")
    path = Path(first).expanduser()
    if layout == "download":
        from mammo_tui.data.inputs import dataset_spec

        return dataset_spec(str(path))  # a public layout recognised, else class folders, else a clear error
    if path.is_dir() and layout != "folders":
        from mammo_tui.data.layouts import recognise

        found = recognise(path)  # a public dataset's folder typed under another choice still works
        if found is not None:
            return DatasetSpec(root=str(path), description=found.to_dict())
    if layout == "folders" or path.is_dir():
        return DatasetSpec(images=str(path))
    if layout == "reference":
        root = Path(second).expanduser() if second else default_dicom_root(path)
        return DatasetSpec(csv=str(path), dicom_root=str(root))
    return DatasetSpec(csv=str(path))


def mapping_table(layout: str, first: str) -> str | None:
    """The table the mapping step should open, or None: a table when asked for, a generic CSV
    without image_path/label columns, or the one table in a folder no layout recognises."""
    from mammo_tui.data.described import find_files
    from mammo_tui.data.layouts import recognise
    from mammo_tui.data.table import read_columns
    from mammo_tui.errors import MammoError

    path = Path(first.strip()).expanduser()
    if not first.strip() or not path.exists():
        return None
    if layout == "table" and path.is_file():
        return str(path)
    try:
        if layout == "generic" and path.is_file():
            columns = {c.strip().lower() for c in read_columns(path)}
            return None if {"image_path", "label"} <= columns else str(path)
        if layout == "download" and path.is_dir() and recognise(path) is None:
            tables = [p for suffix in ("csv", "tsv", "xlsx") for p in find_files(path, f"*.{suffix}")]
            return str(tables[0]) if len(tables) == 1 else None
    except MammoError:
        return None
    return None


def default_dicom_root(csv_path: Path) -> Path:
    """The CSV's folder, or its dicom/ sub-folder: the demo-data layout (and many exports) put
    the DICOM folders there, beside the CSV."""
    from mammo_tui.data.demo import DICOM_DIRNAME

    sub = csv_path.parent / DICOM_DIRNAME
    return sub if sub.is_dir() else csv_path.parent


class DatasetScreen(WizardStep):
    HELP_TITLE = "wizard 1/4: dataset"
    HELP_TEXT = ("Type the label CSV (and the DICOM root for the reference layout) or a folder with "
                 "one sub-folder per class, then press enter. ctrl+o browses for the path of the "
                 "focused field. ctrl+d uses the built-in synthetic demo dataset.")
    BINDINGS = [
        Binding("ctrl+d", "demo", "Demo dataset", priority=True),
        Binding("ctrl+o", "browse", "Browse", priority=True),
        Binding("ctrl+r", "runs", "Runs", priority=True, tooltip="browse and compare earlier runs"),
        # "?" would type into the path fields: F1 is the help key here.
        Binding("f1", "help", "Help", priority=True),
    ]

    def __init__(self, *, demo: bool = False, dataset: Any = None, user_config: Any = None,
                 user_overrides: dict | None = None, demo_size: float | None = None,
                 user_preset: str = "") -> None:
        super().__init__(WizardState(user_config=user_config, user_overrides=dict(user_overrides or {}),
                                     demo_size=demo_size, user_preset=user_preset or ""))
        self.autostart_demo = demo
        self.autostart_dataset = dataset
        self._last_input: Input | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="wizard-body"):
            yield Static(Text("Step 1 of 4 · Dataset", style="bold"), classes="step-title")
            yield Static("Point the wizard at your mammograms, or try the built-in demo dataset.",
                         classes="hint")
            yield Label("Layout")
            yield Select(LAYOUTS, value="reference", allow_blank=False, compact=True, id="layout")
            yield Label("Label CSV", id="first-label")
            yield Input(placeholder="path/to/labels.csv", compact=True, id="first")
            yield Label(SECOND_LABEL, id="second-label")
            yield Input(placeholder="path/to/dicom/", compact=True, id="second")
            with Horizontal(classes="buttons"):
                yield Button("Scan (enter)", variant="primary", id="scan", compact=True)
                yield Button("Demo dataset (ctrl+d)", id="demo", compact=True)
                yield Button("Browse (ctrl+o)", id="browse", compact=True)
            yield Static("", id="scan-status")
            yield ProgressBar(id="scan-progress", show_eta=False)
            yield Static("", id="scan-error", classes="error-text")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "mammo-tui"
        self.sub_title = "new run: dataset"
        self.query_one("#scan-progress").display = False
        self.query_one("#first", Input).focus()
        if self.autostart_dataset is not None or self.autostart_demo:
            # After the first frame: a fast scan must not push the next screen mid-mount.
            self.call_after_refresh(self._autostart)

    def _autostart(self) -> None:
        if self.autostart_dataset is not None:
            self._scan(self.autostart_dataset, demo=False)
        else:
            self.action_demo()

    # -- form ------------------------------------------------------------------------------------
    @on(Select.Changed, "#layout")
    def _layout_changed(self, event: Select.Changed) -> None:
        label, placeholder = FIRST_LABELS.get(str(event.value), ("Label CSV", "path/to/labels.csv"))
        self.query_one("#first-label", Label).update(label)
        self.query_one("#first", Input).placeholder = placeholder
        show_second = event.value in ("reference", "table")
        self.query_one("#second-label", Label).update(
            "Images under (default: the table's folder)" if event.value == "table" else SECOND_LABEL)
        self.query_one("#second").display = show_second
        self.query_one("#second-label").display = show_second

    def on_descendant_focus(self, event) -> None:
        if isinstance(event.widget, Input):
            self._last_input = event.widget

    @on(Input.Submitted)
    @on(Button.Pressed, "#scan")
    def _submit(self) -> None:
        from mammo_tui.errors import MammoError

        layout = str(self.query_one("#layout", Select).value)
        first, second = self.query_one("#first", Input).value, self.query_one("#second", Input).value
        table = mapping_table(layout, first)
        if table is not None:  # a table mammo-tui cannot read as it is: the mapping step
            self._map(table, second.strip() or None)
            return
        try:
            spec = spec_from_inputs(layout, first, second)
        except MammoError as exc:
            self._show_error(str(exc))
            return
        self._scan(spec, demo=False)

    def _map(self, table: str, image_root: str | None) -> None:
        from mammo_tui.errors import MammoError
        from mammo_tui.tui.mapping import MappingScreen

        try:
            screen = MappingScreen(table, image_root)
        except MammoError as exc:
            self._show_error(str(exc))
            return

        def mapped(spec) -> None:
            if spec is not None:
                self._scan(spec, demo=False)

        self.app.push_screen(screen, mapped)

    @on(Button.Pressed, "#demo")
    def action_demo(self) -> None:
        self._scan(None, demo=True)

    @on(Button.Pressed, "#browse")
    def action_browse(self) -> None:
        target = self._last_input or self.query_one("#first", Input)
        start = Path(target.value).expanduser() if target.value.strip() else Path.cwd()

        def chosen(path: Path | None) -> None:
            if path is not None:
                target.value = str(path)
                target.focus()

        self.app.push_screen(BrowseScreen(start), chosen)

    def action_runs(self) -> None:
        from mammo_tui.tui.runs import RunsScreen

        self.app.push_screen(RunsScreen(getattr(self.app, "runs_root", "runs")))

    def _show_error(self, text: str) -> None:
        self.query_one("#scan-error", Static).update(text)
        self.query_one("#scan-status", Static).update("")
        self.query_one("#scan-progress").display = False

    # -- scanning --------------------------------------------------------------------------------
    def _scan(self, spec: Any, demo: bool) -> None:
        self.query_one("#scan-error", Static).update("")
        what = "the demo dataset" if demo else spec.describe()
        self.query_one("#scan-status", Static).update(f"Scanning {what}…")
        bar = self.query_one("#scan-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        for button in self.query(Button):
            button.disabled = True
        size = self.wizard.demo_size or getattr(self.app, "demo_size", None)
        self._scan_worker(spec, demo, size, dict(self.wizard.user_overrides), self.wizard.user_config)

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def _scan_worker(self, spec: Any, demo: bool, demo_size: float | None, overrides: dict,
                     config: Any = None) -> None:
        try:
            from mammo_tui.app.planning import plan_dataset
            from mammo_tui.preprocessing import Preprocessing
            from mammo_tui.prepare import DEMO_SIZE, ensure_demo_dataset

            if demo:
                # The engine's own demo location (prepare.cache_root()), so training reuses it.
                demo_size = demo_size or DEMO_SIZE
                self.post_message(ScanProgress(0, 0, "writing the demo dataset (once)…"))
                spec = ensure_demo_dataset(demo_size)
            last = started = 0.0

            def progress(done: int, total: int) -> None:
                nonlocal last, started
                now = time.monotonic()
                started = started or now
                if now - last >= PROGRESS_INTERVAL_S or done == total:
                    last = now
                    rate = done / max(now - started, 1e-9)
                    eta = f", {rate:.1f} img/s, ETA {format_duration((total - done) / rate)}" if done and rate else ""
                    self.post_message(ScanProgress(done, total, eta))

            def before_plan() -> None:  # here, off the UI thread: the weights check may wait on the network
                self.post_message(ScanProgress(0, 0, "checking for pretrained weights…"))

            planned = plan_dataset(spec, overrides, demo=demo, progress=progress, before_plan=before_plan,
                                   preprocessing=Preprocessing.of(config) if config is not None else None)
            spec, report, fp, plan = planned.spec, planned.report, planned.fingerprint, planned.plan
            self.post_message(ScanDone(spec=spec, report=report, demo=demo, fingerprint=fp, plan=plan))
        except Exception as exc:  # noqa: BLE001 - DatasetError and unexpected ones: both shown inline
            self.post_message(ScanDone(error=exc, demo=demo))

    @on(ScanProgress)
    def _on_progress(self, message: ScanProgress) -> None:
        bar = self.query_one("#scan-progress", ProgressBar)
        if message.total:
            bar.update(total=message.total, progress=message.done)
            self.query_one("#scan-status", Static).update(  # stage: its rate and ETA
                f"Checking images: {message.done} / {message.total}{message.stage}")
        elif message.stage:
            self.query_one("#scan-status", Static).update(message.stage)

    @on(ScanDone)
    def _on_done(self, message: ScanDone) -> None:
        for button in self.query(Button):
            button.disabled = False
        if message.error is not None:
            self._show_error(str(message.error) or type(message.error).__name__)
            return
        self.query_one("#scan-progress").display = False
        self.query_one("#scan-status", Static).update("")
        w = self.wizard
        if (message.spec, message.demo) != (w.spec, w.demo):
            w.edits = {}  # another dataset: its plan's config, not the edits made for the last one
        w.spec, w.report, w.demo = message.spec, message.report, message.demo
        if message.demo:
            from mammo_tui.prepare import DEMO_SIZE

            w.demo_size = w.demo_size or getattr(self.app, "demo_size", None) or DEMO_SIZE
        w.fingerprint, w.plan = message.fingerprint, message.plan
        from mammo_tui.tui.fingerprint_view import FingerprintScreen

        self.app.push_screen(FingerprintScreen(w))


class BrowseScreen(ModalScreen[Path | None]):
    """A directory tree: enter picks a file; `s` picks the highlighted folder; backspace goes up."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("s", "select_folder", "Pick folder"),
        Binding("backspace", "up", "Parent folder"),
    ]

    def __init__(self, start: Path) -> None:
        super().__init__()
        start = start if start.is_dir() else start.parent
        self.start = start if start.is_dir() else Path.cwd()

    def compose(self) -> ComposeResult:
        with Vertical(id="browser"):
            yield Static(Text(f"Pick a file or folder · {self.start}", style="bold"), id="browse-title")
            yield DirectoryTree(self.start, id="tree")
            yield Static("enter: pick file / open folder · s: pick folder · backspace: parent · "
                         "esc: cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one(DirectoryTree).focus()

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(Path(event.path))

    def action_select_folder(self) -> None:
        tree = self.query_one(DirectoryTree)
        node = tree.cursor_node
        path = Path(node.data.path) if node is not None and node.data is not None else Path(tree.path)
        self.dismiss(path if path.is_dir() else path.parent)

    def action_up(self) -> None:
        tree = self.query_one(DirectoryTree)
        parent = Path(tree.path).resolve().parent
        tree.path = parent
        self.query_one("#browse-title", Static).update(
            Text(f"Pick a file or folder · {parent}", style="bold"))

    def action_cancel(self) -> None:
        self.dismiss(None)
