"""A parallel sweep (--jobs / --gpus): the variant / grid runs trained as `mammo-tui train --no-ui`
subprocesses, one per slot (CUDA_VISIBLE_DEVICES=<gpu> each, or a share of the CPU cores), each in
its own session with its output in the sweep folder's logs/. A stop sends each one SIGTERM once:
it saves its state as interrupted and exits (resumable)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

from mammo_tui.cli_process import PARENT_ENV
from mammo_tui.drivers.sweep_commands import LOGS_DIR, member_command
from mammo_tui.drivers.sweep_spec import QueuedRun
from mammo_tui.errors import ConfigError, MammoError
from mammo_tui.exitcodes import EXIT_BAD_INPUT, EXIT_COLLAPSED, EXIT_INTERRUPTED, EXIT_OK
from mammo_tui.rundir import read_summary

STOP_WAIT_S = 120.0  # how long a subprocess run gets to save its state after SIGTERM


def slots(job: Any) -> list[str | None]:
    """One entry per parallel run: a GPU id (CUDA_VISIBLE_DEVICES) or None (CPU); [] = in process.
    job: the drivers.sweep.SweepJob."""
    gpus = [g.strip() for g in job.gpus if g.strip()]
    jobs = job.jobs or 1
    if jobs < 1:
        raise ConfigError(f"--jobs must be 1 or more; got {jobs}")
    cpus = os.cpu_count() or 1
    if jobs > cpus and not gpus:  # each CPU run uses a core at least: more only thrash
        raise ConfigError(f"--jobs {jobs}: this machine has {cpus} CPU cores; at most {cpus} runs in parallel")
    if gpus:
        _check_gpus(gpus)
    if not gpus and jobs > 1:
        import torch

        if torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
            gpus = ids or [str(i) for i in range(torch.cuda.device_count())]
    if gpus:
        count = jobs if jobs > 1 else len(gpus)
        return [gpus[i % len(gpus)] for i in range(count)]
    return [None] * jobs if jobs > 1 else []


def _check_gpus(gpus: list[str]) -> None:
    """--gpus names GPUs that exist: ids (0, 1), or CUDA's GPU- / MIG- UUIDs. Runs asked for on a
    GPU used to train on the CPU without a word when the id was wrong or the box had none."""
    bad = [g for g in gpus if not (g.isdigit() or g.startswith(("GPU-", "MIG-")))]
    if bad:
        raise ConfigError(f"--gpus: {', '.join(map(repr, bad))} is not a GPU id; give ids separated by "
                          "commas, e.g. --gpus 0,1 (nvidia-smi lists them)")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"--gpus {','.join(gpus)}: no CUDA GPU is visible here; drop --gpus (use --jobs N "
                          "for parallel runs on the CPU)")
    count = torch.cuda.device_count()
    missing = [g for g in gpus if g.isdigit() and int(g) >= count and not os.environ.get("CUDA_VISIBLE_DEVICES")]
    if missing:
        raise ConfigError(f"--gpus: no GPU {', '.join(missing)} here ({count} visible: ids 0-{count - 1})")


def last_error(log: Path) -> str:
    """The last line of a run's log that names an error (else its last line)."""
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"see {log}"
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [f"see {log}"])[-1]


class SubprocessPool:
    """Trains a queue over `slots` (see slots()). sweep: the running sweep (drivers.sweep), which
    owns the folder (its `folder`), the cancel event, the --track specs and the sweep events
    (`started` / `finished` for each member run)."""

    def __init__(self, sweep: Any, slots: list[str | None]) -> None:
        self.sweep, self.slots = sweep, slots
        self.folder = sweep.folder

    def run(self, queue: list[QueuedRun]) -> bool:
        """Every run of the queue trained (or kept); False when the sweep was stopped."""
        sweep, slots = self.sweep, self.slots
        pending = deque(queue)
        running: dict[int, tuple[subprocess.Popen, Any, QueuedRun]] = {}
        try:
            while pending or running:
                if sweep.cancel.is_set():
                    self._stop_all(running)
                    return False
                for slot in range(len(slots)):
                    while slot not in running and pending:
                        run = pending.popleft()
                        state, summary = self.folder.state(run)
                        sweep.started(run, state == "kept")
                        if state == "kept":
                            sweep.finished(run, summary.get("status", "unknown"), summary, kept=True)
                            continue
                        proc, log = self._spawn(run, state, slots[slot], len(slots))
                        running[slot] = (proc, log, run)
                for slot, (proc, log, run) in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    log.close()
                    del running[slot]
                    self._reap(run, code)
                time.sleep(0.2)
        except BaseException:
            self._stop_all(running)
            raise
        return True

    def _command(self, run: QueuedRun, state: str) -> list[str]:
        folder = self.folder
        return member_command(folder.sweep_dir, run.run,
                              None if state == "resume" else folder.member_config(run).to_dict(),
                              dataset=folder.dataset, demo=folder.demo, demo_size=folder.demo_size,
                              skip_bad_rows=folder.skip_bad_rows, preset=folder.preset, track=self.sweep.job.track)

    def _spawn(self, run: QueuedRun, state: str, gpu: str | None, slots: int) -> tuple[subprocess.Popen, Any]:
        sweep_dir = self.folder.sweep_dir
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        else:  # N runs on the CPUs: a share of the cores each, not N x all of them
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // slots)))
        env["PYTHONUNBUFFERED"] = "1"
        env[PARENT_ENV] = str(os.getpid())  # the run stops (saved) if the sweep dies, even by kill -9
        (sweep_dir / LOGS_DIR).mkdir(exist_ok=True)
        log = open(sweep_dir / LOGS_DIR / f"{run.run}.log", "a", encoding="utf-8")
        # its own session: a Ctrl-C in the terminal reaches only the sweep, which stops each run once
        proc = subprocess.Popen(self._command(run, state), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        return proc, log

    def _reap(self, run: QueuedRun, code: int) -> None:
        sweep_dir = self.folder.sweep_dir
        summary = read_summary(sweep_dir / run.run)
        if code == EXIT_BAD_INPUT and not summary:  # refused before it trained (bad dataset, config, weights)
            raise MammoError(f"run {run.run} refused to start: {last_error(sweep_dir / LOGS_DIR / f'{run.run}.log')}")
        status = (summary or {}).get("status") or ("failed" if code else "unknown")
        if code not in (EXIT_OK, EXIT_COLLAPSED) and status in ("running", "unknown"):
            status = "interrupted" if code == EXIT_INTERRUPTED else "failed"
        self.sweep.finished(run, status, summary, kept=False)

    @staticmethod
    def _stop_all(running: dict[int, tuple[subprocess.Popen, Any, QueuedRun]]) -> None:
        """SIGTERM once: each run saves its state as interrupted and exits (resumable)."""
        for proc, _log, _run in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for proc, log, _run in running.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        running.clear()
