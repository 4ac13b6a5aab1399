"""The application layer: what the CLI and the screens both call (harlequin's interface module).

- requests.py: TrainRequest and RunResult, plain values both faces build and read;
- planning.py: dataset -> scan -> fingerprint -> plan (config + preprocessing), the one place a
  plan is made;
- launch.py: a run, a CV (and sweeps through drivers/sweep.py), "preset auto" planned first;
- fixes.py: suggestions applied to a config, and the command line that does the same;
- nextsteps.py: the ready-to-paste next / reproduce command lines.

Torch-free at import: the screens import it at start-up.
"""

from mammo_tui.app.launch import launch, run_cv, run_sweep, train
from mammo_tui.app.requests import RunResult, TrainRequest

__all__ = ["RunResult", "TrainRequest", "launch", "run_cv", "run_sweep", "train"]
