"""What tracking costs a run: the time spent in the MLflow / TensorBoard trackers per epoch, next to
the epoch's own time, measured on real runs.

Each run's events.jsonl (a copy of the run: the trackers write tracking.json into it) is replayed
through the same live tracker the trainer calls (tracking.sinks.make_tracker), timing every call.
Per epoch: epoch metrics + collapse check + checkpoint events; at the end: the finished event, which
uploads best.pt, summary.json and the report (a one-off, reported apart). The ratio is the median
per-epoch tracker time over the run's median epoch time (EpochMetrics.epoch_time_s), both from the
same runs; stores are local (a file store / an event folder on this disk).

    python benchmarks/bench_tracking.py RUN_OR_SWEEP_DIR [...]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammo_tui.rundir import group_kind, member_dirs  # noqa: E402
from mammo_tui.events import (BatchProgress, CheckpointSaved, CollapseStatus, ConfigChanged,  # noqa: E402
                              DataProgress, EpochMetrics, LogMessage, RUN_ENDS, RunStarted)
from mammo_tui.runlog import EVENTS_FILE, read_events  # noqa: E402
from mammo_tui.tracking.sinks import make_tracker  # noqa: E402
from mammo_tui.tracking.spec import parse_spec  # noqa: E402

PER_EPOCH = (EpochMetrics, CollapseStatus, CheckpointSaved, LogMessage, ConfigChanged)


def runs_of(paths: list[str]) -> list[Path]:
    runs = []
    for path in map(Path, paths):
        runs += [m for m in member_dirs(path) if (m / EVENTS_FILE).is_file()] if group_kind(path) else [path]
    return runs


def replay(run_dir: Path, kind: str, store: Path) -> tuple[list[float], float, list[float]]:
    """(tracker seconds per epoch, seconds for the end event, the run's epoch times)."""
    copy = store / "runs" / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    tracker = make_tracker(parse_spec(f"{kind}:{store / kind}"))
    per_epoch: dict[int, float] = {}
    end, epoch_times, current = 0.0, [], 0
    try:
        for event in read_events(copy):
            if isinstance(event, (BatchProgress, DataProgress)):
                continue  # the trainer hands these to trackers too; they return at once
            if isinstance(event, RunStarted):  # where the live trainer's run dir is
                event.run_dir = str(copy)
            t0 = time.perf_counter()
            tracker(event)
            spent = time.perf_counter() - t0
            if isinstance(event, EpochMetrics):
                current = event.epoch
                epoch_times.append(event.epoch_time_s)
            if isinstance(event, PER_EPOCH) and current:
                per_epoch[current] = per_epoch.get(current, 0.0) + spent
            elif isinstance(event, RUN_ENDS):
                end += spent
    finally:
        tracker.close()
    return list(per_epoch.values()), end, epoch_times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run, cross-validation or sweep folders")
    args = parser.parse_args()
    runs = runs_of(args.paths)
    print(f"{len(runs)} runs")
    print(f"{'tracker':12} {'ms/epoch (median)':>18} {'epoch s (median)':>17} {'ratio':>8} {'end of run (median)':>20}")
    for kind in ("mlflow", "tensorboard"):
        with tempfile.TemporaryDirectory() as tmp:
            spent, ends, epochs = [], [], []
            for number, run in enumerate(runs):
                store = Path(tmp) / str(number)
                per_epoch, end, epoch_times = replay(run, kind, store)
                spent += per_epoch
                ends.append(end)
                epochs += epoch_times
            cost, epoch = statistics.median(spent), statistics.median(epochs)
            print(f"{kind:12} {cost * 1000:18.1f} {epoch:17.2f} {cost / epoch:8.4f} {statistics.median(ends):19.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
