"""`mammo-tui sweep`: spec parsing, queue order, the manifest, leaderboard, resume, report, --jobs."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from corpus import TINY_SWEEP_SET as TINY  # every run: a few seconds on a CPU
from mammo_tui import cli
from mammo_tui.stats import fold_recalls, mean_std
from mammo_tui.drivers.leaderboard import format_leaderboard, leaderboard
from mammo_tui.drivers.sweep import SweepJob, reproduce_command, run_config, run_sweep
from mammo_tui.drivers.sweep_spec import load_spec
from mammo_tui.errors import ConfigError, RunDirError
from mammo_tui.metrics import selection_score
from mammo_tui.rundir import SWEEP_FILE


SPEC = """
[sweep]
base = "demo"
seeds = [0, 1]
""" + TINY + """
[[variants]]
name = "none"
set = { sampler = "none", class_weights = "none", loss = "ce" }
[[variants]]
name = "focal"
set = { sampler = "none", loss = "focal" }
[grid]
lr = [1e-3]
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def dataset_flags(spec) -> list[str]:
    return ["--csv", spec.csv, "--dicom-root", spec.dicom_root]


@pytest.fixture(scope="module")
def swept(tiny_demo, tmp_path_factory):
    """One finished 2 configurations x 2 seeds sweep, its events and its job (shared: ~10 s)."""
    root = tmp_path_factory.mktemp("sweep")
    spec = write(root / "spec.toml", SPEC)
    job = SweepJob(spec=str(spec), dataset=tiny_demo, outdir=str(root / "runs"), run_name="cmp")
    events = []
    result = run_sweep(job, events.append)
    return result, events, job


# -- the spec ---------------------------------------------------------------------------------------


def test_configuration_ids_and_seed_major_queue(tmp_path):
    spec = load_spec(str(write(tmp_path / "s.toml", SPEC.replace("lr = [1e-3]", "lr = [1e-4, 3e-4]"))))
    ids = [c.config_id for c in spec.configurations()]
    assert ids == ["none+lr=0.0001", "none+lr=0.0003", "focal+lr=0.0001", "focal+lr=0.0003"]
    queue = spec.queue()
    assert [(q.config_id, q.seed) for q in queue] == [(i, 0) for i in ids] + [(i, 1) for i in ids]
    assert queue[0].run == "none-lr-0.0001-seed0"
    assert queue[2].changes == {"sampler": "none", "loss": "focal", "lr": 0.0001}
    assert spec.planned() == 8


