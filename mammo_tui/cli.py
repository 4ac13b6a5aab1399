"""Command line: `mammo-tui` (wizard), `train`, `plan`, `demo-data`, `watch`, `runs`, `presets`.

Imports stay lazy: `--help` must be instant, and `train --no-ui` must never import textual.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from mammo_tui.cli_args import build_parser
from mammo_tui.cli_process import (die_with_parent, flush_stdout, install_abort_handlers, install_signal_handlers,
                                   internal_error, restore_handlers, say)
from mammo_tui.errors import ConfigError, MammoError
from mammo_tui.exitcodes import EXIT_BAD_INPUT, EXIT_CLOSED_PIPE, EXIT_INTERRUPTED


def _once(args, name: str, make):
    """A value the command reads several times from its flags, worked out once per command (the
    preset file read, the layout recognised, every flag checked once)."""
    cache = vars(args).setdefault("_derived", {})
    if name not in cache:
        cache[name] = make(args)
    return cache[name]


def _dataset_spec(args):
    return _once(args, "dataset", _read_dataset_spec)


def _config_overrides(args) -> dict:
    return dict(_once(args, "overrides", _read_overrides))


def _resolve_config(args):
    return _once(args, "config", _read_config)


def _read_dataset_spec(args):
    from mammo_tui.data.inputs import MappingFlags, dataset_spec

    flags = MappingFlags(**{key: getattr(args, key, None) for key in MappingFlags.__dataclass_fields__})
    return dataset_spec(getattr(args, "dataset", None), csv=getattr(args, "csv", None),
                        dicom_root=getattr(args, "dicom_root", None), images=getattr(args, "images", None),
                        group_pattern=getattr(args, "group_pattern", None), layout=getattr(args, "layout", None),
                        description=getattr(args, "description", None), image_root=getattr(args, "image_root", None),
                        views=getattr(args, "views", None), flags=flags)


def _read_overrides(args) -> dict:
    from mammo_tui import config as cfg

    overrides = {"epochs": args.epochs, "img_size": args.img_size, "batch_size": args.batch_size,
                 "arch": args.arch, "lr": args.lr, "seed": args.seed, "on_collapse": args.on_collapse}
    if args.no_pretrained:
        overrides["pretrained"] = False
    if args.weights:
        overrides["weights"] = args.weights
    if getattr(args, "workers", None) is not None:
        overrides["preprocess_workers"] = args.workers
    overrides = {k: cfg.coerce(k, v, source=f"--{k.replace('_', '-')}") for k, v in overrides.items() if v is not None}
    overrides.update(cfg.parse_set(args.set))
    return overrides


def _read_config(args):
    """The config to train: a preset (+ flags), the run's own on --resume, or None: the decision
    flow's plan for the dataset (+ flags), resolved once the dataset is read ("preset auto")."""
    from mammo_tui import config as cfg

    overrides = _config_overrides(args)
    if getattr(args, "resume", None):
        # --preset: a whole config, compared with the run's; flags / --set alone go to the engine as
        # overrides of the run's config (it reads config.toml and last.pt, and names what changed)
        return cfg.resolve(args.preset, overrides) if args.preset else None
    if not args.preset:
        return None
    return cfg.resolve(args.preset, overrides)


def _wants_ui(args) -> bool:
    """The dashboard unless --no-ui, or unless there is no terminal (a script, nohup, a pipe):
    then the plain console output, said once on stderr, instead of a TUI nobody can see."""
    if args.no_ui:
        return False
    if sys.stdin.isatty() and sys.stdout.isatty():
        return True
    print(f"mammo-tui {args.command}: no terminal; running headless as with --no-ui", file=sys.stderr)
    return False


def _track(args, config) -> list[str]:
    """--track specs, checked with the config's `track` (kind, target, library installed) before
    anything opens: exit 2. Returns this session's (--track) ones."""
    from mammo_tui.tracking.spec import tracking_specs

    tracking_specs(args.track, config.track if config is not None else _config_overrides(args).get("track", ""))
    return [spec.text for spec in tracking_specs(args.track)]


