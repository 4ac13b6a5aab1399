"""Command line: `mammo-tui` (wizard), `train`, `plan`, `demo-data`, `watch`, `runs`, `presets`.

Imports stay lazy: `--help` must be instant, and `train --no-ui` must never import textual.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from mammo_tui import __version__
from mammo_tui.errors import MammoError

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
exit codes: 0 healthy/warning, 3 collapsed, 2 bad input or config, 1 failed, 130 interrupted
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
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set sampler=none --set lr=3e-4")


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
    _add_dataset_args(p)
    _add_config_args(p)
    p.add_argument("--outdir", help="runs directory (default: --runs-dir, i.e. runs)")
    p.add_argument("--run-name")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last completed epoch")
    p.add_argument("--force", action="store_true", help="with --resume: accept a changed config")

    p = sub.add_parser("cv", help="patient-grouped stratified K-fold cross-validation (dashboard, or --no-ui)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--folds", type=int, default=5, help="number of folds, 2-20 (default 5)")
    p.add_argument("--no-ui", action="store_true", help="plain console output; never imports the TUI")
    _add_dataset_args(p)
    _add_config_args(p)
    p.add_argument("--outdir", help="runs directory (default: --runs-dir, i.e. runs)")
    p.add_argument("--run-name")
    p.add_argument("--resume", metavar="CV_DIR",
                   help="continue a stopped cross-validation: finished folds are kept, the stopped one resumes")

    p = sub.add_parser("plan", help="fingerprint a dataset and print the decision flow's preset and config "
                                    "(what `train` without --preset trains, with the same flags)")
    p.add_argument("dataset", nargs="?", help="label CSV or class-folder directory")
    p.add_argument("--dicom-root")
    p.add_argument("--demo", action="store_true")
    p.add_argument("--group-pattern", metavar="REGEX", help="patient id from each image's path (as for train)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
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

    p = sub.add_parser("eval", aliases=["evaluate"], help="evaluate a run's best checkpoint (a CV: each fold and their ensemble) on another labelled set")
    p.add_argument("run_dir")
    p.add_argument("--csv")
    p.add_argument("--dicom-root")
    p.add_argument("--images")
    p.add_argument("--skip-bad-rows", action="store_true")
    p.add_argument("--name", help="name of the eval-<name>.json written into the run dir")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])

    p = sub.add_parser("predict", help="class probabilities for images, as CSV (a CV folder: the folds' ensemble)")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", help="CSV path (default: RUN_DIR/predictions.csv)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])

    p = sub.add_parser("watch", help="the dashboard for a run (live or finished)")
    p.add_argument("run_dir")

    sub.add_parser("runs", help="browse and compare runs under --runs-dir")
    sub.add_parser("presets", help="list the built-in presets")
    return parser


# ---------------------------------------------------------------------------------------------


def _dataset_spec(args):
    if not (args.csv or args.images):
        return None
    from mammo_tui.data.sources import DatasetSpec

    return DatasetSpec(csv=args.csv, dicom_root=args.dicom_root, images=args.images,
                       group_pattern=getattr(args, "group_pattern", None))


def _config_overrides(args) -> dict:
    from mammo_tui import config as cfg

    overrides = {"epochs": args.epochs, "img_size": args.img_size, "batch_size": args.batch_size,
                 "arch": args.arch, "lr": args.lr, "seed": args.seed, "on_collapse": args.on_collapse}
    if args.no_pretrained:
        overrides["pretrained"] = False
    if args.weights:
        overrides["weights"] = args.weights
    overrides = {k: cfg.coerce(k, v, source=f"--{k.replace('_', '-')}") for k, v in overrides.items() if v is not None}
    overrides.update(cfg.parse_set(args.set))
    return overrides


def _resolve_config(args):
    """The config to train: a preset (+ flags), the run's own on --resume, or None: the decision
    flow's plan for the dataset (+ flags), resolved once the dataset is read ("preset auto")."""
    from mammo_tui import config as cfg

    overrides = _config_overrides(args)
    if getattr(args, "resume", None):
        if not overrides and not args.preset:
            return None  # the run's own config
        import tomllib

        saved_path = Path(args.resume) / "config.toml"
        if not saved_path.is_file():
            raise MammoError(f"--resume {args.resume}: no config.toml there; is it a run directory?")
        saved = tomllib.loads(saved_path.read_text(encoding="utf-8"))
        return cfg.from_mapping({**saved, **overrides}, source="--resume")
    if not args.preset:
        return None
    return cfg.resolve(args.preset, overrides)


def _install_signal_handlers(cancel: threading.Event) -> None:
    def handler(signum, frame):
        if cancel.is_set():  # second signal: the user means it
            raise KeyboardInterrupt
        print(f"\n{signal.Signals(signum).name}: stopping after the current batch, saving state "
              "(send again to abort)", file=sys.stderr, flush=True)
        cancel.set()

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


