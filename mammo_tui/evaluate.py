"""Use a run's best checkpoint: evaluate it on another labelled set, or predict single images.

A cross-validation directory is used as an ensemble of its folds: every fold's best checkpoint
predicts, and the softmax probabilities are averaged (evaluate also reports each fold alone and
the mean ± std over folds). One code path serves both: `load_members` gives one member for a
run, one per usable fold for a CV.

The checkpoint is self-describing (arch, class names, image size, normalisation, config), so no
training flag has to be repeated. Images go through the training decode path (scan_dataset ->
PreprocessCache(img_size, crop_breast) -> ImageDataset(augment=False)): a model is only as good as the match
between the pixels it was trained on and the pixels it is shown.

torch is imported inside the functions, like everywhere outside engine/, so importing this module
(e.g. from the CLI's argument parser) stays cheap.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mammo_tui.errors import DatasetError, MammoError, RunDirError
from mammo_tui.metrics import compute_metrics
from mammo_tui.outputs import check_output, next_free
from mammo_tui.rundir import CHECKPOINT_DIR, SPLITS_FILE, atomic_write_text, read_summary, write_json

BEST_CHECKPOINT = "best.pt"
PREDICTIONS_FILE = "predictions.csv"
BATCH_SIZE = 64
# what fold models must agree on to share images and average (the preprocessing and the classes)
SHARED_KEYS = ("img_size", "crop_breast", "class_names")
# true_counts: which classes the evaluated set holds (stats.aggregate leaves absent ones out of recall means)
FOLD_METRICS = ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro", "accuracy", "recall_per_class",
                "true_counts")


# ---------------------------------------------------------------------------------------------
# the model


def load_run_model(run_dir: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) from RUN_DIR/checkpoints/best.pt."""
    from mammo_tui.engine.checkpoint import load_checkpoint, load_weights
    from mammo_tui.engine.models import build_model

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory. List runs with `mammo-tui runs`.")
    path = run_dir / CHECKPOINT_DIR / BEST_CHECKPOINT
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no {CHECKPOINT_DIR}/{BEST_CHECKPOINT}. The best checkpoint is "
                          "written when the first epoch finishes; see `mammo-tui report "
                          f"{run_dir}` for what happened to this run.")
    # weights_only=True (never unpickles objects), then the structure: keys, types, config, ranges
    checkpoint = load_checkpoint(path)
    if checkpoint.get("in_channels", 1) != 1:
        raise MammoError(f"{path}: expects {checkpoint['in_channels']!r} input channels; "
                         "this version reads single-channel mammograms only")
    # Architecture only: the trained weights below replace everything, so nothing is downloaded.
    classes = len(checkpoint["class_names"])
    model = build_model(checkpoint["arch"], classes, pretrained=False)
    load_weights(model, checkpoint["model"], path, f"a {checkpoint['arch']} with {classes} classes "
                                                   f"({', '.join(map(str, checkpoint['class_names']))})")
    model.to(device).eval()
    return model, checkpoint


