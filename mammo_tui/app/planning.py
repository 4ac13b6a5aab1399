"""Planning, as one stage: dataset -> scan -> fingerprint -> a plan (the config and its
preprocessing as one value). The only place a plan is made; `plan`, the wizard, `train`, `cv` and
`sweep` (base = auto) all come through here, so the same flags give the same config everywhere.

Plain Python (no torch): the wizard plans at start-up. The scan decodes each image once: with the
preprocessing the plan will choose known before the scan (expected_preprocessing), that decode
also fills the preprocess cache, and training decodes nothing again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from mammo_tui.app.requests import TrainRequest
from mammo_tui.errors import MammoError
from mammo_tui.preprocessing import Preprocessing

Progress = Callable[[int, int], None]


@dataclass
class Planned:
    """A dataset read and planned: what `plan` prints and what `train` trains on."""

    spec: Any  # DatasetSpec, resolved (the layout recognised once)
    report: Any  # ValidationReport
    fingerprint: Any  # Fingerprint
    plan: Any  # planner.Plan

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.of(self.plan.config)

    def refusal(self, skip_bad_rows: bool) -> str | None:
        """Why train would refuse this dataset (None: it trains); plan says the same."""
        from mammo_tui.prepare import train_refusal

        return train_refusal(self.report, skip_bad_rows)

    def prepared(self, skip_bad_rows: bool):
        """The dataset to train on (prepare.PreparedDataset), or the DatasetError that says why not."""
        from mammo_tui.prepare import prepared_from

        return prepared_from(self.spec, self.report, skip_bad_rows, self.fingerprint)


AUTO = "auto"  # make_plan's device: the user's `device` key, else this box's


def make_plan(fingerprint: Any, overrides: Mapping[str, Any] | None = None, demo: bool = False, *,
              check_weights: bool = True, weights_probe: Callable | None = None, device: str | None = AUTO):
    """The decision flow's plan for a fingerprint with the user's keys on top: the one call of
    planner.plan_for. Pretrained weights are looked for with weights.weights_status (or
    `weights_probe`; check_weights=False: assumed available, not checked). device: AUTO sizes the
    images for the device the user named, else this box's; None keeps the presets' size (previews)."""
    from mammo_tui.planner import plan_for, planning_device

    if weights_probe is None and check_weights:
        from mammo_tui.weights import weights_status as weights_probe
    if device == AUTO:
        device = planning_device(dict(overrides or {}))
    return plan_for(fingerprint, overrides, demo=demo, weights_probe=weights_probe, device=device)


def expected_preprocessing(overrides: Mapping[str, Any] | None = None, demo: bool = False) -> Preprocessing:
    """The preprocessing the plan will choose, known before the scan: the user's keys, else the
    demo preset's sizing, else the size every preset trains at on this device (a GPU's 512 px
    for full-field images; the plan keeps the presets' size for small images and training then
    decodes those, small, images again)."""
    from mammo_tui.config import TrainConfig, load_preset
    from mammo_tui.planner import DEMO_PRESET, DEVICE_IMG_SIZE, planning_device

    user = dict(overrides or {})
    size = user.get("img_size")
    if size is None:
        device = planning_device(user)
        size = load_preset(DEMO_PRESET)["img_size"] if demo else (
            DEVICE_IMG_SIZE["cuda"] if device == "cuda" else load_preset("head_only")["img_size"])
    crop = user.get("crop_breast", TrainConfig().crop_breast)
    return Preprocessing(int(size), bool(crop))


def plan_dataset(spec, overrides: Mapping[str, Any] | None = None, *, demo: bool = False,
                 progress: Progress | None = None, workers: int | None = None,
                 weights_probe: Callable | None = None, before_plan: Callable[[], None] | None = None,
                 preprocessing: Preprocessing | None = None) -> Planned:
    """Read the dataset (every image checked, and cached at the expected preprocessing, or at
    `preprocessing` when the user's preset decides it), take its fingerprint and plan it.
    before_plan: called between the scan and the plan (the wizard says "checking for pretrained
    weights" there: the check may wait on the network)."""
    from mammo_tui.data.fingerprint import fingerprint
    from mammo_tui.data.sources import scan_dataset

    spec = spec.resolved()
    user = dict(overrides or {})
    if workers is None and user.get("preprocess_workers") is not None:
        workers = int(user["preprocess_workers"])
    report = scan_dataset(spec, check_images=True, progress=progress, workers=workers,
                          preprocessing=preprocessing or expected_preprocessing(user, demo))
    fp = fingerprint(report)
    if before_plan is not None:
        before_plan()
    return Planned(spec, report, fp, make_plan(fp, user, demo, weights_probe=weights_probe))


def dataset_of(request: TrainRequest):
    """The request's DatasetSpec: the demo's (written once into the cache) or the user's."""
    from mammo_tui.prepare import ensure_demo_dataset

    spec = ensure_demo_dataset(request.demo_size) if request.demo else request.dataset
    if spec is None:
        raise MammoError("no dataset given: pass --demo, --csv FILE [--dicom-root DIR] or --images DIR")
    return spec


def resolve_auto(request: TrainRequest, progress: Progress | None = None) -> tuple[TrainRequest, Any, Any]:
    """(request, prepared, plan): a request whose config is "preset auto" gets the plan's config
    (a CV plans once for all its folds, so every fold trains the same config and cv.json records
    it), with the dataset the plan read and the plan itself for the run record. A request with a
    config (a preset) or a resume comes back as it is, with (None, None)."""
    if request.config is not None or request.resume:
        return request, None, None
    planned = plan_dataset(dataset_of(request), request.overrides, demo=request.demo, progress=progress)
    prepared = planned.prepared(request.skip_bad_rows)
    plan = planned.plan
    request = dataclasses.replace(request, config=plan.config, preset=plan.preset,
                                  origin=f"preset auto: {plan.headline}")
    return request, prepared, plan