def _wants_ui(args) -> bool:
    """The dashboard unless --no-ui, or unless there is no terminal (a script, nohup, a pipe):
    then the plain console output, said once on stderr, instead of a TUI nobody can see."""
    if args.no_ui:
        return False
    if sys.stdin.isatty() and sys.stdout.isatty():
        return True
    print(f"mammo-tui {args.command}: no terminal; running headless as with --no-ui", file=sys.stderr)
    return False


def cmd_train(args) -> int:
    config = _resolve_config(args)
    spec = _dataset_spec(args)
    use_ui = _wants_ui(args)
    if use_ui and args.resume:  # nothing to set up: straight to the dashboard
        from mammo_tui.tui.app import run_app
        from mammo_tui.tui.dashboard import TrainJob

        if not Path(args.resume).is_dir():
            raise MammoError(f"train --resume: {args.resume} is not a directory")
        return run_app(job=TrainJob(config=config, resume=args.resume, force=args.force),
                       runs_root=str(Path(args.resume).parent))
    if use_ui:
        from mammo_tui.tui.app import run_app

        # without --preset the wizard's decision flow picks the preset; flags apply on top
        return run_app("wizard", demo=args.demo, dataset=spec, runs_root=args.outdir or args.runs_dir,
                       config=config, overrides=_config_overrides(args))
    from mammo_tui.console import ConsolePrinter
    from mammo_tui.engine.distributed import main_process
    from mammo_tui.engine.trainer import TrainRequest, train

    cancel = threading.Event()
    _install_signal_handlers(cancel)
    main = main_process()  # under torchrun only rank 0 prints
    request = TrainRequest(**_request_fields(args, config, spec))
    result = train(request, ConsolePrinter() if main else (lambda event: None), cancel)
    if main:
        _print_safely(f"run directory: {result.run_dir}")
    return result.exit_code


def _print_safely(text: str) -> None:
    try:
        print(text, flush=True)
    except (BrokenPipeError, OSError):
        pass


def _request_fields(args, config, spec) -> dict:
    """TrainRequest fields from the command line (plain values: the TUI takes them without torch)."""
    resume = getattr(args, "resume", None)
    if not (args.demo or spec or resume):
        what = "CV_DIR" if args.command == "cv" else "RUN_DIR"
        raise MammoError(f"no dataset: pass --demo, --csv FILE [--dicom-root DIR], --images DIR or --resume {what}")
    return dict(config=config, dataset=spec, demo=args.demo, outdir=args.outdir or args.runs_dir,
                run_name=args.run_name, resume=resume, force=getattr(args, "force", False),
                skip_bad_rows=args.skip_bad_rows, preset=args.preset or "",
                overrides=_config_overrides(args) if config is None and not resume else {})


def cmd_cv(args) -> int:
    from mammo_tui.cv import resume_fields

    if args.resume:
        if not Path(args.resume).is_dir():
            raise MammoError(f"cv --resume: {args.resume} is not a directory")
        fields, folds = resume_fields(args.resume)
    else:
        fields, folds = _request_fields(args, _resolve_config(args), _dataset_spec(args)), args.folds
    if _wants_ui(args):
        from mammo_tui.tui.app import run_app
        from mammo_tui.tui.dashboard import TrainJob

        return run_app(job=TrainJob(**fields, cv_folds=folds), runs_root=fields["outdir"])

    from mammo_tui.console import ConsolePrinter
    from mammo_tui.cv import format_cv, run_cv
    from mammo_tui.engine.distributed import main_process
    from mammo_tui.engine.trainer import EXIT_INTERRUPTED, TrainRequest

    cancel = threading.Event()
    _install_signal_handlers(cancel)
    main = main_process()  # under torchrun only rank 0 prints
    result = run_cv(TrainRequest(**fields), folds, ConsolePrinter() if main else (lambda event: None), cancel)
    if not main:
        return result.exit_code
    if result.summary:
        _print_safely(format_cv(result.summary))
    if result.exit_code == EXIT_INTERRUPTED:
        _print_safely(f"cross-validation stopped; continue it with: mammo-tui cv --no-ui --resume {result.run_dir}")
    elif not result.summary:
        _print_safely("cross-validation stopped: a fold failed (see above); the finished folds are kept")
    _print_safely(f"cross-validation directory: {result.run_dir}")
    return result.exit_code


