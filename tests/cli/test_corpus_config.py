"""Bad-input corpus: config values out of range, through --set, flags, presets, cv and a run's
config.toml. Each case must exit 2 naming the key and its range, before any data is read."""

from __future__ import annotations

import pytest

from corpus import FAST, assert_clean, mammo


@pytest.mark.parametrize("item, named", [
    ("lr=nan", "lr must be in (0, 1]"),
    ("lr=inf", "lr must be in (0, 1]"),
    ("weight_decay=-0.1", "weight_decay must be in [0, 1]"),
    ("grad_clip=-1", "grad_clip must be in [0, 1000]"),
    ("seed=4294967297", "seed must be in [0, 2147483647]"),
    ("img_size=100000", "img_size must be in [16, 2048]"),
    ("max_batches_per_epoch=-1", "max_batches_per_epoch must be in [0, 1000000000]"),
    ("num_workers=1000", "num_workers must be in [-1, 64]"),
    ("collapse_kappa=5", "collapse_kappa must be in [-1, 1]"),
    ("warn_drift=nan", "warn_drift must be in (0, 1]"),
    ("epochs=1e9", "epochs must be in [1, 10000]"),
    ('weights="a\\u0000b.pth"', "weights must be one line of text"),
])
def test_plan_refuses_an_out_of_range_set_value(tmp_path, item, named):
    proc = mammo("plan", "--demo", "--set", item, cwd=tmp_path)
    out = assert_clean(proc, 2, f"--set {item.split('=')[0]}", named)
    assert "mammo-tui: error:" in out


@pytest.mark.parametrize("args, named", [
    (["train", "--demo", "--no-ui", "--lr", "nan"], "--lr: lr must be in (0, 1]"),
    (["train", "--demo", "--no-ui", "--seed", "-1"], "--seed: seed must be in [0, 2147483647]"),
    (["train", "--demo", "--no-ui", "--img-size", "100000"], "--img-size: img_size must be in [16, 2048]"),
    (["cv", "--demo", "--no-ui", "--set", "la_tau=-1"], "la_tau must be in [0, 10]"),
])
def test_train_and_cv_flags_out_of_range(tmp_path, args, named):
    proc = mammo(*args, "--outdir", tmp_path / "runs", cwd=tmp_path)
    assert_clean(proc, 2, named)
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


def test_a_preset_file_out_of_range_names_the_file(tmp_path):
    preset = tmp_path / "huge.toml"
    preset.write_text('arch = "resnet18"\nimg_size = 100000\n')
    proc = mammo("train", "--demo", "--no-ui", "--preset", preset, "--outdir", tmp_path / "runs", cwd=tmp_path)
    assert_clean(proc, 2, "huge.toml", "img_size must be in [16, 2048]")


def test_resume_names_an_out_of_range_value_in_config_toml(tmp_path):
    run = tmp_path / "runs" / "edited"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text('arch = "resnet18"\nlr = nan\n')
    (run / "dataset.json").write_text('{"spec": {"csv": "labels.csv"}}')  # the config is read before the data
    proc = mammo("train", "--no-ui", "--resume", run, cwd=tmp_path)
    assert_clean(proc, 2, "config.toml", "lr must be in (0, 1]")


@pytest.mark.slow
def test_the_range_bounds_themselves_train(tmp_path):
    # the largest seed and the smallest image size are accepted, and a run with them finishes
    proc = mammo("train", "--demo", "--no-ui", *FAST, "--img-size", "16", "--set", "seed=2147483647",
                 "--set", "max_batches_per_epoch=1", "--outdir", tmp_path / "runs", cwd=tmp_path)
    assert_clean(proc, (0, 3))
