"""Wizard step 4: the preset's fields, editable, with inline warnings; launch or save a preset TOML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, Switch

from mammo_tui.app.requests import TrainRequest
from mammo_tui.config import CHOICES, TrainConfig
from mammo_tui.errors import ConfigError
from mammo_tui.prepare import DEMO_SIZE
from mammo_tui.tui.dialogs import ConfirmScreen
from mammo_tui.tui.job import VALIDATION_CHOICES, WizardState
from mammo_tui.tui.step import WizardStep

# (key, label, widget kind) in form order; kinds: select | int | float | bool
FIELDS: list[tuple[str, str, str]] = [
    ("arch", "arch", "select"),
    ("freeze", "freeze", "select"),
    ("sampler", "sampler", "select"),
    ("class_weights", "class weights", "select"),
    ("loss", "loss", "select"),
    ("on_collapse", "on collapse", "select"),
    ("lr", "lr", "float"),
    ("epochs", "epochs", "int"),
    ("batch_size", "batch size", "int"),
    ("img_size", "img size", "int"),
    ("warmup_epochs", "warmup epochs", "int"),
    ("augment", "augment", "bool"),
    ("pretrained", "pretrained", "bool"),
]


def validation_choices(folds: int = 0) -> list[tuple[str, int]]:
    """The validation choices, with `cv --folds K` among them when K is not one of the usual."""
    if folds and folds not in dict((v, k) for k, v in VALIDATION_CHOICES):
        return sorted([*VALIDATION_CHOICES, (f"{folds}-fold CV", folds)], key=lambda choice: choice[1])
    return list(VALIDATION_CHOICES)


def cv_warnings(folds: int, class_counts: list[int] | None) -> list[str]:
    """A class with fewer images than folds is missing from some folds' validation sets."""
    from mammo_tui.labels import CLASS_NAMES

    if not folds or not class_counts:
        return []
    rare = [f"{name} ({count})" for name, count in zip(CLASS_NAMES, class_counts) if 0 < count < folds]
    if not rare:
        return []
    return [f"{folds}-fold CV: class {', '.join(rare)} has fewer images than folds, so some folds "
            "validate without it and their κ / recall say little about it. Use fewer folds."]


def initial_config(w: WizardState) -> tuple[TrainConfig, str, str]:
    """(config, preset name, where it came from) for the form: the plan's config, which is what
    `train` without --preset trains for the same dataset and flags."""
    if w.user_config is not None:
        return w.user_config, w.user_preset, "your --preset / flags"
    origin = f"the decision flow: preset auto: {w.plan.headline}"
    if w.demo:
        origin += ", sized for a CPU by the demo preset"
    if w.user_overrides:
        origin += ", with your flags"
    return w.plan.config, w.plan.preset, origin


def form_weights(cfg: TrainConfig, plan):
    """Whether this config's pretrained weights exist (a WeightsStatus). The plan checked the
    network for its own arch; another arch or file typed in the form is checked on disk only."""
    from mammo_tui.weights import weights_status

    known = getattr(plan, "weights", None)
    if known is not None and (known.arch, cfg.pretrained) == (cfg.arch, True) and not cfg.weights:
        return known
    return weights_status(cfg.arch, cfg.weights, cfg.pretrained, check_network=False)


def weights_line(status) -> Text:
    """The weights status as the configuration step shows it, before launch."""
    if status.available:
        return Text(f"✔ pretrained weights: {status.detail}", style="green")
    if status.source == "off":
        return Text(f"○ from scratch: {status.detail}", style="yellow")
    return Text(f"✖ {status.detail}", style="bold red")