def _wizard_track(config, overrides: dict, track: list[str]):
    """The wizard hands the engine a config, not a request: --track goes in as the config's `track`."""
    if not track:
        return config, overrides
    joined = ",".join([config.track if config is not None else overrides.get("track", "")] + track).strip(",")
    return (config.replace(track=joined), overrides) if config is not None else (None, {**overrides, "track": joined})


def cmd_train(args) -> int:
    config = _resolve_config(args)
    spec = _dataset_spec(args)
    track = _track(args, config)
    use_ui = _wants_ui(args)
    if use_ui and args.resume:  # nothing to set up: straight to the dashboard
        from mammo_tui.app.requests import TrainRequest
        from mammo_tui.tui.app import run_app

        if not Path(args.resume).is_dir():
            raise MammoError(f"train --resume: {args.resume} is not a directory")
        return run_app(job=TrainRequest(config=config, resume=args.resume, force=args.force, dataset=spec,
                                        overrides=_config_overrides(args) if config is None else {}, track=track),
                       runs_root=str(Path(args.resume).parent))
    if use_ui:
        from mammo_tui.tui.app import run_app

        # without --preset the wizard's decision flow picks the preset; flags apply on top
        config, overrides = _wizard_track(config, _config_overrides(args), track)
        return run_app("wizard", demo=args.demo, dataset=spec, runs_root=args.outdir or args.runs_dir,
                       config=config, overrides=overrides, run_name=args.run_name,
                       preset=args.preset or "")
    from mammo_tui.app import TrainRequest, train
    from mammo_tui.console import ConsolePrinter
    from mammo_tui.app.launch import main_process

    cancel = threading.Event()
    install_signal_handlers(cancel)
    main = main_process()  # under torchrun only rank 0 prints
    request = TrainRequest(**_request_fields(args, config, spec))
    result = train(request, ConsolePrinter() if main else (lambda event: None), cancel)
    if main:  # the run, its status and the next commands, ready to paste
        from mammo_tui.app.nextsteps import exit_summary

        _print_safely(exit_summary(result.run_dir) or f"run directory: {result.run_dir}")
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
                overrides=_config_overrides(args) if config is None else {},
                track=list(getattr(args, "track", None) or []))


def cmd_cv(args) -> int:
    from mammo_tui.drivers.cv import MAX_FOLDS, resume_fields

    if args.folds is not None and not 2 <= args.folds <= MAX_FOLDS:  # before any screen opens
        raise ConfigError(f"--folds must be between 2 and {MAX_FOLDS}; got {args.folds}")
    track = _track(args, _resolve_config(args))
    use_ui = _wants_ui(args)
    if use_ui and not args.resume:
        from mammo_tui.tui.app import run_app

        # as `train`: the wizard, pre-filled with the flags (K-fold CV selected), decides the rest
        config, overrides = _wizard_track(_resolve_config(args), _config_overrides(args), track)
        return run_app("wizard", demo=args.demo, dataset=_dataset_spec(args), runs_root=args.outdir or args.runs_dir,
                       config=config, overrides=overrides, run_name=args.run_name,
                       preset=args.preset or "", cv_folds=5 if args.folds is None else args.folds)
    if args.resume:
        if not Path(args.resume).is_dir():
            raise MammoError(f"cv --resume: {args.resume} is not a directory")
        fields, folds = resume_fields(args.resume, _config_overrides(args), args.preset, args.folds,
                                      _dataset_spec(args))
        fields["track"] = track
    else:
        folds = 5 if args.folds is None else args.folds
        fields = _request_fields(args, _resolve_config(args), _dataset_spec(args))
    from mammo_tui.app import TrainRequest, run_cv

    if use_ui:  # cv --resume: nothing to set up, straight to the dashboard (as train --resume)
        from mammo_tui.tui.app import run_app

        return run_app(job=TrainRequest(**fields, cv_folds=folds), runs_root=fields["outdir"])

    from mammo_tui.console import ConsolePrinter
    from mammo_tui.drivers.cv import format_cv
    from mammo_tui.app.launch import main_process

    cancel = threading.Event()
    install_signal_handlers(cancel)
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
    from mammo_tui.app.nextsteps import exit_summary

    _print_safely(exit_summary(result.run_dir) or f"cross-validation directory: {result.run_dir}")
    return result.exit_code


