"""Fixed, deterministic event streams: dashboard previews and snapshot tests (no clock, no RNG)."""

from __future__ import annotations

from typing import Any

from mammo_tui.collapse import detect_collapse, suggest
from mammo_tui.config import TrainConfig
from mammo_tui.events import (
    BatchProgress,
    CheckpointSaved,
    CollapseStatus,
    CVFinished,
    EpochMetrics,
    Event,
    FoldFinished,
    FoldStarted,
    LogMessage,
    RunFinished,
    RunStarted,
)

T0 = 1_700_000_000.0  # fixed timestamps keep replays byte-identical


def _metrics(confusion: list[list[int]]) -> dict[str, Any]:
    n = sum(map(sum, confusion))
    k = len(confusion)
    true_counts = [sum(row) for row in confusion]
    pred_counts = [sum(confusion[i][j] for i in range(k)) for j in range(k)]
    recall = [confusion[i][i] / true_counts[i] if true_counts[i] else 0.0 for i in range(k)]
    precision = [confusion[j][j] / pred_counts[j] if pred_counts[j] else 0.0 for j in range(k)]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall)]
    accuracy = sum(confusion[i][i] for i in range(k)) / n
    bal = sum(recall) / k
    # Cohen's kappa (unweighted and quadratic) from the confusion matrix.
    def kappa(weight):
        obs = sum(weight(i, j) * confusion[i][j] for i in range(k) for j in range(k)) / n
        exp = sum(weight(i, j) * true_counts[i] * pred_counts[j] for i in range(k) for j in range(k)) / n / n
        return 1 - obs / exp if exp else 0.0
    return {
        "accuracy": accuracy,
        "balanced_accuracy": bal,
        "balanced_accuracy_adjusted": (bal - 1 / k) / (1 - 1 / k),
        "kappa": kappa(lambda i, j: float(i != j)),
        "kappa_quadratic": kappa(lambda i, j: (i - j) ** 2 / (k - 1) ** 2),
        "auc_macro": None,
        "precision_per_class": precision,
        "recall_per_class": recall,
        "f1_per_class": f1,
        "prediction_distribution": [c / n for c in pred_counts],
        "true_distribution": [c / n for c in true_counts],
        "prediction_counts": pred_counts,
        "true_counts": true_counts,
        "confusion_matrix": confusion,
        "n": n,
    }


HEALTHY_CONFUSIONS = [
    [[2, 3, 3, 0], [6, 30, 30, 7], [8, 40, 100, 22], [1, 10, 30, 26]],
    [[4, 3, 1, 0], [5, 42, 22, 4], [5, 30, 115, 20], [0, 8, 20, 39]],
    [[5, 2, 1, 0], [3, 48, 19, 3], [2, 24, 126, 18], [0, 5, 17, 45]],
    [[6, 2, 0, 0], [3, 51, 17, 2], [1, 22, 131, 16], [0, 4, 14, 49]],
]
COLLAPSED_CONFUSIONS = [
    [[0, 2, 6, 0], [0, 10, 60, 3], [0, 12, 150, 8], [0, 3, 58, 6]],
    [[0, 0, 8, 0], [0, 0, 73, 0], [0, 0, 170, 0], [0, 0, 67, 0]],
]


def sample_events(collapsed: bool = False, finished: bool = True, epochs: int | None = None,
                  name: str = "", run_dir: str = "", trained: int | None = None) -> list[Event]:
    """A short run: RunStarted, batches, epochs with metrics, collapse checks, checkpoints, end.
    trained: how many of the sample epochs happen (default all)."""
    epochs = epochs or len(COLLAPSED_CONFUSIONS if collapsed else HEALTHY_CONFUSIONS)
    if collapsed:
        cfg = TrainConfig(arch="resnet18", freeze="none", sampler="none", class_weights="none",
                          lr=0.1, epochs=epochs, img_size=64, warmup_epochs=0)
        confusions, name = COLLAPSED_CONFUSIONS, name or "sample-collapsed"
    else:
        cfg = TrainConfig(arch="resnet18", freeze="last_block", epochs=epochs, img_size=64)
        confusions, name = HEALTHY_CONFUSIONS, name or "sample-healthy"
    confusions = confusions[:trained or len(confusions)]
    t = T0
    out: list[Event] = [RunStarted(
        run_dir=run_dir or f"runs/{name}", run_name=name, config=cfg.to_dict(), class_names=list("ABCD"),
        n_train=1270, n_val=318, train_counts=[32, 290, 680, 268], val_counts=[8, 73, 170, 67],
        steps_per_epoch=40, device="cpu", time=t)]
    previous = None
    for i, confusion in enumerate(confusions, start=1):
        for batch in (10, 20, 30, 40):
            t += 1.0
            out.append(BatchProgress(epoch=i, batch=batch, n_batches=40, loss=1.3 - 0.1 * i,
                                     images_per_s=152.0, eta_s=40.0 * (len(confusions) - i) + 40 - batch,
                                     time=t))
        metrics = _metrics(confusion)
        out.append(EpochMetrics(
            epoch=i, epochs=epochs, train_loss=1.35 - 0.12 * i, val_loss=1.30 - 0.08 * i + (0.3 * i if collapsed else 0),
            metrics=metrics, lr=cfg.lr, trainable="head" if i <= cfg.warmup_epochs else "head+layer4",
            epoch_time_s=9.0, images_per_s=152.0, time=t))
        result = detect_collapse(metrics, previous, cfg)
        suggestions = [s.to_dict() for s in suggest(cfg, result, metrics)]
        out.append(CollapseStatus(epoch=i, status=result.status, reasons=result.reasons,
                                  suggestions=suggestions, time=t))
        if not collapsed or i == 1:
            out.append(CheckpointSaved(epoch=i, kind="best", path=f"runs/{name}/checkpoints/best.pt",
                                       time=t))
        out.append(CheckpointSaved(epoch=i, kind="last", path=f"runs/{name}/checkpoints/last.pt", time=t))
        previous = metrics
    if collapsed:
        out.append(LogMessage("error", "collapsed: all predictions are one class", epoch=len(confusions),
                              time=t))
    if finished:
        best = 1 if collapsed else len(confusions)
        out.append(RunFinished(status="collapsed" if collapsed else "healthy", best_epoch=best,
                               best_metrics=_metrics(confusions[best - 1]),
                               epochs_completed=len(confusions), time=t))
    return out


