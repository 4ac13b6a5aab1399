"""One decision flow in every path: `plan`, the wizard, `train` and `cv` agree for the same
dataset and flags (without --preset, train and cv train the plan's preset, "preset auto")."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tomllib

import pytest

from mammo_tui.tui.app import MammoApp
from mammo_tui.tui.configure import ConfigScreen
from mammo_tui.tui.decision import DecisionScreen
from mammo_tui.tui.fingerprint_view import FingerprintScreen
from tui_helpers import wait_until

FLAGS = ["--epochs", "1", "--img-size", "32", "--batch-size", "16", "--lr", "0.002", "--set", "augment=false",
         "--set", "max_batches_per_epoch=1", "--set", "num_workers=0"]
HEADLINE = "preset auto: from_scratch (rule 1 of 4; no pretrained weights)"


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mammo_tui", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)


async def wizard_config(spec, overrides, tmp_path):
    app = MammoApp("wizard", dataset=spec, overrides=overrides, runs_root=str(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        for screen_type in (FingerprintScreen, DecisionScreen):
            await wait_until(pilot, lambda: isinstance(app.screen, screen_type), what=screen_type.__name__)
            await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfigScreen), what="ConfigScreen")
        await pilot.pause()
        return app.screen.validate().to_dict(), app.screen.origin


@pytest.mark.slow
def test_plan_the_wizard_train_and_cv_train_the_same_config(tiny_demo, tmp_path):
    data = ["--csv", tiny_demo.csv, "--dicom-root", tiny_demo.dicom_root]
    planned = cli("plan", tiny_demo.csv, "--dicom-root", tiny_demo.dicom_root, *FLAGS, "--json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["preset"] == "from_scratch" and plan["weights"]["available"] is False

    trained = cli("train", "--no-ui", *data, *FLAGS, "--outdir", tmp_path / "runs", "--run-name", "t", cwd=tmp_path)
    assert trained.returncode in (0, 3), trained.stdout[-2000:] + trained.stderr[-2000:]
    assert HEADLINE in trained.stdout  # said on the console before training starts
    assert trained.stdout.index(HEADLINE) < trained.stdout.index("epoch 1/1")
    toml = (tmp_path / "runs" / "t" / "config.toml").read_text()
    assert f"# From epoch 1: {HEADLINE}" in toml

    cv = cli("cv", "--no-ui", "--folds", "2", *data, *FLAGS, "--outdir", tmp_path / "runs", "--run-name", "cv",
             cwd=tmp_path)
    assert cv.returncode in (0, 3), cv.stdout[-2000:] + cv.stderr[-2000:]
    assert HEADLINE in cv.stdout
    manifest = json.loads((tmp_path / "runs" / "cv" / "cv.json").read_text())

    from mammo_tui.config import parse_set

    overrides = {"epochs": 1, "img_size": 32, "batch_size": 16, "lr": 0.002,
                 **parse_set(["augment=false", "max_batches_per_epoch=1", "num_workers=0"])}
    wizard, origin = asyncio.run(wizard_config(tiny_demo, overrides, tmp_path))
    assert HEADLINE in origin

    assert plan["config"] == tomllib.loads(toml) == manifest["config"] == wizard
    assert plan["config"]["lr"] == 0.002 and plan["config"]["freeze"] == "none"
    assert manifest["preset"] == "from_scratch"


@pytest.mark.slow
def test_with_a_weights_file_the_plan_freezes_and_train_follows(tiny_demo, tmp_path, backbone_weights):
    data = ["--csv", tiny_demo.csv, "--dicom-root", tiny_demo.dicom_root]
    flags = [*FLAGS, "--arch", "resnet18", "--weights", backbone_weights]
    plan = json.loads(cli("plan", tiny_demo.csv, "--dicom-root", tiny_demo.dicom_root, *flags, "--json",
                          cwd=tmp_path).stdout)
    assert (plan["preset"], plan["config"]["freeze"]) == ("head_only", "head")
    trained = cli("train", "--no-ui", *data, *flags, "--outdir", tmp_path / "runs", "--run-name", "w", cwd=tmp_path)
    assert "preset auto: head_only (rule 1 of 4)" in trained.stdout, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert tomllib.loads((tmp_path / "runs" / "w" / "config.toml").read_text()) == plan["config"]


def test_plan_prints_patients_weights_and_the_config(tiny_demo, tmp_path):
    out = cli("plan", tiny_demo.csv, "--dicom-root", tiny_demo.dicom_root, "--epochs", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert " images from " in text and " patients" in text
    assert "Pretrained weights: NONE - no ImageNet weights for resnet" in text
    assert "Config: resnet18 freeze=none warmup=0" in text and "epochs=2" in text
    assert "Train it: mammo-tui train" in text
