"""The command line's grammar: every subcommand, its flags and its help (argparse).

cli.py runs the commands; this module only describes them, so `--help` loads nothing else.
"""

from __future__ import annotations

import argparse

from mammo_tui import __version__

EPILOG = """\
examples:
  mammo-tui                                   guided setup (wizard) in the terminal
  mammo-tui --demo                            wizard on the built-in demo dataset
  mammo-tui train --no-ui --demo              headless training on the demo dataset
  mammo-tui train --no-ui --csv labels.csv --dicom-root dicom/ --preset last_block
  mammo-tui plan labels.csv --dicom-root dicom/
  mammo-tui cv --folds 5 --demo               5-fold cross-validation in the dashboard
  mammo-tui cv --no-ui --resume runs/<cv>     continue a stopped cross-validation headless
  mammo-tui watch runs/<run>                  re-attach the dashboard to a (headless) run or CV
  mammo-tui train --no-ui --demo --track mlflow:mlruns   also log params, metrics, best.pt to MLflow
  mammo-tui export runs/<run> --to tensorboard --dir tb  an existing run (or CV) to TensorBoard
exit codes: 0 healthy/warning, 3 collapsed, 2 bad input or config, 1 internal error (a bug: please
  report it), 130 interrupted (Ctrl-C, SIGTERM, SIGHUP), 141 output pipe closed (e.g. | head)
"""


SWEEP_EPILOG = """\
examples:
  mammo-tui sweep defenses --demo --no-ui       the built-in defenses comparison on the demo dataset
  mammo-tui sweep my.toml --csv labels.csv --dicom-root dicom/ --run-name cmp --jobs 2
  mammo-tui sweep my.toml --dry-run             print the queue (seed-major) and exit
  mammo-tui sweep --resume runs/cmp             continue after Ctrl-C (or re-run with --run-name cmp)
  mammo-tui report runs/cmp                     leaderboard, best configuration and its command line
exit codes: 0 done, 3 the best configuration collapsed (on some seed), 1 no run finished,
  2 bad spec or input, 130 interrupted (re-run to continue)
"""


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dataset (one of)")
    g.add_argument("--demo", action="store_true", help="the built-in synthetic DICOM demo dataset")
    g.add_argument("--csv", help="label CSV: AccessionNumber,Classification (with --dicom-root) "
                                 "or image_path,label[,patient_id,view]")
    g.add_argument("--dicom-root", help="folder with one sub-folder per accession")
    g.add_argument("--images", help="folder with one sub-folder per class (A/ B/ C/ D/ or 1/ 2/ 3/ 4/)")
    g.add_argument("--group-pattern", metavar="REGEX",
                   help="patient id from each image's path (first group of the regex), for files without "
                        "a patient_id column or DICOM PatientID, e.g. '^(P\\d+)_'")
    g.add_argument("--skip-bad-rows", action="store_true",
                   help="continue without rows the validation report lists (they are counted, not lost)")
    _add_description_args(g)


def _add_description_args(g) -> None:
    """How to read a dataset as downloaded: a layout, a description file, or mapping flags."""
    g.add_argument("--layout", metavar="NAME", help="read the dataset folder as this built-in layout "
                   "(see `mammo-tui layouts`); default: recognised from its files")
    g.add_argument("--dataset", metavar="FILE.toml", dest="description",
                   help="a dataset description: where the images, labels, patients, views and split are")
    g.add_argument("--image-root", metavar="DIR", help="the folder image paths start from (default: the table's)")
    g.add_argument("--image-col", metavar="COLUMN", help="the column with each image's path")
    g.add_argument("--path-template", metavar="TEMPLATE", help="image path from columns: 'images/{study_id}/{image_id}.dicom'")
    g.add_argument("--image-glob", metavar="GLOB", help="image path by a glob with exactly one match: "
                   "'AllDICOMs/{File Name}_*.dcm'")
    g.add_argument("--label-col", metavar="COLUMN", help="the density column (default: label)")
    g.add_argument("--label-map", choices=["birads", "percent"],
                   help="how its values read: birads (A-D, 1-4, 'DENSITY C') or percent ('0%%-25%%' ... '>75%%')")
    g.add_argument("--patient-col", metavar="COLUMN", help="the patient id column (the unit of the split)")
    g.add_argument("--study-col", metavar="COLUMN", help="the study / accession column (one exam)")
    g.add_argument("--view-col", metavar="COLUMN", help="the view column (CC, MLO, ...)")
    g.add_argument("--split-col", metavar="COLUMN", help="the official split column: rows saying test are held out")
    g.add_argument("--views", metavar="LIST", help="use only these views, e.g. CC,MLO (others counted, left out)")


