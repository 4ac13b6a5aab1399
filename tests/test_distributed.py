"""torchrun with 2 CPU processes (gloo): DDP training in lockstep, rank 0 alone writes the run."""

import os
import subprocess
import sys

import numpy as np

from mammo_tui.engine.distributed import DistInfo, DistributedWeightedSampler
from mammo_tui.runlog import read_events


def test_distributed_weighted_sampler_ranks_partition_one_balanced_draw():
    labels = np.array([0] * 5 + [1] * 50 + [2] * 200 + [3] * 45)
    weights = 1.0 / np.bincount(labels)[labels]
    ranks = [list(DistributedWeightedSampler(weights, len(labels), DistInfo(r, 2, r), seed=3)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 150
    drawn = labels[np.array(ranks[0] + ranks[1])]
    share = np.bincount(drawn, minlength=4) / len(drawn)
    assert np.all(np.abs(share - 0.25) < 0.08), share  # near-uniform classes from a 40:1 imbalance
    assert ranks[0] != ranks[1]


def test_torchrun_two_processes_train_and_only_rank_0_writes(tiny_demo, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mammo_tui",
         "train", "--no-ui", "--csv", tiny_demo.csv, "--dicom-root", tiny_demo.dicom_root, "--preset", "demo",
         "--epochs", "2", "--no-pretrained", "--img-size", "32", "--batch-size", "8", "--set", "augment=false",
         "--outdir", str(tmp_path), "--run-name", "ddp"],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode in (0, 3), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    events = read_events(tmp_path / "ddp")
    assert [e.type for e in events].count("run_started") == 1
    assert [e.epoch for e in events if e.type == "epoch"] == [1, 2]
    assert proc.stdout.count("epoch 2/2") == 1  # one printer, not one per rank
    started = events[0]
    assert started.steps_per_epoch == -(-started.n_train // 2 // 8)


def test_torchrun_cross_validation_agrees_on_one_folder_and_rank_0_alone_writes(tiny_demo, tmp_path):
    """No --run-name: the timestamped CV name and each fold's plan come from rank 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mammo_tui",
         "cv", "--no-ui", "--folds", "2", "--csv", tiny_demo.csv, "--dicom-root", tiny_demo.dicom_root,
         "--preset", "demo", "--epochs", "1", "--no-pretrained", "--img-size", "32", "--batch-size", "8",
         "--set", "augment=false", "--set", "max_batches_per_epoch=2", "--outdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode in (0, 3), proc.stdout[-3000:] + proc.stderr[-3000:]
    [cv_dir] = list(tmp_path.iterdir())
    assert sorted(p.name for p in cv_dir.iterdir()) == ["cv.json", "cv_summary.json", "fold-1", "fold-2"]
    for fold in ("fold-1", "fold-2"):
        assert [e.type for e in read_events(cv_dir / fold)].count("run_started") == 1
    assert proc.stdout.count("mean ± std over 2 folds") == 1  # one printer, not one per rank
