"""Bad-input corpus: damaged checkpoints and --weights files, through every command that reads them.

Each case damages one file of a copy of a tiny finished run, runs the real CLI, and expects exit 2
with a message that names the file and what is wrong (never a traceback).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from corpus import FAST, assert_clean, mammo


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """One tiny finished run (one batch, 32 px): its checkpoints are what the cases damage."""
    root = tmp_path_factory.mktemp("corpus-ckpt")
    proc = mammo("train", "--demo", "--no-ui", *FAST, "--set", "max_batches_per_epoch=1",
                 "--outdir", root / "runs", "--run-name", "base", cwd=root)
    assert_clean(proc, (0, 3))
    return root / "runs" / "base"


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _edit(**changes):
    def damage(path: Path) -> None:
        torch.save({**_load(path), **changes}, path)
    return damage


def _drop(key: str):
    def damage(path: Path) -> None:
        checkpoint = _load(path)
        del checkpoint[key]
        torch.save(checkpoint, path)
    return damage


def _config(**changes):
    def damage(path: Path) -> None:
        checkpoint = _load(path)
        torch.save({**checkpoint, "config": {**checkpoint["config"], **changes}}, path)
    return damage


def _model(make):
    def damage(path: Path) -> None:
        torch.save({**_load(path), "model": make()}, path)
    return damage


def _other_arch() -> dict:
    from mammo_tui.engine.models import build_model

    return build_model("resnet34", 4, pretrained=False).state_dict()


def _three_classes() -> dict:
    from mammo_tui.engine.models import build_model

    return build_model("resnet18", 3, pretrained=False).state_dict()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# what is done to the file -> what the message must say about it
DAMAGE = {
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "truncated": (_truncate, "truncated"),
    "text": (lambda p: p.write_text("not a checkpoint\n"), "not a PyTorch"),
    "tensor": (lambda p: torch.save(torch.zeros(3), p), "Tensor"),
    "list": (lambda p: torch.save([1, 2], p), "list"),
    "no-model": (_drop("model"), "model"),
    "no-config": (_drop("config"), "config"),
    "format-99": (_edit(format_version=99), "format_version 99"),
    "img-size-neg": (_edit(img_size=-5), "img_size"),
    "unknown-config-key": (_config(learning_rate=0.1), "learning_rate"),
    "config-lr-nan": (_config(lr=float("nan")), "lr must be in"),
    "other-arch": (_model(_other_arch), "resnet18"),
    "three-classes": (_model(_three_classes), "head"),
}


def _damaged(base_run: Path, tmp_path: Path, name: str, kind: str) -> tuple[Path, Path, str]:
    run = Path(shutil.copytree(base_run, tmp_path / "run"))
    target = run / "checkpoints" / name
    if not target.exists():  # healthy.pt: only written by a healthy epoch; a copy of best.pt stands in
        shutil.copy(run / "checkpoints" / "best.pt", target)
    damage, said = DAMAGE[kind]
    damage(target)
    return run, target, said


# every kind is checked in-process too (tests/test_models.py); the CLI cases cover each reader
@pytest.mark.slow
@pytest.mark.parametrize("kind", [kind for kind in DAMAGE if kind not in ("list", "config-lr-nan")])
def test_eval_names_the_damaged_best_checkpoint(base_run, tmp_path, demo_dataset, kind):
    run, target, said = _damaged(base_run, tmp_path, "best.pt", kind)
    proc = mammo("eval", run, "--csv", demo_dataset.csv, "--dicom-root", demo_dataset.dicom_root, cwd=tmp_path)
    assert_clean(proc, 2, str(target), said)


@pytest.mark.parametrize("kind", ["empty", "three-classes"])
def test_predict_names_the_damaged_best_checkpoint(base_run, tmp_path, kind):
    run, target, said = _damaged(base_run, tmp_path, "best.pt", kind)
    proc = mammo("predict", run, tmp_path / "x.png", cwd=tmp_path)
    assert_clean(proc, 2, str(target), said)


@pytest.mark.slow
@pytest.mark.parametrize("name, kind", [
    ("last.pt", "empty"), ("last.pt", "no-config"), ("last.pt", "format-99"), ("last.pt", "unknown-config-key"),
    ("last.pt", "other-arch"), ("healthy.pt", "empty"), ("healthy.pt", "three-classes"),
])
def test_resume_names_the_damaged_checkpoint(base_run, tmp_path, name, kind):
    run, target, said = _damaged(base_run, tmp_path, name, kind)
    proc = mammo("train", "--no-ui", "--resume", run, "--epochs", "2", "--force", cwd=tmp_path)
    assert_clean(proc, 2, str(target), said)


@pytest.mark.slow
@pytest.mark.parametrize("make, said", [
    (lambda p: p.write_text("resnet18 weights\n"), "not a PyTorch"),
    (lambda p: torch.save(torch.zeros(3), p), "Tensor"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.mkdir(), "folder"),
])
def test_a_bad_weights_file_is_named_before_training(tmp_path, make, said):
    weights = tmp_path / "weights.pth"
    make(weights)
    fast = [a for a in FAST if a != "--no-pretrained"]
    proc = mammo("train", "--demo", "--no-ui", *fast, "--weights", weights, "--outdir", tmp_path / "runs",
                 cwd=tmp_path)
    assert_clean(proc, 2, str(weights), said)


@pytest.mark.slow
def test_a_damaged_run_checkpoint_as_weights_is_named(base_run, tmp_path):
    _, target, said = _damaged(base_run, tmp_path, "best.pt", "format-99")
    fast = [a for a in FAST if a != "--no-pretrained"]
    proc = mammo("train", "--demo", "--no-ui", *fast, "--weights", target, "--outdir", tmp_path / "runs",
                 cwd=tmp_path)
    assert_clean(proc, 2, str(target), said)
