"""From a dataset spec to a validated, split dataset (no torch; shared by CLI, TUI and engine)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mammo_tui.errors import DatasetError

DEMO_SIZE = 0.5


def ensure_demo_dataset(size: float = DEMO_SIZE, seed: int = 0, root: str | Path | None = None,
                        difficulty: float = 0.0):
    """The built-in demo dataset, generated once into the cache and reused.

    difficulty > 0 (see data/demo.py) gets its own cache folder; difficulty 0 keeps the old name.
    """
    from mammo_tui.data.cache import default_cache_root
    from mammo_tui.data.demo import demo_paths, make_demo_dataset
    from mammo_tui.data.sources import DatasetSpec

    hard = f"-difficulty{difficulty:g}" if difficulty else ""
    folder = Path(root) if root else default_cache_root() / f"demo-size{size:g}{hard}-seed{seed}"
    csv, dicom_root = demo_paths(folder / "labels.csv")
    if not csv.is_file():
        csv, dicom_root = demo_paths(make_demo_dataset(folder, size=size, seed=seed, difficulty=difficulty))
    return DatasetSpec(csv=str(csv), dicom_root=str(dicom_root))


@dataclass
class PreparedDataset:
    spec: object  # DatasetSpec
    report: object  # ValidationReport
    fingerprint: object  # Fingerprint
    warnings: list[str] = field(default_factory=list)

    @property
    def records(self):
        return self.report.records


MAX_WARNING_EXAMPLES = 3  # duplicate_content messages in the run log; dataset.json has every one


def _report_warnings(report) -> list[str]:
    """The validation report's non-blocking findings as run-log warnings (a few lines, not thousands)."""
    from mammo_tui.data.records import NON_REMOVING_KINDS, PROBLEM_KINDS

    warnings = []
    group_warning = report.group_warning()
    if group_warning:
        warnings.append(group_warning)
    warnings += [note for note in report.group_notes if note.startswith("WARNING")]
    for kind in (kind for kind in PROBLEM_KINDS if kind in NON_REMOVING_KINDS):
        found = [p.message for p in report.problems if p.kind == kind]
        if kind == "duplicate_content" and len(found) > MAX_WARNING_EXAMPLES:
            warnings.append(f"duplicate_content: {len(found)} images repeat an earlier image's bytes "
                            f"({report.leakage_risks} of them under another patient: leakage risk); "
                            "all listed in dataset.json")
            found = found[:MAX_WARNING_EXAMPLES]
        warnings += found
    return warnings


def train_refusal(report, skip_bad_rows: bool) -> str | None:
    """Why train refuses this dataset (problems that removed rows, without --skip-bad-rows); None
    when it trains. plan says the same from the same report: the two never disagree. Rows without
    a density label and excluded views are left out and counted, never a refusal."""
    if not report.blocking_problems() or skip_bad_rows:
        return None
    lines = "\n  ".join(report.summary_lines())
    return (f"the dataset has problems:\n  {lines}\n"
            "Fix them, or continue without the bad rows with --skip-bad-rows "
            "(they are listed in the run's dataset.json).")


def prepare_dataset(spec, skip_bad_rows: bool = False,
                    progress: Callable[[int, int], None] | None = None, workers: int | None = None,
                    preprocessing=None) -> PreparedDataset:
    """Scan + validate. Problems stop here unless the user chose to continue without bad rows.

    The images are decoded by `workers` processes; with the preprocessing (preprocessing.py: known
    before the scan from the config or the plan) that decode also fills the preprocess cache, so
    training decodes nothing again.
    """
    from mammo_tui.data.sources import scan_dataset

    spec = spec.resolved()  # the layout recognised once: the run records the description it read with
    report = scan_dataset(spec, check_images=True, progress=progress, workers=workers, preprocessing=preprocessing)
    return prepared_from(spec, report, skip_bad_rows)


def prepared_from(spec, report, skip_bad_rows: bool, fingerprint=None) -> PreparedDataset:
    """A scan's report as a dataset to train on, or the DatasetError that says why not."""
    from mammo_tui.data.fingerprint import fingerprint as fingerprint_of

    # An empty class or duplicate content removes no rows, so there is nothing to skip: reported
    # (warnings in the run log, all of them in dataset.json), not blocking.
    warnings = _report_warnings(report)
    refusal = train_refusal(report, skip_bad_rows)
    if refusal:
        raise DatasetError(refusal)
    if not report.records:
        raise DatasetError(f"{report.source}: no usable images")
    return PreparedDataset(spec=spec, report=report, fingerprint=fingerprint or fingerprint_of(report),
                           warnings=warnings)