@pytest.mark.parametrize("text, message", [
    ("[sweep]\nseeds = [0]\n[set]\nepochz = 3\n", "unknown config key 'epochz'"),
    ("[sweep]\nseeds = [0]\n[grid]\nlr = []\n", "[grid] lr: must be a non-empty list"),
    ("[sweep]\nseeds = [0]\n[grid]\nlr = [2.0]\n", "lr must be in (0, 1]"),
    ("[sweep]\nseeds = [0]\n[[variants]]\nname = \"a\"\n[[variants]]\nname = \"a\"\n", "the name 'a' is used twice"),
    ("[sweep]\nseeds = [0, 1.5]\n", "seeds must be whole numbers"),
    ("[sweep]\nseeds = \"0\"\n", "seeds must be a non-empty list"),
    ("[sweep]\nseeds = [0]\n[[variants]]\nname = \"a\"\nset = { losss = \"ce\" }\n", "(a) set: unknown config key 'losss'"),
    ("[sweep]\nseeds = [0]\n[[variants]]\nname = \"a\"\nset = { sampler = \"often\" }\n", "sampler must be one of"),
    ("[sweep]\nseed = [0]\n", "[sweep] has no key 'seed'"),
    ("[sweeps]\nseeds = [0]\n", "unknown table [sweeps]"),
    ("[sweep]\nbase = \"nope\"\n", "unknown preset 'nope'"),
    ("[sweep]\nseeds = [0]\n[search]\ntrials = 2\n", "[search.space] must name at least one key"),
    ("[sweep]\nseeds = [0]\n[search]\ntrials = 2\n[search.space]\nlr = { low = 1e-2, high = 1e-5 }\n",
     "low (0.01) must be below high"),
    # a variant named like a search trial shared its folder (trial-0-seed0) with Optuna's trial 0
    ("[sweep]\nseeds = [0]\n[[variants]]\nname = \"trial-0\"\n", "is how the search names its trials"),
    ("[sweep]\nseeds = [0]\n[[variants]]\nname = \"--\"\n", "needs a letter or digit"),
    # 10^6 and 10^9 grids were accepted, then filled the memory
    ("[sweep]\nseeds = [0, 1]\n[grid]\nlr = [" + ", ".join(f"{(i + 1) / 1e4}" for i in range(60)) + "]\n"
     "weight_decay = [" + ", ".join(f"{i / 1e3}" for i in range(50)) + "]\n",
     "would train 6,000 runs: 3,000 configurations (60 lr x 50 weight_decay), x 2 seeds; at most 5,000"),
])
def test_bad_specs_exit_2_naming_file_table_and_key(tmp_path, capsys, text, message):
    spec = write(tmp_path / "bad.toml", text)
    assert cli.main(["sweep", str(spec), "--demo", "--no-ui", "--outdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.toml" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("sweep-*"))


def test_a_configuration_the_rules_refuse_names_it_and_leaves_no_folder(tmp_path, capsys):
    spec = write(tmp_path / "s.toml", '[sweep]\nbase = "demo"\nseeds = [0]\n[[variants]]\nname = "twice"\n'
                                      'set = { sampler = "weighted", class_weights = "balanced" }\n')
    assert cli.main(["sweep", str(spec), "--demo", "--no-ui", "--outdir", str(tmp_path / "runs"),
                     "--run-name", "x"]) == 2
    err = capsys.readouterr().err
    assert "s.toml: configuration twice (seed 0)" in err and "balances the classes twice" in err, err
    assert not (tmp_path / "runs" / "x").exists()


def test_one_process_per_sweep_folder(tmp_path):
    from mammo_tui.rundir import lock_run_dir

    spec = write(tmp_path / "s.toml", SPEC)
    (tmp_path / "busy").mkdir()
    lock = lock_run_dir(tmp_path / "busy")
    try:
        with pytest.raises(RunDirError, match="in use by another mammo-tui process"):
            run_sweep(SweepJob(spec=str(spec), demo=True, outdir=str(tmp_path), run_name="busy"))
    finally:
        lock.release()


def test_search_without_optuna_is_one_line_with_the_pip_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    spec = write(tmp_path / "s.toml", "[sweep]\nseeds = [0]\n[search]\ntrials = 2\n[search.space]\nlr = [1e-3, 1e-4]\n")
    assert cli.main(["sweep", str(spec), "--demo", "--no-ui", "--outdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install" in err and "optuna" in err, err


def test_dry_run_prints_the_queue(tmp_path, capsys):
    spec = write(tmp_path / "s.toml", SPEC)
    assert cli.main(["sweep", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.index("none-lr-0.001-seed0") < out.index("focal-lr-0.001-seed0") < out.index("none-lr-0.001-seed1")
    assert not list(tmp_path.glob("runs*"))


def test_defenses_sweep_is_built_in_and_valid_on_a_pretrained_base():
    from mammo_tui.config import resolve

    spec = load_spec("defenses")
    names = [c.config_id for c in spec.configurations()]
    assert names == ["none", "weighted_sampler", "class_weights", "focal", "logit_adjusted", "crt",
                     "head_only", "last_block", "last_two_blocks", "full"]
    assert spec.base == "auto" and spec.set["on_collapse"] == "warn" and spec.set["early_stop_patience"] == 0
    base = {**resolve("last_block").to_dict(), **spec.set}
    configs = {run.config_id: run_config(base, run, spec.source) for run in spec.queue()}  # each passes the rules
    assert configs["crt"].crt_epochs > 0 and configs["focal"].loss == "focal"
    assert configs["logit_adjusted"].loss == "logit_adjusted" and configs["class_weights"].class_weights == "balanced"
    assert [configs[n].freeze for n in ("head_only", "last_block", "last_two_blocks", "full")] == \
        ["head", "last_block", "last_two_blocks", "none"]
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"sweeps/*.toml"' in pyproject  # shipped in the wheel


def test_leaderboard_of_a_sweep_in_progress(tmp_path):
    """Statuses without a finished seed, a live run's epoch, ranking by the selection score."""
    def summary(run, status, bal=None, kappa=0.5, epochs_completed=1):
        (tmp_path / run).mkdir()
        metrics = {} if bal is None else {"balanced_accuracy_adjusted": bal, "kappa_quadratic": kappa,
                                          "auc_macro": None, "recall_per_class": [0.1, 0.5, 0.9, 0.4],
                                          "true_counts": [0, 3, 5, 2]}
        (tmp_path / run / "summary.json").write_text(json.dumps(
            {"status": status, "best_metrics": metrics, "epochs_completed": epochs_completed, "epochs": 5}))

    members = [{"run": f"{c}-seed{s}", "config_id": c, "seed": s, "changes": {"lr": i}}
               for s in (0, 1) for i, c in enumerate("abcdefg")]
    members[5]["pruned"] = members[12]["pruned"] = True  # f: an Optuna trial the pruner stopped
    write(tmp_path / SWEEP_FILE, json.dumps({"members": members}))
    summary("a-seed0", "healthy", 0.2)
    summary("a-seed1", "collapsed", 0.4)
    summary("b-seed0", "warning", 0.3 - 1e-12, kappa=0.6)  # ties a's bal mean within noise: kappa decides
    summary("c-seed0", "running", epochs_completed=3)
    summary("d-seed0", "interrupted")
    summary("e-seed0", "failed")
    summary("f-seed0", "interrupted")
    entries = leaderboard(tmp_path)
    assert [(e.config_id, e.rank, e.status) for e in entries] == [
        ("b", 1, "warning"), ("a", 2, "collapsed"), ("c", None, "running"), ("d", None, "interrupted"),
        ("e", None, "failed"), ("f", None, "pruned"), ("g", None, "pending")]
    a = entries[1]
    assert a.collapsed == 1 and a.seeds_done == 2 and a.balanced_accuracy_adjusted["mean"] == pytest.approx(0.3)
    assert a.lowest_recall["mean"] == 0.4  # class A has no validation images: not a recall of 0.1
    assert entries[2].epoch == 3 and entries[2].epochs == 5 and entries[2].running_run == "c-seed0"
    assert "ep 3/5" in format_leaderboard(entries)


def test_gpus_that_do_not_exist_are_refused_not_run_on_the_cpu():
    """`--gpus a,b`, or `--gpus 0` on a box without a GPU, trained on the CPU without a word."""
    import torch

    from mammo_tui.drivers.sweep_pool import slots
    from mammo_tui.errors import ConfigError

    with pytest.raises(ConfigError, match="'a', 'b' is not a GPU id"):
        slots(SweepJob(spec=None, gpus=["a", "b"]))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--gpus 0: no CUDA GPU is visible here"):
            slots(SweepJob(spec=None, gpus=["0"]))
        assert slots(SweepJob(spec=None, jobs=2)) == [None, None]  # --jobs alone: CPU slots, as before
        too_many = (os.cpu_count() or 1) + 1  # --jobs 1000 was accepted
        with pytest.raises(ConfigError, match=f"--jobs {too_many}: this machine has"):
            slots(SweepJob(spec=None, jobs=too_many))


def test_non_ascii_variant_names_keep_their_own_folders():
    """Names in other scripts were cut to "" and every such variant's run became "seed0"."""
    from mammo_tui.drivers.sweep_spec import run_name

    assert run_name("データ", 0) == "データ-seed0" and run_name("Überprüfung", 1) == "Überprüfung-seed1"
    assert run_name("データ", 0) != run_name("ノイズ", 0)
    from mammo_tui.errors import RunDirError

    with pytest.raises(RunDirError, match="the run folder of configuration 'xxx"):  # not "--run-name"
        run_name("x" * 300, 0)


def test_a_full_tie_ranks_the_healthier_configuration_first(tmp_path):
    """Equal selection scores kept queue order, so a "warning" configuration queued first ranked
    above a "healthy" one."""
    members = [{"run": f"{c}-seed0", "config_id": c, "seed": 0, "changes": {}} for c in "wh"]
    write(tmp_path / SWEEP_FILE, json.dumps({"members": members}))
    for config_id, status in (("w", "warning"), ("h", "healthy")):
        (tmp_path / f"{config_id}-seed0").mkdir()
        (tmp_path / f"{config_id}-seed0" / "summary.json").write_text(json.dumps(
            {"status": status, "epochs_completed": 2, "epochs": 2, "best_metrics": {
                "balanced_accuracy_adjusted": 0.5, "kappa_quadratic": 0.6, "auc_macro": 0.7}}))
    assert [(e.config_id, e.rank) for e in leaderboard(tmp_path)] == [("h", 1), ("w", 2)]


# -- a finished sweep -------------------------------------------------------------------------------


@pytest.mark.slow
def test_runs_train_in_seed_major_order_with_sweep_events(swept):
    result, events, _ = swept
    started = [e for e in events if e.type == "sweep_run_started"]
    assert [e.run for e in started] == ["none-lr-0.001-seed0", "focal-lr-0.001-seed0",
                                        "none-lr-0.001-seed1", "focal-lr-0.001-seed1"]
    assert [e.index for e in started] == [1, 2, 3, 4] and {e.total for e in started} == {4}
    # each run's own events are forwarded between its sweep events
    kinds = [e.type for e in events]
    first = kinds.index("sweep_run_started")
    assert kinds[first + 1:kinds.index("sweep_run_finished")].count("run_started") == 1
    assert kinds[-1] == "sweep_finished" and events[-1].exit_code == result.exit_code in (0, 3)
    manifest = json.loads((result.sweep_dir / SWEEP_FILE).read_text())
    assert manifest["status"] == "finished" and manifest["planned"] == 4
    assert [m["run"] for m in manifest["members"]] == [e.run for e in started]
    assert manifest["members"][1] == {"run": "focal-lr-0.001-seed0", "config_id": "focal+lr=0.001", "seed": 0,
                                      "changes": {"sampler": "none", "loss": "focal", "lr": 0.001}}
    assert manifest["outcome"] == result.best.status and manifest["preset"] == "demo"
    assert Path(manifest["dataset"]["csv"]).is_absolute() and manifest["group_key"]
    for member in manifest["members"]:  # each run trained the configuration with its seed
        config = json.loads((result.sweep_dir / member["run"] / "summary.json").read_text())["config"]
        assert config["seed"] == member["seed"] and config["lr"] == 0.001 and config["img_size"] == 32
        assert all(config[k] == v for k, v in member["changes"].items())


@pytest.mark.slow
def test_leaderboard_values_are_the_runs_summaries(swept):
    result, _, _ = swept
    entries = leaderboard(result.sweep_dir)
    assert len(entries) == 2 and [e.rank for e in entries] == [1, 2]
    for entry in entries:
        best = [json.loads((result.sweep_dir / run / "summary.json").read_text())["best_metrics"] for run in entry.runs]
        for key in ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro"):
            assert getattr(entry, key) == mean_std([b[key] for b in best])
        assert entry.lowest_recall == mean_std([min(r for r in fold_recalls(b) if r is not None) for b in best])
        assert entry.seeds == [0, 1] and entry.seeds_done == entry.seeds_planned == 2
        statuses = [json.loads((result.sweep_dir / run / "summary.json").read_text())["status"] for run in entry.runs]
        assert entry.collapsed == statuses.count("collapsed")
        assert entry.score == selection_score({k: getattr(entry, k)["mean"] for k in
                                               ("kappa_quadratic", "balanced_accuracy_adjusted", "auc_macro")})
    assert entries[0].score >= entries[1].score
    text = format_leaderboard(entries)
    assert "none+lr=0.001" in text and "focal+lr=0.001" in text and " ± " in text
    # a single seed's value is the run's own number, exactly
    one = json.loads((result.sweep_dir / entries[0].runs[0] / "summary.json").read_text())["best_metrics"]
    manifest = json.loads((result.sweep_dir / SWEEP_FILE).read_text())
    manifest["members"] = [m for m in manifest["members"] if m["run"] == entries[0].runs[0]]
    single = leaderboard(result.sweep_dir, manifest)[0]
    assert single.kappa_quadratic["mean"] == one["kappa_quadratic"] and single.kappa_quadratic["std"] == 0.0


@pytest.mark.slow
def test_runs_listing_shows_the_sweep_and_train_resume_refuses_it(swept):
    from mammo_tui.app import TrainRequest, train
    from mammo_tui.runread import list_runs

    result, _, _ = swept
    rows = list_runs(result.sweep_dir.parent)
    assert rows[0].kind == "sweep" and rows[0].name == "cmp" and rows[0].folds == 4 and rows[0].folds_done == 4
    assert rows[0].status == result.best.status
    assert rows[0].kappa_quadratic == result.best.kappa_quadratic["mean"]
    assert [r.kind for r in rows[1:]] == ["member"] * 4
    with pytest.raises(RunDirError, match="a sweep; continue it with `mammo-tui sweep --resume"):
        train(TrainRequest(resume=str(result.sweep_dir)))


@pytest.mark.slow
def test_a_rerun_keeps_finished_runs(swept):
    result, _, job = swept
    before = {p: p.stat().st_mtime_ns for p in result.sweep_dir.glob("*/summary.json")}
    events = []
    again = run_sweep(job, events.append)
    assert again.exit_code == result.exit_code
    assert [e.kept for e in events if e.type == "sweep_run_started"] == [True] * 4
    assert not [e for e in events if e.type == "run_started"]
    assert before == {p: p.stat().st_mtime_ns for p in result.sweep_dir.glob("*/summary.json")}
    assert [e.rank for e in again.entries] == [e.rank for e in result.entries]


@pytest.mark.slow
def test_resume_reads_the_spec_and_dataset_from_the_manifest(swept, capsys):
    result, _, _ = swept
    previous = signal.getsignal(signal.SIGINT)  # the headless sweep installs its own handlers
    try:
        code = cli.main(["sweep", "--resume", str(result.sweep_dir), "--no-ui"])
    finally:
        signal.signal(signal.SIGINT, previous)
    out = capsys.readouterr().out
    assert code == result.exit_code, out
    assert out.count("already finished, kept") == 4
    assert f"best configuration: {result.best.config_id}" in out


@pytest.mark.slow
def test_a_changed_spec_is_refused_naming_what_changed(swept, tmp_path, capsys):
    result, _, job = swept
    changed = write(tmp_path / "spec.toml", SPEC.replace("lr = [1e-3]", "lr = [1e-3, 1e-4]"))
    code = cli.main(["sweep", str(changed), "--no-ui", *dataset_flags(job.dataset), "--outdir",
                     str(result.sweep_dir.parent), "--run-name", "cmp"])
    err = capsys.readouterr().err
    assert code == 2 and "[grid] lr: [0.001] -> [0.001, 0.0001]" in err and "another --run-name" in err, err
    assert json.loads((result.sweep_dir / SWEEP_FILE).read_text())["status"] == "finished"
    with pytest.raises(ConfigError, match=r"\[sweep\] seeds: \[0, 1\] -> \[0\]"):
        run_sweep(SweepJob(spec=str(write(tmp_path / "s2.toml", SPEC.replace("seeds = [0, 1]", "seeds = [0]"))),
                           resume=str(result.sweep_dir)))


@pytest.mark.slow
def test_report_of_a_sweep(swept, tmp_path):
    from mammo_tui.report import write_report

    result, _, _ = swept
    path = write_report(result.sweep_dir)
    text = path.read_text()
    assert path == result.sweep_dir / "report.md"
    assert "# Sweep report: cmp" in text and "## Leaderboard" in text and "## Best configuration" in text
    best = result.best
    assert f"**{best.config_id}**" in text
    board = text.split("## Leaderboard")[1].split("## Best configuration")[0]
    assert board.index(best.config_id) < board.index(result.entries[1].config_id)  # ranked
    assert "## Collapses" in text and "(none-lr-0.001-seed0/report.md)" in text
    assert (result.sweep_dir / "none-lr-0.001-seed0" / "report.md").is_file()
    # the printed command trains exactly the best configuration's first seed
    command = reproduce_command(result.sweep_dir, best)
    assert command in text
    args = cli.build_parser().parse_args(shlex.split(command)[1:])
    summary = json.loads((result.sweep_dir / best.runs[0] / "summary.json").read_text())
    assert cli._resolve_config(args).to_dict() == summary["config"]
    assert Path(args.csv).is_file() and args.dicom_root


# -- interrupts and resume ----------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_then_rerun_continues_through_the_cli(tiny_demo, tmp_path):
    # a: 1 epoch (finishes), b: 6 epochs (interrupted part-way), c: after it
    spec = write(tmp_path / "spec.toml", '[sweep]\nbase = "demo"\nseeds = [0]\n' + TINY + """
[[variants]]
name = "a"
[[variants]]
name = "b"
set = { epochs = 6 }
[[variants]]
name = "c"
set = { lr = 0.002 }
""")
    args = [sys.executable, "-m", "mammo_tui", "sweep", str(spec), "--no-ui", *dataset_flags(tiny_demo),
            "--outdir", str(tmp_path / "runs"), "--run-name", "s"]
    sweep_dir = tmp_path / "runs" / "s"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (sweep_dir / "b-seed0" / "events.jsonl").exists():  # a has finished, b has started
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    assert "continue it with: mammo-tui sweep --no-ui --resume" in out
    manifest = json.loads((sweep_dir / SWEEP_FILE).read_text())
    assert manifest["status"] == "interrupted"
    a_summary = (sweep_dir / "a-seed0" / "summary.json").read_text()
    assert json.loads(a_summary)["status"] in ("healthy", "warning", "collapsed")
    assert json.loads((sweep_dir / "b-seed0" / "summary.json").read_text())["status"] == "interrupted"
    assert not (sweep_dir / "c-seed0").exists()

    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode in (0, 3), again.stdout + again.stderr
    assert "sweep run 1/3: a-seed0 (a, seed 0) already finished, kept" in again.stdout
    assert (sweep_dir / "a-seed0" / "summary.json").read_text() == a_summary  # not retrained
    b_events = [json.loads(line) for line in (sweep_dir / "b-seed0" / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in b_events].count("run_started") == 2  # resumed in the same folder
    assert json.loads((sweep_dir / "b-seed0" / "summary.json").read_text())["epochs_completed"] == 6
    assert json.loads((sweep_dir / "c-seed0" / "summary.json").read_text())["status"] != "interrupted"
    assert json.loads((sweep_dir / SWEEP_FILE).read_text())["status"] == "finished"
    assert "best configuration:" in again.stdout and "train it: mammo-tui train --no-ui" in again.stdout


@pytest.mark.slow
def test_jobs_2_trains_runs_as_parallel_subprocesses(tiny_demo, tmp_path):
    spec = write(tmp_path / "spec.toml", '[sweep]\nbase = "demo"\nseeds = [0]\n' + TINY + """
[grid]
lr = [1e-3, 3e-4]
""")
    events = []
    result = run_sweep(SweepJob(spec=str(spec), dataset=tiny_demo, outdir=str(tmp_path), run_name="par", jobs=2),
                       events.append)
    assert result.exit_code in (0, 3)
    # both slots filled before either run ended
    assert [e.type for e in events if e.type.startswith("sweep_run")] == \
        ["sweep_run_started", "sweep_run_started", "sweep_run_finished", "sweep_run_finished"]
    assert not [e for e in events if e.type == "run_started"]  # their own events stay in their folders
    spec_obj = load_spec(str(spec))
    base = json.loads((result.sweep_dir / SWEEP_FILE).read_text())["config"]
    for run in spec_obj.queue():
        log = (result.sweep_dir / "logs" / f"{run.run}.log").read_text()
        assert "run directory" in log
        summary = json.loads((result.sweep_dir / run.run / "summary.json").read_text())
        assert summary["config"] == run_config(base, run, "test").to_dict()  # the subprocess trained exactly it
    runs = [json.loads((result.sweep_dir / r.run / "summary.json").read_text()) for r in spec_obj.queue()]
    assert runs[1]["started"] < runs[0]["finished"]  # the second started before the first ended: in parallel
    assert [e.rank for e in leaderboard(result.sweep_dir)] == [1, 2]


@pytest.mark.slow
def test_an_interrupted_search_continues_its_trial(tiny_demo, tmp_path):
    optuna = pytest.importorskip("optuna")
    spec = write(tmp_path / "spec.toml", '[sweep]\nbase = "demo"\nseeds = [0]\n' + TINY + """
[search]
trials = 2
sampler = "random"
[search.space]
lr = { low = 1e-4, high = 1e-2, log = true }
loss = ["ce", "focal"]
""")
    job = SweepJob(spec=str(spec), dataset=tiny_demo, outdir=str(tmp_path), run_name="search")
    import threading

    cancel = threading.Event()

    def stop_in_second_trial(event):  # as Ctrl-C would, during trial-1's run
        if event.type == "run_started" and "trial-1" in event.run_name:
            cancel.set()

    first = run_sweep(job, stop_in_second_trial, cancel)
    assert first.exit_code == 130
    sweep_dir = first.sweep_dir
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "RUNNING"]
    params = study.trials[1].params
    again = run_sweep(job)
    assert again.exit_code in (0, 3)
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[1].params == params  # the same trial, continued, not a new one
    events = [json.loads(line) for line in (sweep_dir / "trial-1-seed0" / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events].count("run_started") == 2
    summary = json.loads((sweep_dir / "trial-1-seed0" / "summary.json").read_text())
    assert summary["config"]["lr"] == pytest.approx(params["lr"]) and summary["config"]["loss"] == params["loss"]
    assert study.trials[1].value == summary["best_metrics"]["balanced_accuracy_adjusted"]
    manifest = json.loads((sweep_dir / SWEEP_FILE).read_text())
    assert [m["config_id"] for m in manifest["members"]] == ["trial-0", "trial-1"]
    assert {e.config_id for e in again.entries} == {"trial-0", "trial-1"}
    assert np.isfinite(again.best.score[0])


def test_configurations_the_rules_refuse_on_this_base_are_skipped_and_said(tmp_path, tiny_demo):
    """On a from-scratch base the freezing variants are refused (a frozen random backbone is no
    defense): they are skipped and named, the others train."""
    from mammo_tui.drivers.sweep_report import render_sweep_report
    from mammo_tui.events import LogMessage

    spec = write(tmp_path / "s.toml", '[sweep]\nbase = "demo"\nseeds = [0]\n' + TINY +
                 '[[variants]]\nname = "none"\nset = { sampler = "none" }\n'
                 '[[variants]]\nname = "head_only"\nset = { freeze = "head" }\n'
                 '[[variants]]\nname = "again"\nset = { sampler = "none", loss = "ce" }\n')  # = none here
    heard = []
    result = run_sweep(SweepJob(spec=str(spec), dataset=tiny_demo, outdir=str(tmp_path), run_name="sk"), heard.append)
    manifest = json.loads((result.sweep_dir / SWEEP_FILE).read_text())
    assert [m["run"] for m in manifest["members"]] == ["none-seed0"] and manifest["planned"] == 1
    assert [s["config_id"] for s in manifest["skipped"]] == ["head_only", "again"]
    assert manifest["skipped"][0]["reason"].startswith("freeze=head with pretrained=false freezes a randomly")
    assert manifest["skipped"][1]["reason"].startswith("the same config as none on this base")
    said = [e.message for e in heard if isinstance(e, LogMessage) and "skipped" in e.message]
    assert said and "head_only" in said[0]
    assert [e.config_id for e in result.entries] == ["none"] and not (result.sweep_dir / "head_only-seed0").exists()
    report = render_sweep_report(result.sweep_dir)
    assert "## Skipped configurations" in report and "- head_only:" in report


def test_the_report_of_a_sweep_nobody_runs_says_so(tmp_path):
    """sweep.json says running after a kill -9: the report says no process holds it, and how to go on."""
    from mammo_tui.drivers.sweep_report import render_sweep_report
    from mammo_tui.rundir import lock_run_dir

    sweep = tmp_path / "sw"
    sweep.mkdir()
    (sweep / SWEEP_FILE).write_text(json.dumps({"status": "running", "members": [], "spec": {"seeds": [0]}}))
    lock = lock_run_dir(sweep)  # alive: a process holds the folder
    try:
        assert "no process holds it" not in render_sweep_report(sweep)
    finally:
        lock.release()
    report = render_sweep_report(sweep)  # the lock file stays behind, held by nobody
    assert "no process holds it (stopped or killed)" in report and f"mammo-tui sweep --resume {sweep}" in report
