"""`--track` and `export` on the command line: mistakes exit 2 with a message naming them, before
any dataset is read; a missing library names the pip command. Plus the spec parser and the config
key `track`, which a resume or a CV does not count as a config change."""

from __future__ import annotations

import subprocess
import sys

import pytest

from corpus import assert_clean, mammo
from mammo_tui import config
from mammo_tui.errors import ConfigError
from mammo_tui.tracking.spec import TrackingError, TrackSpec, mlflow_uri, parse_specs, tracking_specs


@pytest.mark.parametrize("args, named", [
    (["train", "--no-ui", "--demo", "--track", "wandb:proj"], "unknown tracking kind 'wandb'"),
    (["cv", "--no-ui", "--demo", "--track", "mlflow:"], "say where to write"),
    (["sweep", "defenses", "--no-ui", "--demo", "--track", "wandb:proj"], "unknown tracking kind 'wandb'"),
    (["train", "--no-ui", "--demo", "--set", "track=tensorboard"], "say where to write"),
    (["export", "nowhere", "--to", "mlflow"], "--uri URI"),
    (["export", "nowhere", "--to", "tensorboard", "--uri", "http://x"], "give --dir DIR"),
    (["export", "nowhere", "--to", "mlflow", "--dir", "store"], "nowhere is not a directory"),
])
def test_track_and_export_mistakes_exit_2_with_a_message(tmp_path, args, named):
    out = assert_clean(mammo(*args, cwd=tmp_path, timeout=120), 2, named)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "store").exists(), out


def test_export_of_a_folder_that_is_not_a_run_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean(mammo("export", "empty", "--to", "tensorboard", "--dir", "tb", cwd=tmp_path, timeout=120), 2,
                 "is not a run directory (no events.jsonl)")


def _without(module: str, *args: str, cwd) -> subprocess.CompletedProcess:
    """The CLI in a process where `module` cannot be imported (as if not installed)."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            f"from mammo_tui.cli import main\nraise SystemExit(main({list(args)!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module, spec, named", [
    ("mlflow", "mlflow:store", 'pip install "mammo-tui[mlflow]"'),
    ("tensorboard", "tensorboard:tb", 'pip install "mammo-tui[tensorboard]"'),
    ("sqlalchemy", "mlflow:sqlite:///mlflow.db", "pip install sqlalchemy alembic"),
])
def test_a_missing_library_names_the_pip_command(tmp_path, module, spec, named):
    proc = _without(module, "train", "--no-ui", "--demo", "--track", spec, cwd=tmp_path)
    out = assert_clean(proc, 2, named)
    assert len(out.strip().splitlines()) == 1 and not (tmp_path / "runs").exists(), out


def test_specs_parse_split_and_drop_repeats():
    assert parse_specs("mlflow:a, tensorboard:b,,MLflow:a") == [TrackSpec("mlflow", "a"), TrackSpec("tensorboard", "b")]
    # a --track flag is one spec, commas and all
    assert parse_specs(["mlflow:http://host:5000/x,y"]) == [TrackSpec("mlflow", "http://host:5000/x,y")]
    assert parse_specs("") == []
    with pytest.raises(TrackingError, match="unknown tracking kind 'neptune'"):
        parse_specs("mlflow:a,neptune:b")
    assert mlflow_uri("http://host:5000") == "http://host:5000" and mlflow_uri("file:///x") == "file:///x"
    assert mlflow_uri("rel/store").startswith("file:///") and mlflow_uri("rel/store").endswith("/rel/store")
    both = tracking_specs(["tensorboard:b"], "mlflow:a,tensorboard:b")
    assert [s.text for s in both] == ["tensorboard:b", "mlflow:a"]


def test_track_is_a_config_key_that_diff_leaves_out():
    a = config.resolve("demo", {"track": "mlflow:a"})
    b = a.replace(track="tensorboard:b")
    assert a.track == "mlflow:a" and config.diff(a, b) == {}
    assert config.diff(a, b, training_only=False) == {"track": ("mlflow:a", "tensorboard:b")}
    assert config.diff(a, b.replace(lr=0.5)) == {"lr": (a.lr, 0.5)}
    with pytest.raises(ConfigError, match="unknown tracking kind"):
        config.parse_set(["track=comet:x"])


def test_cv_resume_accepts_another_track(tmp_path):
    """cv --resume compares the CV's config with the flags: `track` is not part of it."""
    from mammo_tui.drivers.cv import _check_changes

    saved = config.resolve("demo", {"track": "mlflow:a"})
    _check_changes(tmp_path, {"folds": 3, "config": saved.to_dict()}, {"track": "tensorboard:b"}, None, None)
    with pytest.raises(ConfigError, match="lr"):
        _check_changes(tmp_path, {"folds": 3, "config": saved.to_dict()}, {"lr": 0.5}, None, None)