def predict_probabilities(model: Any, checkpoint: dict[str, Any], images: np.ndarray,
                          device: str = "cpu", batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Softmax probabilities [N, classes] for preloaded [N, S, S] images in [0, 1]."""
    import torch
    from torch.utils.data import DataLoader

    from mammo_tui.data.dataset import ImageDataset
    from mammo_tui.preprocessing import NORM_MEAN, NORM_STD, Preprocessing

    n_classes = len(checkpoint["class_names"])
    if len(images) == 0:
        return np.zeros((0, n_classes), dtype=np.float64)
    trained = Preprocessing.from_checkpoint(checkpoint)
    mean, std = trained.mean, trained.std
    dataset = ImageDataset(images, np.zeros(len(images), dtype=np.int64), augment=False)
    chunks = []
    with torch.no_grad():
        for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
            if (mean, std) != (NORM_MEAN, NORM_STD):
                # trained under another normalisation: undo the current one, apply the model's own
                x = (x * NORM_STD + NORM_MEAN - mean) / std
            logits = model(x.to(device))
            chunks.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(chunks).double().numpy()


def training_preprocessing(checkpoint: dict[str, Any]) -> Any:
    """The PreprocessCache that gives the pixels the model was trained on: img_size and crop_breast
    from the checkpoint (one written before crop_breast existed trained without the crop).
    The normalisation is the checkpoint's too: predict_probabilities applies it."""
    from mammo_tui.data.cache import PreprocessCache
    from mammo_tui.preprocessing import Preprocessing

    return PreprocessCache.of(Preprocessing.from_checkpoint(checkpoint))


@dataclasses.dataclass
class Member:
    """One model behind RUN_DIR: the run's best checkpoint, or one fold's in a CV ensemble."""
    run_dir: Path
    model: Any
    checkpoint: dict[str, Any]
    fold: int | None = None  # the fold number; None for a plain run


def load_members(path: str | Path, device: str = "cpu") -> tuple[list[Member], list[str]]:
    """(members, warnings): one member for a run; for a CV, every fold with a best checkpoint.

    A fold without one is left out with a warning (the ensemble of the others is still useful);
    a CV without any raises RunDirError saying how to continue it.
    """
    from mammo_tui.rundir import is_cv_dir, read_group_manifest
    from mammo_tui.runread import fold_dirs
    from mammo_tui.stats import FINISHED

    path = Path(path).expanduser()
    if not is_cv_dir(path):
        return [Member(path, *load_run_model(path, device))], []
    k = int(read_group_manifest(path, "cv").get("folds") or 0)
    # folds the manifest expects but that were never started count as missing too
    dirs = sorted(set(fold_dirs(path)) | {path / f"fold-{i}" for i in range(1, k + 1)},
                  key=lambda d: int(d.name[5:]))
    members: list[Member] = []
    warnings: list[str] = []
    for fold_dir in dirs:
        if not (fold_dir / CHECKPOINT_DIR / BEST_CHECKPOINT).is_file():
            warnings.append(f"{fold_dir.name} has no {CHECKPOINT_DIR}/{BEST_CHECKPOINT}: left out of the ensemble")
            continue
        members.append(Member(fold_dir, *load_run_model(fold_dir, device), fold=int(fold_dir.name[5:])))
        status = (read_summary(fold_dir) or {}).get("status", "unknown")
        if status not in FINISHED:
            warnings.append(f"{fold_dir.name} has not finished ({status}): its best checkpoint so far is used")
    if not members:
        raise RunDirError(f"{path}: this cross-validation has no finished fold (no fold-N/{CHECKPOINT_DIR}/"
                          f"{BEST_CHECKPOINT}). Continue it with `mammo-tui cv --resume {path}`.")
    first = members[0]
    for member in members[1:]:
        for key in SHARED_KEYS:
            theirs, ours = member.checkpoint.get(key, False), first.checkpoint.get(key, False)
            if theirs != ours:
                raise MammoError(f"{path}: the folds' checkpoints disagree on {key} ({first.run_dir.name}: "
                                 f"{ours}, {member.run_dir.name}: {theirs}); "
                                 "their predictions cannot be averaged")
    return members, warnings


def _member_probabilities(members: Sequence[Member], images: np.ndarray, device: str) -> list[np.ndarray]:
    return [predict_probabilities(m.model, m.checkpoint, images, device) for m in members]


# ---------------------------------------------------------------------------------------------
# evaluate on another labelled set


def default_eval_name(spec: Any) -> str:
    """A file-name-safe name for a dataset spec: `inbreast-labels` for /data/inbreast/labels.csv."""
    if spec.images or spec.root:
        raw = Path(spec.images or spec.root).expanduser().resolve().name
    else:
        csv_path = Path(spec.csv).expanduser().resolve()
        raw = f"{csv_path.parent.name}-{csv_path.stem}" if csv_path.parent.name else csv_path.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.") or "dataset"


def _overlap_with_runs(run_dirs: Sequence[Path], records: Sequence[Any]) -> dict[str, int]:
    """How many evaluated images these runs saw (by path): train = in any run's training split;
    val = only ever in validation splits. For one run these are its plain train / val counts."""
    from mammo_tui.data.split import read_splits_csv

    splits = [read_splits_csv(d / SPLITS_FILE) for d in run_dirs if (d / SPLITS_FILE).is_file()]
    if not splits:
        return {}
    seen = [{split.get(record.path) for split in splits} for record in records]
    return {"train": sum("train" in s for s in seen), "val": sum("val" in s and "train" not in s for s in seen)}


def _overlap_warnings(overlap: dict[str, int], n: int, whose: str = "this run's") -> list[str]:
    warnings = []
    if overlap.get("train"):
        warnings.append(f"{overlap['train']} of the {n} images were in {whose} training split: the "
                        "metrics are optimistic, not an independent test")
    if overlap.get("val"):
        warnings.append(f"{overlap['val']} of the {n} images were in {whose} validation split, which "
                        "chose the best epoch: not an independent test")
    return warnings


def evaluate(run_dir: str | Path, spec: Any, skip_bad_rows: bool = False, name: str | None = None,
             device: str = "cpu", workers: int | None = None) -> dict[str, Any]:
    """Metrics of the run's best checkpoint on another labelled dataset; writes RUN_DIR/eval-<name>.json.

    Returns compute_metrics' dict (n, kappa_quadratic, confusion_matrix, ...) plus: eval_name,
    dataset, checkpoint, checkpoint_epoch, validation (the dataset's validation report),
    validation_summary (its lines), overlap (images shared with the run's split), warnings, output.
    Problems in the dataset stop here unless skip_bad_rows, as in training; a class missing from
    the set does not (evaluating on a set without class A images is legitimate).

    On a CV directory the top-level metrics are the ensemble's (mean of the folds' probabilities),
    so readers of one run's result read a CV's the same way; added: ensemble (True), folds_used,
    per_fold (each fold's checkpoint_epoch and FOLD_METRICS alone), aggregate (mean ± std over
    folds, as cv_summary.json); checkpoint lists the folds' checkpoints.
    """
    from mammo_tui.stats import aggregate
    from mammo_tui.data.cache import load_images
    from mammo_tui.data.sources import scan_dataset

    run_dir = Path(run_dir).expanduser()
    members, warnings = load_members(run_dir, device)
    checkpoint = members[0].checkpoint  # img_size and class_names: the same for every member
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") if name else default_eval_name(spec)
    output = run_dir / f"eval-{name or 'dataset'}.json"
    _check_writable(output)  # before the work, not after it
    report = scan_dataset(spec, check_images=True, workers=workers)  # None: all cores but one decode
    blocking = report.blocking_problems()  # an empty class or duplicate content removes nothing
    if blocking and not skip_bad_rows:
        lines = "\n  ".join(report.summary_lines())
        raise DatasetError(f"the evaluation dataset has problems:\n  {lines}\n"
                           "Fix them, or evaluate without the bad rows with --skip-bad-rows "
                           "(they are listed in the eval-*.json file).")
    records = report.records
    images = load_images(records, training_preprocessing(checkpoint), workers=workers)  # decoded once for all
    labels = np.array([record.label for record in records], dtype=np.int64)
    n_classes = len(checkpoint["class_names"])
    each = _member_probabilities(members, images, device)
    probs = np.mean(each, axis=0)  # one member: its own probabilities
    metrics = compute_metrics(labels, probs.argmax(axis=1), probs, n_classes)

    overlap = _overlap_with_runs([m.run_dir for m in members], records)
    cv = members[0].fold is not None
    checkpoints = [str(m.run_dir / CHECKPOINT_DIR / BEST_CHECKPOINT) for m in members]
    result = {
        **metrics,
        "eval_name": name,
        "run": run_dir.name,
        "dataset": spec.describe(),
        "spec": {"csv": spec.csv, "dicom_root": spec.dicom_root, "images": spec.images},
        "checkpoint": checkpoints if cv else checkpoints[0],
        "checkpoint_epoch": None if cv else checkpoint.get("epoch"),  # a CV's: in per_fold
        "class_names": list(checkpoint["class_names"]),
        "img_size": int(checkpoint["img_size"]),
        "skip_bad_rows": skip_bad_rows,
        "validation": report.to_dict(),
        "validation_summary": report.summary_lines(),
        "overlap": overlap,
        "warnings": warnings + _overlap_warnings(overlap, metrics["n"],
                                                 "at least one fold's" if cv else "this run's"),
        "created": time.time(),
        "output": str(output),
    }
    if cv:
        per_fold = []
        for member, fold_probs in zip(members, each):
            alone = compute_metrics(labels, fold_probs.argmax(axis=1), fold_probs, n_classes)
            per_fold.append({"fold": member.fold, "checkpoint_epoch": member.checkpoint.get("epoch"),
                             **{key: alone[key] for key in FOLD_METRICS}})
        result.update(ensemble=True, folds_used=[m.fold for m in members], per_fold=per_fold,
                      aggregate=aggregate([{"best_metrics": row} for row in per_fold]))
    write_json(output, result)
    return result


def _check_writable(output: Path) -> None:
    """eval records its result in the run directory: say at once when it cannot."""
    import tempfile

    if len(output.name.encode()) > 255:
        raise RunDirError(f"--name gives the file name {output.name[:40]}... ({len(output.name)} characters); "
                          "file names may have at most 255. Pick a shorter --name.")
    try:
        fd, probe = tempfile.mkstemp(dir=output.parent, prefix=".eval-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunDirError(f"cannot write {output}: {exc.strerror or exc}. eval records its result in the run "
                          f"directory; evaluate a writable copy instead (cp -r {output.parent} COPY, then "
                          "mammo-tui eval COPY ...).") from None


# ---------------------------------------------------------------------------------------------
# predict single images


def _load_each(paths: Sequence[str], cache: Any) -> tuple[np.ndarray, dict[int, str]]:
    """Decode every path like training does; a failure becomes a message, never an abort.

    (load_images stops at the first bad file; a prediction run must name every bad one.)
    """
    from mammo_tui.data.records import ImageReadError

    size = cache.img_size
    images = np.zeros((len(paths), size, size), dtype=np.float32)
    errors: dict[int, str] = {}

    def load_one(index: int) -> None:
        path = paths[index]
        if os.path.isdir(path):
            errors[index] = f"{path}: is a folder, not an image file (pass the files in it, e.g. {path}/*.dcm)"
            return
        if not os.path.exists(path):
            errors[index] = f"{path}: file not found"
            return
        try:
            images[index] = cache.load(path)
        except ImageReadError as exc:  # the kind first, as the dataset report lists them
            errors[index] = f"{exc.kind}: {exc.message}"
        except OSError as exc:
            errors[index] = f"{path}: cannot read ({exc.strerror or exc})"
        except Exception as exc:  # a damaged file can break a decoder in its own way
            errors[index] = f"{path}: cannot decode ({exc.__class__.__name__}: {exc})"

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(load_one, range(len(paths))))
    return images, errors


