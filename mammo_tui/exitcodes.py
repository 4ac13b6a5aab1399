"""The process exit codes of `mammo-tui train`, `cv` and `sweep` (and of the runs a sweep starts)."""

from __future__ import annotations

EXIT_OK = 0  # trained and healthy
EXIT_FAILED = 1  # the run failed (an error while training, nothing usable)
EXIT_BAD_INPUT = 2  # refused before training: the user's input or environment (errors.MammoError)
EXIT_COLLAPSED = 3  # trained, but the best model collapsed
EXIT_INTERRUPTED = 130  # stopped (Ctrl-C, SIGTERM, the sweep's cancel): resumable
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: the reader of the output left (`| head`), as `seq 9 | head -1`