def cmd_sweep(args) -> int:
    from mammo_tui.drivers.sweep import SweepJob, format_queue, import_optuna, load_manifest, spec_of
    from mammo_tui.drivers.sweep_spec import load_spec

    if not args.spec and not args.resume:
        raise MammoError("sweep: give a spec file or a built-in sweep's name (e.g. defenses), or --resume SWEEP_DIR")
    if args.resume and not Path(args.resume).is_dir():
        raise MammoError(f"sweep --resume: {args.resume} is not a directory")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be 1 or more; got {args.jobs}")
    gpus = [g.strip() for g in (args.gpus or "").split(",") if g.strip()]
    if args.gpus is not None and not gpus:
        raise ConfigError(f"--gpus {args.gpus!r}: give GPU ids separated by commas, e.g. --gpus 0,1")
    spec = load_spec(args.spec) if args.spec else None  # a bad spec: exit 2 before anything opens
    if args.dry_run:
        print(format_queue(spec or spec_of(load_manifest(args.resume), args.resume)))
        return 0
    if (spec or spec_of(load_manifest(args.resume), args.resume)).search is not None:
        import_optuna()
    dataset = _dataset_spec(args)
    if not (args.resume or args.demo or dataset):
        raise MammoError("no dataset: pass --demo, --csv FILE [--dicom-root DIR], --images DIR or --resume SWEEP_DIR")
    from mammo_tui.tracking.spec import tracking_specs

    tracking_specs(args.track)  # a bad --track: exit 2 now, not at each run
    job = SweepJob(spec=spec, dataset=dataset, demo=args.demo, skip_bad_rows=args.skip_bad_rows,
                   outdir=args.outdir or args.runs_dir, run_name=args.run_name, resume=args.resume,
                   jobs=args.jobs or 1, gpus=gpus, track=list(args.track))
    if _wants_ui(args):  # the leaderboard screen (tui/sweep.py), run by the app like train's dashboard
        from mammo_tui.tui.app import run_sweep_app

        return run_sweep_app(job)
    return _sweep_headless(job)


def _sweep_headless(job) -> int:
    from mammo_tui.console import ConsolePrinter
    from mammo_tui.drivers.leaderboard import format_leaderboard, leaderboard
    from mammo_tui.app.launch import run_sweep
    from mammo_tui.app.nextsteps import sweep_summary
    from mammo_tui.events import SweepFinished, SweepRunFinished, SweepRunStarted

    printer = ConsolePrinter()

    def sink(event) -> None:
        if isinstance(event, SweepRunStarted):
            kept = " already finished, kept" if event.kept else ""
            _print_safely(f"sweep run {event.index}/{event.total}: {event.run} ({event.config_id}, seed {event.seed}){kept}")
        elif isinstance(event, SweepRunFinished):
            m = event.best_metrics
            scores = (f" kappa_q {m['kappa_quadratic']:.3f} bal_acc_adj {m['balanced_accuracy_adjusted']:.3f}"
                      if m.get("kappa_quadratic") is not None else "")
            _print_safely(f"sweep run {event.index}/{event.total} {event.run}: {event.status}{scores}")
            if not event.kept:  # the standings after every newly trained run
                _print_safely(format_leaderboard(leaderboard(event.sweep_dir)))
        elif not isinstance(event, SweepFinished):
            printer(event)

    cancel = threading.Event()
    install_signal_handlers(cancel)
    result = run_sweep(job, sink, cancel)
    _print_safely("")
    # the leaderboard, the best configuration, how to continue: what the sweep screen prints on exit
    _print_safely(sweep_summary(result.sweep_dir, no_ui=True))
    return result.exit_code