def predict(run_dir: str | Path, paths: Sequence[str], out_csv: str | Path | None = None,
            device: str = "cpu", warn: Callable[[str], None] = lambda message: None, force: bool = False) -> Path:
    """Write a CSV with one row per path: path, prediction, prob_<class>..., error.

    An image that cannot be read (or whose pixels are not all finite) still gets its row, with the
    problem kind and reason in `error` and empty prediction/probabilities, and is reported through
    `warn`. Default output: RUN_DIR/predictions.csv, or predictions-2.csv, ... when it exists (never
    replaced); `out_csv` is never an input image, a run's own file, or (without `force`) an existing
    file (outputs.check_output). On a CV directory the
    probabilities are the mean over the folds' models, and a `folds` column (before `error`) says
    how many were averaged; folds left out are reported through `warn`.
    """
    if not paths:
        raise MammoError("no images given: pass one or more image files (DICOM, PNG or JPEG)")
    run_dir = Path(run_dir).expanduser()
    members, warnings = load_members(run_dir, device)
    for message in warnings:
        warn(message)
    checkpoint = members[0].checkpoint
    out = (check_output(out_csv, inputs=paths, force=force) if out_csv
           else next_free(run_dir / PREDICTIONS_FILE))
    if not out.parent.is_dir():
        raise MammoError(f"cannot write {out}: folder {out.parent} does not exist")
    names = list(checkpoint["class_names"])
    resolved = [os.path.abspath(os.path.expanduser(str(p))) for p in paths]
    images, errors = _load_each(resolved, training_preprocessing(checkpoint))
    for index in sorted(errors):  # named on the console too, not only in the CSV's error column
        warn(f"skipped: {errors[index]}")
    readable = [i for i in range(len(paths)) if i not in errors]
    probs = np.mean(_member_probabilities(members, images[readable], device), axis=0)
    prob_of = dict(zip(readable, probs))
    folds = [str(len(members))] if members[0].fold is not None else []  # the column only for a CV

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "prediction", *[f"prob_{c}" for c in names], *(["folds"] if folds else []), "error"])
    for index, given in enumerate(paths):
        if index in errors:
            writer.writerow([given, "", *[""] * len(names), *[""] * len(folds), errors[index]])
        else:
            p = prob_of[index]
            writer.writerow([given, names[int(p.argmax())], *[f"{v:.6f}" for v in p], *folds, ""])
    try:
        atomic_write_text(out, buffer.getvalue())
    except OSError as exc:
        raise MammoError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out
