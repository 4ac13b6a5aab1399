"""The application layer (mammo_tui/app): planning as one stage, a first run that decodes each
image once, launching a run or a CV from one request type, fixes as requests and commands."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mammo_tui
from mammo_tui.app import TrainRequest, train
from mammo_tui.app.fixes import apply_command, fixed_request
from mammo_tui.app.planning import expected_preprocessing, plan_dataset
from mammo_tui.config import TrainConfig
from mammo_tui.preprocessing import Preprocessing
from mammo_tui.runlog import read_events

PACKAGE = Path(mammo_tui.__file__).parent


def calls_of(name: str) -> list[str]:
    """The package modules that call `name(...)` (a plain or attribute call)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if called == name:
                    found.append(path.relative_to(PACKAGE).as_posix())
    return sorted(set(found))


def test_one_place_makes_a_plan():
    # plan, the wizard, train, cv and sweep (base = auto) all plan through app.planning.make_plan
    assert calls_of("plan_for") == ["app/planning.py"]
    assert "app/planning.py" in calls_of("make_plan")


@pytest.mark.parametrize("demo", [False, True])
def test_the_scan_caches_at_the_preprocessing_the_plan_picks(tiny_demo, demo):
    planned = plan_dataset(tiny_demo, {}, demo=demo)
    assert planned.preprocessing == expected_preprocessing({}, demo)
    assert planned.preprocessing == Preprocessing.of(planned.plan.config)
    # the user's keys win in both
    assert expected_preprocessing({"img_size": 48, "crop_breast": False}) == Preprocessing(48, False)


@pytest.mark.slow
def test_a_first_run_with_preset_auto_decodes_each_image_once(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_TUI_CACHE", str(tmp_path / "fresh-cache"))  # nothing decoded before
    result = train(TrainRequest(dataset=tiny_demo, outdir=str(tmp_path), run_name="auto",
                                overrides={"epochs": 1, "max_batches_per_epoch": 1, "batch_size": 8}))
    assert result.status in ("healthy", "warning", "collapsed")  # one batch: any verdict, but it trained
    loaded = [e.message for e in read_events(result.run_dir) if getattr(e, "message", "").startswith("loaded ")]
    # the scan's decode check stored every image at the plan's size: training decoded none again
    assert len(loaded) == 1 and "(0 decoded, " in loaded[0], loaded


def test_a_fix_is_a_request_and_a_command():
    request = TrainRequest(config=TrainConfig(), demo=True, run_name="first", origin="preset demo")
    changed = TrainConfig(lr=1e-4)
    fresh = fixed_request(request, changed, run_dir=None, fresh=True, parent="runs/first")
    assert (fresh.config, fresh.resume, fresh.run_name, fresh.parent_run, fresh.restart) == (
        changed, None, None, "runs/first", False)
    assert fresh.origin == "fix applied to runs/first"
    again = fixed_request(request, changed, run_dir="runs/first", fresh=False)
    assert (again.resume, again.force, again.restart) == ("runs/first", True, True)
    chosen = [{"key": "lr", "value": 0.0001, "reason": "lower"}]
    assert apply_command(chosen, "runs/my run") == "mammo-tui train --resume 'runs/my run' --set lr=0.0001 --force"
    assert apply_command(chosen, None, cv_folds=5).startswith("mammo-tui cv --folds 5 ")


def test_a_fix_for_a_run_with_no_epoch_left_is_refused_unrecorded_and_the_printed_command_trains(
        tiny_demo, tiny_config, tmp_path):
    """`a` on a finished run's read-only dashboard printed `train --resume RUN --set k=v --force`,
    which trained no epoch yet wrote the change into config.toml and config_history. The engine
    now refuses such a change, naming --set epochs, and writes nothing; the printed command adds
    the epochs, so it does what it says."""
    from mammo_tui.errors import ConfigError
    from mammo_tui.rundir import read_summary

    first = train(TrainRequest(config=tiny_config(epochs=1, max_batches_per_epoch=1), dataset=tiny_demo,
                               outdir=str(tmp_path)))
    config_toml = (first.run_dir / "config.toml").read_bytes()
    history = read_summary(first.run_dir)["config_history"]
    with pytest.raises(ConfigError, match=r"trained 1 of its 1 epochs.*--set epochs=6"):
        train(TrainRequest(resume=str(first.run_dir), overrides={"sampler": "none"}, force=True))
    assert (first.run_dir / "config.toml").read_bytes() == config_toml
    assert read_summary(first.run_dir)["config_history"] == history

    chosen = [{"key": "sampler", "value": "none", "reason": "balance less"}]
    command = apply_command(chosen, str(first.run_dir), finished_at=1)
    assert command == f"mammo-tui train --resume {first.run_dir} --set sampler=none --set epochs=6 --force"
    assert apply_command(chosen, str(first.run_dir)) == (
        f"mammo-tui train --resume {first.run_dir} --set sampler=none --force")  # epochs left: as before