def cmd_export(args) -> int:
    from mammo_tui.tracking.export import export

    if args.uri and args.dir:
        raise ConfigError("export: give --uri or --dir, not both")
    target = args.uri or args.dir
    if not target:
        what = "--uri URI (a tracking server) or --dir DIR (a local store)" if args.to == "mlflow" else "--dir DIR"
        raise ConfigError(f"export --to {args.to}: say where, with {what}")
    if args.to == "tensorboard" and args.uri:
        raise ConfigError("export --to tensorboard writes event files into a folder: give --dir DIR, not --uri")
    export(args.run_dir, args.to, target, say=_print_safely)
    return 0


def cmd_plan(args) -> int:
    import json

    from mammo_tui.app.planning import plan_dataset
    from mammo_tui.console import progress_printer
    from mammo_tui.planner import format_plan
    from mammo_tui.prepare import ensure_demo_dataset

    spec = ensure_demo_dataset() if args.demo else _dataset_spec(args)
    if spec is None:
        raise MammoError("plan: give the dataset's folder, a label CSV, a class-folder directory, or --demo")
    overrides = _config_overrides(args)  # a bad flag or --set fails before the images are read
    # the same stage train and cv go through without --preset: the same flags give the same config
    planned = plan_dataset(spec, overrides, demo=args.demo, progress=progress_printer("checking images"))
    report, p = planned.report, planned.plan
    refusal = planned.refusal(args.skip_bad_rows)  # plan and train never disagree on it
    if args.json:
        print(json.dumps({**p.to_dict(), "dataset": report.to_dict(), "can_train": refusal is None},
                         indent=2, default=str))
        return EXIT_BAD_INPUT if refusal else 0
    for line in report.summary_lines():
        print(line)
    print(format_plan(p))
    if refusal:
        print(f"\n{refusal}")
        return EXIT_BAD_INPUT
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
        print(f"report written: {write_report(args.run_dir, args.out, figures=not args.no_figures, force=args.force)}")
    return 0


def cmd_eval(args) -> int:
    from mammo_tui.collapse import format_distribution
    from mammo_tui.stats import format_mean_std
    from mammo_tui.evaluate import evaluate

    def scores(m: dict) -> str:
        auc = m.get("auc_macro")
        return (f"kappa_q {m['kappa_quadratic']:.3f} bal_acc_adj {m['balanced_accuracy_adjusted']:.3f} "
                f"auc {'n/a' if auc is None else f'{auc:.3f}'}")

    spec = _dataset_spec(args)
    if spec is None:
        raise MammoError("eval: pass a dataset folder, --csv FILE [--dicom-root DIR] or --images DIR")
    result = evaluate(args.run_dir, spec, skip_bad_rows=args.skip_bad_rows, name=args.name, device=args.device,
                      workers=args.workers)
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

    out = predict(args.run_dir, args.images, args.out, device=args.device, warn=lambda m: print(f"  {m}"),
                  force=args.force)
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    failed = sum(1 for row in rows if row.get("error"))
    folds = next((row["folds"] for row in rows if row.get("folds")), None)  # only a CV's CSV has it
    print(f"predictions written: {out}" + (f" (ensemble of {folds} folds)" if folds else ""))
    if failed:
        print(f"{failed} of {len(args.images)} images could not be read (see the error column)")
    return 0