def _add_dataset_positional(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", nargs="?", metavar="DATASET",
                   help="the dataset's top folder as downloaded (a public layout is recognised), class folders, "
                        "or a label table")


def _add_config_args(p: argparse.ArgumentParser, preset: bool = True) -> None:
    g = p.add_argument_group("configuration (flags override the preset; --set overrides anything)")
    if preset:
        g.add_argument("--preset", help="built-in preset name or a .toml file (see `mammo-tui presets`); "
                                        "default: the one the decision flow picks for the dataset (`plan`)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--img-size", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--arch")
    g.add_argument("--lr", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--on-collapse", choices=["warn", "stop", "recover"])
    g.add_argument("--no-pretrained", action="store_true", help="random initialisation")
    g.add_argument("--weights", help="local weights file (offline boxes)")
    g.add_argument("--workers", type=int, metavar="N",
                   help="processes decoding images on a first run (config preprocess_workers; "
                        "default: all cores but one)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set sampler=none --set lr=3e-4")


def _add_track_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", action="append", default=[], metavar="SPEC",
                   help="also send the run's params, metrics and artifacts to mlflow:DIR_OR_URI or "
                        "tensorboard:DIR (repeatable; this session; config key `track` keeps it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammo-tui", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Train breast-density (BI-RADS A-D) classifiers on small, imbalanced "
                    "mammography datasets without model collapse.")
    parser.add_argument("--version", action="version", version=f"mammo-tui {__version__}")
    parser.add_argument("--runs-dir", default="runs", help="where runs are written (default: runs)")
    _add_dataset_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (dashboard, or --no-ui for scripts)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--no-ui", action="store_true", help="plain console output; never imports the TUI")
    _add_dataset_positional(p)
    _add_dataset_args(p)
    _add_config_args(p)
    p.add_argument("--outdir", help="runs directory (default: --runs-dir, i.e. runs)")
    p.add_argument("--run-name")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last completed epoch")
    p.add_argument("--force", action="store_true", help="with --resume: accept a changed config")
    _add_track_arg(p)

    p = sub.add_parser("cv", help="patient-grouped stratified K-fold cross-validation (dashboard, or --no-ui)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--folds", type=int, help="number of folds, 2-20 (default 5; with --resume: the CV's own)")
    p.add_argument("--no-ui", action="store_true", help="plain console output; never imports the TUI")
    _add_dataset_positional(p)
    _add_dataset_args(p)
    _add_config_args(p)
    p.add_argument("--outdir", help="runs directory (default: --runs-dir, i.e. runs)")
    p.add_argument("--run-name")
    p.add_argument("--resume", metavar="CV_DIR",
                   help="continue a stopped cross-validation: finished folds are kept, the stopped one resumes")
    _add_track_arg(p)

    p = sub.add_parser("sweep", help="compare configurations x seeds on your dataset (a TOML spec) and rank them",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SWEEP_EPILOG)
    p.add_argument("spec", nargs="?", metavar="SPEC",
                   help="sweep spec (.toml) or a built-in sweep's name, e.g. defenses (see `mammo-tui presets`)")
    p.add_argument("--no-ui", action="store_true", help="plain console output; never imports the TUI")
    _add_dataset_positional(p)
    _add_dataset_args(p)
    p.add_argument("--outdir", help="runs directory (default: --runs-dir, i.e. runs)")
    p.add_argument("--run-name", help="the sweep folder's name; the same name again continues that sweep")
    p.add_argument("--resume", metavar="SWEEP_DIR",
                   help="continue a stopped sweep: finished runs are kept, started ones resume, the rest train")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="train N runs at once as subprocesses (one per GPU when there are GPUs; else on the CPUs)")
    p.add_argument("--gpus", metavar="LIST", help="GPU ids for parallel runs, e.g. 0,1 (one run per GPU)")
    p.add_argument("--dry-run", action="store_true", help="print the queue of runs and exit")
    p.add_argument("--track", action="append", default=[], metavar="SPEC",
                   help="tracking sink for every run (as for train)")

    p = sub.add_parser("plan", help="fingerprint a dataset and print the decision flow's preset and config "
                                    "(what `train` without --preset trains, with the same flags)")
    p.add_argument("dataset", nargs="?", help="the dataset's top folder as downloaded (a public layout is "
                                              "recognised), class folders, or a label table")
    p.add_argument("--csv", help="the label table (as the positional argument; with mapping flags)")
    p.add_argument("--images", help="class folders (as the positional argument)")
    p.add_argument("--dicom-root")
    p.add_argument("--demo", action="store_true")
    p.add_argument("--group-pattern", metavar="REGEX", help="patient id from each image's path (as for train)")
    p.add_argument("--skip-bad-rows", action="store_true", help="plan as train --skip-bad-rows would train")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    _add_description_args(p.add_argument_group("how to read the dataset"))
    _add_config_args(p, preset=False)

    p = sub.add_parser("demo-data", help="write the synthetic demo dataset (reference layout)")
    p.add_argument("dir")
    p.add_argument("--size", type=float, default=None, help="scale of the reference counts (1.0 = 1587 images)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", type=float, default=0.0,
                   help="0 = clearly separated density classes (default); up to 1 = classes that "
                        "overlap like different readers' calls (a hard task for collapse benchmarks)")

    p = sub.add_parser("report", help="write a Markdown report of a run or a cross-validation (report.md in its folder)")
    p.add_argument("run_dir")
    p.add_argument("--out", help="file or folder for the report (default: RUN_DIR/report.md)")
    p.add_argument("--no-figures", action="store_true", help="skip PNG figures even if matplotlib is installed")
    p.add_argument("--stdout", action="store_true", help="print the report instead of writing it")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")

    p = sub.add_parser("eval", aliases=["evaluate"], help="evaluate a run's best checkpoint (a CV: each fold and their ensemble) on another labelled set")
    p.add_argument("run_dir")
    p.add_argument("dataset", nargs="?", help="a dataset folder as downloaded (a public layout), class folders, "
                                              "or a label table")
    p.add_argument("--csv")
    p.add_argument("--dicom-root")
    p.add_argument("--images")
    p.add_argument("--group-pattern", metavar="REGEX")
    p.add_argument("--skip-bad-rows", action="store_true")
    _add_description_args(p.add_argument_group("how to read the dataset"))
    p.add_argument("--name", help="name of the eval-<name>.json written into the run dir")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes decoding images (default: all cores but one)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])

    p = sub.add_parser("predict", help="class probabilities for images, as CSV (a CV folder: the folds' ensemble)")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", help="CSV path (default: RUN_DIR/predictions.csv, or predictions-2.csv, ... "
                                 "when it exists)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])

    p = sub.add_parser("export", help="send a run (a CV, a sweep: each run) to MLflow or TensorBoard "
                                      "from its events.jsonl, with best.pt and the report")
    p.add_argument("run_dir")
    p.add_argument("--to", required=True, choices=["mlflow", "tensorboard"])
    p.add_argument("--uri", help="MLflow tracking URI, or a folder for a local store (--to mlflow)")
    p.add_argument("--dir", help="folder: TensorBoard's log dir (each run in DIR/<run>), or MLflow's local store")

    p = sub.add_parser("watch", help="the dashboard for a run or CV, or a sweep's leaderboard (live or finished)")
    p.add_argument("run_dir")

    sub.add_parser("runs", help="browse and compare runs under --runs-dir")
    sub.add_parser("presets", help="list the built-in presets")
    p = sub.add_parser("layouts", help="list the built-in dataset layouts, or print one to copy as a description")
    p.add_argument("name", nargs="?", help="a layout to print (its TOML)")
    return parser