def sample_cv_events(folds: int = 5, finished: bool = True) -> list[Event]:
    """A cross-validation in runs/cv5-sample: fold 2 collapses; unfinished, it stops in fold 3."""
    from mammo_tui.stats import aggregate, worst_status

    cv_dir = "runs/cv5-sample"
    out: list[Event] = []
    rows = []
    for fold in range(1, folds + 1):
        run_dir = f"{cv_dir}/fold-{fold}"
        out.append(FoldStarted(fold=fold, folds=folds, cv_dir=cv_dir, run_dir=run_dir, time=T0))
        live = not finished and fold == 3
        events = sample_events(collapsed=fold == 2, finished=not live, epochs=4, name=f"fold-{fold}",
                               run_dir=run_dir, trained=2 if live else 4 - fold % 2)
        out += events
        if live:
            return out
        end = events[-1]
        rows.append({"fold": fold, "status": end.status, "best_epoch": end.best_epoch,
                     "best_metrics": end.best_metrics})
        last_check = [e for e in events if isinstance(e, CollapseStatus)][-1]
        fixes = last_check.suggestions if last_check.status != "healthy" else []
        out.append(FoldFinished(fold=fold, folds=folds, status=end.status, best_epoch=end.best_epoch,
                                best_metrics=end.best_metrics, suggestions=fixes, time=T0))
    summary = {"folds": folds, "status": worst_status([r["status"] for r in rows]), "per_fold": rows,
               "aggregate": aggregate(rows),
               "collapsed_folds": [r["fold"] for r in rows if r["status"] == "collapsed"]}
    out.append(CVFinished(cv_dir=cv_dir, summary=summary, exit_code=3, time=T0))
    return out


def sample_wizard_state():
    """A WizardState for a made-up reference-like dataset (794 images, A 20 / B 181 / C 425 /
    D 168, three bad rows), scanned, fingerprinted and planned: wizard previews and snapshots."""
    from mammo_tui.data.fingerprint import fingerprint
    from mammo_tui.data.records import ImageInfo, ImageRecord, Problem, ValidationReport
    from mammo_tui.app.planning import make_plan
    from mammo_tui.tui.job import WizardState
    from mammo_tui.weights import WeightsStatus

    records, infos = [], {}
    for label, count in enumerate((20, 181, 425, 168)):
        for i in range(count):
            path = f"/data/mammo/dicom/ACC{label}{i:04d}/{'L' if i % 2 else 'R'}-CC.dcm"
            records.append(ImageRecord(path=path, label=label, group=f"pt-{label}-{i // 2}",
                                       row=len(records) + 2))
            large = i % 3 == 0
            infos[path] = ImageInfo(
                width=3328 if large else 2560, height=4096 if large else 3328, format="DICOM",
                photometric="MONOCHROME1" if i % 5 == 0 else "MONOCHROME2",
                transfer_syntax=("JPEG 2000 Image Compression (Lossless Only)" if i % 4 == 0
                                 else "Explicit VR Little Endian"))
    problems = [
        Problem("missing_file", "row 17: image dicom/ACC10017/L-CC.dcm not found; row skipped", row=17),
        Problem("missing_file", "row 240: image dicom/ACC20052/R-CC.dcm not found; row skipped", row=240),
        Problem("unknown_label", "row 511: Classification 'E' is not a BI-RADS density (A-D or "
                                 "1-4); row skipped", row=511),
    ]
    report = ValidationReport(source="reference CSV labels.csv + DICOM folders in dicom/",
                              kind="reference_csv", rows_read=797, records=records,
                              problems=problems, image_infos=infos)
    fp = fingerprint(report)

    def cached(arch, weights_file, pretrained):  # fixed, whatever this machine's torch cache holds
        return WeightsStatus(arch, True, "cache", f"ImageNet weights for {arch} found in "
                             f"~/.cache/torch/hub/checkpoints")

    return WizardState(spec=None, report=report, fingerprint=fp, plan=make_plan(fp, weights_probe=cached, device=None),
                       skip_bad_rows=True)