def cmd_layouts(args) -> int:
    from mammo_tui.data.layouts import layout_file, layout_names, load_layout

    if args.name:
        load_layout(args.name)  # an unknown name: exit 2 with the known ones
        print(layout_file(args.name).read_text(encoding="utf-8"), end="")
        return 0
    for name in layout_names():
        layout = load_layout(name)
        print(f"{name:<16} {layout.title}: {layout.note}")
    print("\nRecognised from a dataset's top folder (mammo-tui plan DIR); force one with --layout NAME. "
          "Print one (mammo-tui layouts NAME > mine.toml) to start a description of your own (--dataset mine.toml).")
    return 0


def cmd_presets(args) -> int:
    from mammo_tui import config as cfg

    for name in cfg.preset_names():
        print(f"{name:16} {cfg.preset_description(name)}")
    print(f"(files in {cfg.PRESETS_DIR}; copy one and pass --preset path/to/file.toml)")
    from mammo_tui.drivers.sweep_spec import SWEEPS_DIR, load_spec, sweep_names

    if sweep_names():
        print("\nsweeps (mammo-tui sweep NAME):")
        for name in sweep_names():
            print(f"{name:16} {load_spec(name).description}")
        print(f"(files in {SWEEPS_DIR}; copy one and pass its path to `mammo-tui sweep`)")
    return 0


def _dispatch(args) -> int:
    if args.command == "train":
        return cmd_train(args)
    if args.command == "cv":
        return cmd_cv(args)
    if args.command == "sweep":
        return cmd_sweep(args)
    if args.command == "plan":
        return cmd_plan(args)
    if args.command == "export":
        return cmd_export(args)
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
    if args.command == "layouts":
        return cmd_layouts(args)
    from mammo_tui.tui.app import run_app

    if args.command == "watch":
        from mammo_tui.tui.watchcheck import watch_problem

        problem = watch_problem(args.run_dir)  # a runs folder, or no run at all: say so, exit 2
        if problem:
            raise MammoError(problem)
        return run_app("watch", run_dir=args.run_dir, runs_root=args.runs_dir)
    if args.command == "runs":
        return run_app("runs", runs_root=args.runs_dir)
    return run_app("wizard", demo=args.demo, dataset=_dataset_spec(args), runs_root=args.runs_dir)


def main(argv: list[str] | None = None) -> int:
    """The only place an unexpected exception becomes "internal error" (exit 1); user errors are
    MammoError (exit 2), interrupts and SIGTERM/SIGHUP exit 130, a closed output pipe 141."""
    # OpenMP threads that spin while waiting slow training ~3x on a busy machine (measured on
    # 2 cores); sleeping waits cost nothing measurable when the machine is idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    previous = install_abort_handlers()
    die_with_parent()  # a parallel sweep's run: SIGTERM (saved, resumable) when the sweep dies
    try:
        code = _run(argv)
    except BrokenPipeError:  # the reader of our output left mid-command (`| head`)
        code = EXIT_CLOSED_PIPE
    finally:
        restore_handlers(previous)
        # output buffered for a pipe fails here, not in the interpreter's exit (also after --help)
        flushed = flush_stdout()
    # a result worth more than "output cut" (an error, a collapsed run) keeps its code
    return EXIT_CLOSED_PIPE if code == 0 and not flushed else code


def _run(argv: list[str] | None) -> int:
    try:
        return _dispatch(build_parser().parse_args(argv))
    except MammoError as exc:
        say(f"mammo-tui: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        say(f"mammo-tui: interrupted{f' by {exc}' if str(exc) else ''}")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except OSError as exc:
        if not exc.filename:
            return internal_error(exc)
        # a file the user named or the disk holds (permissions, a full disk): theirs to fix, not a bug
        say(f"mammo-tui: error: {exc.filename}: {exc.strerror or exc}")
        return MammoError.exit_code
    except Exception as exc:  # noqa: BLE001 - the one top-level net: a bug, said in one line
        return internal_error(exc)


if __name__ == "__main__":
    raise SystemExit(main())