def cmd_plan(args) -> int:
    import json

    from mammo_tui.data.sources import DatasetSpec
    from mammo_tui.planner import format_plan, plan_for
    from mammo_tui.prepare import ensure_demo_dataset
    from mammo_tui.weights import weights_status

    if args.demo:
        spec = ensure_demo_dataset()
    elif not args.dataset:
        raise MammoError("plan: give a label CSV, a class-folder directory, or --demo")
    elif Path(args.dataset).is_dir():
        spec = DatasetSpec(images=args.dataset, group_pattern=args.group_pattern)
    else:
        spec = DatasetSpec(csv=args.dataset, dicom_root=args.dicom_root, group_pattern=args.group_pattern)
    from mammo_tui.data.fingerprint import fingerprint
    from mammo_tui.data.sources import scan_dataset

    report = scan_dataset(spec)
    # the same call train and cv make without --preset: the same flags give the same config
    p = plan_for(fingerprint(report), _config_overrides(args), demo=args.demo, weights_probe=weights_status)
    if args.json:
        print(json.dumps(p.to_dict(), indent=2, default=str))
        return 0
    for line in report.summary_lines():
        print(line)
    print(format_plan(p))
    print(f"\nTrain it: mammo-tui train {'--demo' if args.demo else '...'} (without --preset; the same flags)")
    return 0


def cmd_demo_data(args) -> int:
    from mammo_tui.data.demo import make_demo_dataset
    from mammo_tui.prepare import DEMO_SIZE

    csv = make_demo_dataset(args.dir, size=args.size if args.size is not None else DEMO_SIZE, seed=args.seed,
                            difficulty=args.difficulty)
    print(f"demo dataset written: {csv}")
    return 0


def cmd_report(args) -> int:
    from mammo_tui.report import build_report, write_report

    if args.stdout:
        print(build_report(args.run_dir))
    else:
        print(f"report written: {write_report(args.run_dir, args.out, figures=not args.no_figures)}")
    return 0


def cmd_eval(args) -> int:
    from mammo_tui.collapse import format_distribution
    from mammo_tui.cv import format_mean_std
    from mammo_tui.evaluate import evaluate

    def scores(m: dict) -> str:
        auc = m.get("auc_macro")
        return (f"kappa_q {m['kappa_quadratic']:.3f} bal_acc_adj {m['balanced_accuracy_adjusted']:.3f} "
                f"auc {'n/a' if auc is None else f'{auc:.3f}'}")

    spec = _dataset_spec(args)
    if spec is None:
        raise MammoError("eval: pass --csv FILE [--dicom-root DIR] or --images DIR")
    result = evaluate(args.run_dir, spec, skip_bad_rows=args.skip_bad_rows, name=args.name, device=args.device)
    line = f"{result['n']} images: {scores(result)} pred {format_distribution(result['prediction_distribution'])}"
    if result.get("ensemble"):  # a cross-validation: each fold alone, their spread, then the ensemble
        k = len(result["folds_used"])
        for row in result["per_fold"]:
            print(f"fold {row['fold']} (epoch {row['checkpoint_epoch']}): {scores(row)}")
        agg = result["aggregate"]
        print(f"mean ± std over {k} folds: kappa_q {format_mean_std(agg['kappa_quadratic'])}, "
              f"bal_acc_adj {format_mean_std(agg['balanced_accuracy_adjusted'])}, auc {format_mean_std(agg['auc_macro'])}")
        line = f"ensemble of {k} folds: {line}"
    print(line)
    for line in [*result.get("warnings", []), *result.get("validation_summary", [])]:
        print(f"  {line}")
    if result.get("output"):
        print(f"written: {result['output']}")
    return 0


def cmd_predict(args) -> int:
    import csv

    from mammo_tui.evaluate import predict

    out = predict(args.run_dir, args.images, args.out, device=args.device, warn=lambda m: print(f"  {m}"))
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    failed = sum(1 for row in rows if row.get("error"))
    folds = next((row["folds"] for row in rows if row.get("folds")), None)  # only a CV's CSV has it
    print(f"predictions written: {out}" + (f" (ensemble of {folds} folds)" if folds else ""))
    if failed:
        print(f"{failed} of {len(args.images)} images could not be read (see the error column)")
    return 0


def cmd_presets(args) -> int:
    from mammo_tui import config as cfg

    for name in cfg.preset_names():
        print(f"{name:16} {cfg.preset_description(name)}")
    print(f"(files in {cfg.PRESETS_DIR}; copy one and pass --preset path/to/file.toml)")
    return 0


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting slow training ~3x on a busy machine (measured on
    # 2 cores); sleeping waits cost nothing measurable when the machine is idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "cv":
            return cmd_cv(args)
        if args.command == "plan":
            return cmd_plan(args)
        if args.command == "demo-data":
            return cmd_demo_data(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command in ("eval", "evaluate"):
            return cmd_eval(args)
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "presets":
            return cmd_presets(args)
        from mammo_tui.tui.app import run_app

        if args.command == "watch":
            if not Path(args.run_dir).is_dir():
                raise MammoError(f"watch: {args.run_dir} is not a directory")
            return run_app("watch", run_dir=args.run_dir, runs_root=args.runs_dir)
        if args.command == "runs":
            return run_app("runs", runs_root=args.runs_dir)
        return run_app("wizard", demo=args.demo, dataset=_dataset_spec(args), runs_root=args.runs_dir)
    except MammoError as exc:
        print(f"mammo-tui: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mammo-tui: aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