class ConfigScreen(WizardStep):
    HELP_TITLE = "wizard 4/4: configuration"
    HELP_TEXT = ("Edit any field (tab / shift+tab move, enter opens a list). Warnings name collapse "
                 "risks; errors block the launch. Validation: one patient-grouped split, or K-fold "
                 "cross-validation (K runs, mean ± std). F5 launches training; F2 saves the config as a "
                 "preset TOML at the path typed below (use it later with --preset FILE).")
    BINDINGS = [
        Binding("f5", "launch", "Launch", priority=True),
        Binding("f2", "save", "Save preset", priority=True),
        Binding("ctrl+s", "save", "Save preset", show=False, priority=True),
        Binding("escape", "back", "Back"),
        Binding("f1", "help", "Help", priority=True),  # "?" types into the fields
    ]

    def __init__(self, wizard: WizardState) -> None:
        super().__init__(wizard)
        self.base, self.preset, self.origin = initial_config(wizard)

    def initial(self, widget_id: str, default: Any) -> Any:
        """A field's value when the screen opens: the user's earlier edit, else the config's."""
        return self.wizard.edits.get(widget_id, default)

    def compose(self) -> ComposeResult:
        values = self.base.to_dict()
        yield Header()
        with VerticalScroll(id="wizard-body"):
            yield Static(Text("Step 4 of 4 · Configuration", style="bold"), classes="step-title")
            yield Static(Text(f"From {self.origin}", style="dim"), classes="hint")
            yield Static("", id="weights-status")
            with Grid(id="form"):
                for key, label, kind in FIELDS:
                    yield Label(label, classes="field-label")
                    widget_id = f"f-{key}"
                    if kind == "select":
                        yield Select([(c, c) for c in CHOICES[key]],
                                     value=self.initial(widget_id, values[key]),
                                     allow_blank=False, compact=True, id=widget_id)
                    elif kind == "bool":
                        yield Switch(value=bool(self.initial(widget_id, values[key])), id=widget_id)
                    else:
                        default = repr(values[key]) if kind == "float" else str(values[key])
                        yield Input(self.initial(widget_id, default),
                                    type="number" if kind == "float" else "integer", compact=True,
                                    id=widget_id)
                yield Label("validation", classes="field-label")
                folds = getattr(self.app, "cv_folds", 0)
                yield Select(validation_choices(folds), value=self.initial("cv-folds", folds), allow_blank=False,
                             compact=True, id="cv-folds")
                yield Label("run name", classes="field-label")
                yield Input(self.initial("run-name", getattr(self.app, "run_name", None) or ""),
                            placeholder="automatic", compact=True, id="run-name")
            yield Static("", id="config-errors", classes="error-text")
            yield Static("", id="config-warnings", classes="warning-text")
            with Horizontal(classes="buttons"):
                yield Button("Launch (F5)", variant="success", id="launch", compact=True)
                yield Button("Save preset (F2)", id="save", compact=True)
                yield Input(self.initial("preset-path", ""), placeholder="preset file, e.g. my-preset.toml",
                            compact=True, id="preset-path")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "new run: configuration"
        self.query_one("#launch", Button).focus()
        self.validate()

    # -- validation ------------------------------------------------------------------------------
    def form_values(self) -> tuple[dict[str, Any], list[str]]:
        """Raw form values checked one by one with config.coerce; (values, field errors)."""
        from mammo_tui.config import coerce

        values: dict[str, Any] = {}
        errors: list[str] = []
        for key, _, kind in FIELDS:
            widget = self.query_one(f"#f-{key}")
            raw = widget.value
            if kind in ("int", "float"):
                raw = raw.strip()
                if not raw:
                    errors.append(f"{key}: empty")
                    continue
            try:
                values[key] = coerce(key, raw, source="form")
            except ConfigError as exc:
                errors.append(str(exc).removeprefix("form: "))
        return values, errors

    def validate(self) -> TrainConfig | None:
        """Show errors and warnings inline; the config when it is valid."""
        from mammo_tui.config import from_mapping

        values, errors = self.form_values()
        cfg = None
        if not errors:
            try:
                cfg = from_mapping({**self.base.to_dict(), **values}, source="config")
            except ConfigError as exc:
                errors.append(str(exc).removeprefix("config: "))
        self._show("#config-errors", "\n".join(f"✖ {e}" for e in errors))
        fp = self.wizard.fingerprint
        warnings: list[str] = []
        if cfg is not None:
            from mammo_tui.planner import config_warnings

            status = form_weights(cfg, self.wizard.plan)
            self.query_one("#weights-status", Static).update(weights_line(status))
            warnings = config_warnings(cfg, getattr(fp, "n_images", None), getattr(fp, "imbalance_ratio", None),
                                       status)
        warnings += cv_warnings(self.query_one("#cv-folds", Select).value, getattr(fp, "class_counts", None))
        self._show("#config-warnings", "\n".join(f"▲ {w}" for w in warnings))
        self.query_one("#launch", Button).disabled = cfg is None
        return cfg

    def _show(self, selector: str, text: str) -> None:
        widget = self.query_one(selector, Static)
        widget.update(Text(text))
        widget.set_class(not text, "empty")

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    def _changed(self, event) -> None:
        widget = event.control
        if widget.id:  # kept for going back and forward, and for a return from the dashboard
            self.wizard.edits[widget.id] = widget.value
        if widget.id in ("run-name", "preset-path"):
            return
        self.validate()

    # -- launch / save ---------------------------------------------------------------------------
    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        cfg = self.validate()
        if cfg is None:
            self.notify("fix the errors first", severity="error", timeout=4)
            return
        status = form_weights(cfg, self.wizard.plan)
        if cfg.pretrained and not status.available:
            # the engine would fail on its first step; say so now, with what to do
            self.app.push_screen(ConfirmScreen(
                f"The pretrained weights are not available: {status.detail}\n\nThe launch will fail "
                "unless they can be downloaded. Set pretrained off to train from scratch. Launch anyway?",
                yes="Launch anyway"), lambda yes: self._launch(cfg) if yes else None)
            return
        self._launch(cfg)

    def _launch(self, cfg: TrainConfig) -> None:
        w = self.wizard
        name = self.query_one("#run-name", Input).value.strip()  # pre-filled from --run-name
        job = TrainRequest(
            config=cfg, dataset=None if w.demo else w.spec, demo=w.demo,
            demo_size=w.demo_size or DEMO_SIZE, outdir=str(getattr(self.app, "runs_root", "runs")),
            run_name=name or None, skip_bad_rows=w.skip_bad_rows,
            preset=self.preset or "custom", cv_folds=self.query_one("#cv-folds", Select).value,
            origin=self.origin if cfg == self.base else f"{self.origin}, edited in the wizard")
        self.app.launch(job, wizard=w)

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        cfg = self.validate()
        path_input = self.query_one("#preset-path", Input)
        if cfg is None:
            self.notify("fix the errors first", severity="error", timeout=4)
            return
        raw = path_input.value.strip()
        if not raw:
            self.notify("type the preset file's path first (e.g. my-preset.toml)", timeout=4)
            path_input.focus()
            return
        path = Path(raw).expanduser()
        if path.suffix != ".toml":
            path = path.with_suffix(".toml")
        if path.exists():
            self.app.push_screen(ConfirmScreen(f"{path} exists. Overwrite it?", yes="Overwrite"),
                                 lambda yes: self._write_preset(path, cfg) if yes else None)
        else:
            self._write_preset(path, cfg)

    def _write_preset(self, path: Path, cfg: TrainConfig) -> None:
        from mammo_tui.config import to_toml

        source = "demo dataset" if self.wizard.demo else getattr(self.wizard.fingerprint, "source", "")
        description = f"saved from the wizard ({source})".replace('"', "'")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(to_toml(cfg, description=description), encoding="utf-8")
        except OSError as exc:
            self._show("#config-errors", f"✖ cannot write {path}: {exc.strerror or exc}")
            return
        self.notify(f"saved {path}; use it with --preset {path}", timeout=6)
