"""Self-describing checkpoints, written atomically and loaded with weights_only=True."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from mammo_tui.errors import MammoError, RunDirError

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Temp file + fsync + rename: a reader (or a kill -9) never sees a partial checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format_version": FORMAT_VERSION, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; run dirs are shared with colleagues
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        Path(tmp).unlink(missing_ok=True)
        full = getattr(exc, "errno", None) == errno.ENOSPC or shutil.disk_usage(path.parent).free < 1 << 20
        reason = "the disk is full" if full else getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise RunDirError(
            f"cannot write checkpoint {path}: {reason}. The previous checkpoint in that folder is "
            f"intact; free space or pass --outdir on another disk, then --resume the run."
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """weights_only=True: a checkpoint carrying a pickle payload is refused, not executed."""
    path = Path(path)
    if not path.is_file():
        raise MammoError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MammoError(
            f"refusing checkpoint {path}: it is not a plain tensor/state checkpoint "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}). It may be corrupt or "
            "tampered with; mammo-tui never unpickles arbitrary objects."
        ) from None
