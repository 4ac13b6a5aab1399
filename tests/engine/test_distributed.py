"""torchrun with 2 CPU processes (gloo): DDP training in lockstep, rank 0 alone writes the run."""

import os
import subprocess
import sys

import numpy as np
import pytest

from mammo_tui.engine.distributed import DistInfo, DistributedWeightedSampler
from mammo_tui.runlog import read_events


def torchrun(command: str, tiny_demo, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=2 -m mammo_tui COMMAND` headless on the tiny demo (demo preset,
    from scratch, 32 px), writing under tmp_path; asserts that every rank ran to the end."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mammo_tui",
         command, "--no-ui", "--csv", tiny_demo.csv, "--dicom-root", tiny_demo.dicom_root, "--preset", "demo",
         "--no-pretrained", "--img-size", "32", "--set", "augment=false", "--outdir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=600, env=env)
    assert ranks_finished(proc), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def ranks_finished(proc) -> bool:
    """Every rank ran to the end: healthy (0) or collapsed (3). torchrun itself turns a rank's exit
    code 3 into its own 1 ("failed (exitcode: 3)"), which still means the run finished."""
    return proc.returncode in (0, 3) or (proc.returncode == 1 and "(exitcode: 3)" in proc.stderr
                                         and "Traceback" not in proc.stderr.split("(exitcode: 3)")[0])


def test_distributed_weighted_sampler_ranks_partition_one_balanced_draw():
    labels = np.array([0] * 5 + [1] * 50 + [2] * 200 + [3] * 45)
    weights = 1.0 / np.bincount(labels)[labels]
    ranks = [list(DistributedWeightedSampler(weights, len(labels), DistInfo(r, 2, r), seed=3)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 150
    drawn = labels[np.array(ranks[0] + ranks[1])]
    share = np.bincount(drawn, minlength=4) / len(drawn)
    assert np.all(np.abs(share - 0.25) < 0.08), share  # near-uniform classes from a 40:1 imbalance
    assert ranks[0] != ranks[1]


@pytest.mark.slow
def test_torchrun_two_processes_train_and_only_rank_0_writes(tiny_demo, tmp_path):
    proc = torchrun("train", tiny_demo, tmp_path, "--epochs", "2", "--batch-size", "8", "--run-name", "ddp")
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    events = read_events(tmp_path / "ddp")
    assert [e.type for e in events].count("run_started") == 1
    assert [e.epoch for e in events if e.type == "epoch"] == [1, 2]
    assert proc.stdout.count("epoch 2/2") == 1  # one printer, not one per rank
    started = events[0]
    share = -(-started.n_train // 2)  # each rank draws ceil(n / 2) images; full batches of 8 from that
    assert started.steps_per_epoch == (share // 8 if share > 8 else 1)


@pytest.mark.slow
def test_torchrun_cross_validation_agrees_on_one_folder_and_rank_0_alone_writes(tiny_demo, tmp_path):
    """No --run-name: the timestamped CV name and each fold's plan come from rank 0."""
    proc = torchrun("cv", tiny_demo, tmp_path, "--folds", "2", "--epochs", "1", "--batch-size", "8",
                    "--set", "max_batches_per_epoch=2")
    [cv_dir] = list(tmp_path.iterdir())
    assert sorted(p.name for p in cv_dir.iterdir()) == [".lock", "cv.json", "cv_summary.json", "fold-1", "fold-2"]
    for fold in ("fold-1", "fold-2"):
        assert [e.type for e in read_events(cv_dir / fold)].count("run_started") == 1
    assert proc.stdout.count("mean ± std over 2 folds") == 1  # one printer, not one per rank


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    """One gloo process: BatchNorm buffers that differ per rank, then the engine's lockstep helpers."""
    import json

    import torch
    import torch.distributed as dist

    from mammo_tui.engine import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    with torch.no_grad():  # what each rank's last training forward leaves behind: its own statistics
        model[1].running_mean.fill_(float(rank + 1))
        model[1].running_var.fill_(float(rank + 2))
    before = model[1].running_mean.tolist()
    distributed.sync_buffers(model)
    metrics = {"kappa": 0.354 if rank == 0 else 0.316}  # the numbers seen when ranks validated apart
    shared = distributed.broadcast(metrics if rank == 0 else None)
    with open(f"{out}/rank{rank}.json", "w") as handle:
        json.dump({"before": before, "after": model[1].running_mean.tolist(),
                   "var": model[1].running_var.tolist(), "decision": shared}, handle)
    dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_validate_with_rank_0s_statistics_and_share_its_numbers(tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_rank_main, args=(2, port, str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["before"] != ranks[1]["before"]  # they did differ
    assert ranks[0]["after"] == ranks[1]["after"] == [1.0] * 4
    assert ranks[0]["var"] == ranks[1]["var"] == [2.0] * 4
    assert ranks[0]["decision"] == ranks[1]["decision"] == {"kappa": 0.354}


@pytest.mark.slow
def test_torchrun_batch_larger_than_a_ranks_share_still_trains(tiny_demo, tmp_path):
    """81 images, ~65 for training, 2 ranks, batch 40: each rank draws 33 images. The loader used
    to cut batches of 40 from the whole set with drop_last, so every rank trained 0 batches and
    reported loss 0.0000."""
    torchrun("train", tiny_demo, tmp_path, "--epochs", "1", "--batch-size", "40", "--run-name", "big-batch")
    events = read_events(tmp_path / "big-batch")
    started = events[0]
    share = -(-started.n_train // 2)
    assert started.steps_per_epoch == 1
    [epoch] = [e for e in events if e.type == "epoch"]
    assert epoch.train_loss > 0.0
    warnings = [e.message for e in events if e.type == "log" and e.level == "warning"]
    assert any(f"each process's share of the training images ({share} of {started.n_train} on each of 2 "
               f"processes); using {share}" in w for w in warnings), warnings


@pytest.mark.slow
def test_torchrun_resume_of_a_locked_run_stops_every_rank_with_the_holder_named(tiny_demo, tmp_path):
    """Rank 0 is refused the lock: every rank must stop with the message, none may wait forever."""
    from mammo_tui.rundir import lock_run_dir

    torchrun("train", tiny_demo, tmp_path, "--run-name", "r", "--epochs", "1", "--batch-size", "8",
             "--set", "max_batches_per_epoch=2")
    lock = lock_run_dir(tmp_path / "r")  # this test process holds it, as a live trainer would
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mammo_tui",
             "train", "--no-ui", "--resume", str(tmp_path / "r"), "--set", "epochs=2"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        lock.release()
    assert proc.returncode != 0 and "is in use by another mammo-tui process" in proc.stderr, proc.stderr[-3000:]
    # both ranks stop with the message (before: rank 1 died in a collective with a gloo traceback);
    # torchrun's launcher then prints its own ChildFailedError traceback for any non-zero exit
    assert proc.stderr.count("is in use by another mammo-tui process") == 2, proc.stderr[-3000:]
    assert f"pid {os.getpid()}" in proc.stderr
