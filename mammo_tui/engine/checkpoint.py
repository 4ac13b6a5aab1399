"""Self-describing checkpoints, written atomically and loaded with weights_only=True."""

from __future__ import annotations

import errno
import math
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from mammo_tui.errors import MammoError, RunDirError
from mammo_tui.weights import TORCH_MAGIC

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


# what every checkpoint mammo-tui writes holds (best.pt, last.pt, healthy.pt), and the type of each
REQUIRED: dict[str, type] = {"model": dict, "config": dict, "arch": str, "class_names": list, "img_size": int,
                             "epoch": int}


class CheckpointError(MammoError):
    """A checkpoint or weights file that cannot be used: the message names the file and the problem."""


def read_torch_file(path: str | Path, what: str, error: type[MammoError] = CheckpointError) -> Any:
    """torch.load(weights_only=True), each way it can fail said in words; `what` starts the message
    (`checkpoint PATH`, `--weights PATH`). A pickle payload is refused, never executed."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what}: is a folder, not a file")
    if not path.exists():
        raise error(f"{what}: no such file")
    if not path.is_file():  # a device (/dev/null), a FIFO: reading it would block or give nothing
        raise error(f"{what}: not a regular file; pass the .pth/.pt file itself")
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
        if not head:
            raise error(f"{what}: the file is empty (0 bytes); it was cut off by a crash, a full disk or "
                        "a failed copy. Copy it again, or retrain.")
        if not head.startswith(TORCH_MAGIC):
            raise error(f"{what}: not a PyTorch file (it starts with {head!r}; torch.save writes a zip "
                        "archive). Pass a .pt/.pth file written by torch.save.")
        return torch.load(path, map_location="cpu", weights_only=True)
    except MammoError:
        raise
    except pickle.UnpicklingError as exc:
        raise error(f"refusing {what}: it is not a plain tensor/state file ({_first_line(exc)}). It may be "
                    "corrupt or tampered with; mammo-tui never unpickles arbitrary objects.") from None
    except OSError as exc:
        raise error(f"{what}: cannot read it ({exc.strerror or exc})") from None
    except Exception as exc:  # zip reader errors, EOFError, ...: a cut-off file or another format
        raise error(f"{what}: the file is truncated or not a PyTorch file ({_first_line(exc)}). Copy it "
                    "again, or retrain.") from None


def _first_line(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def _type_name(value: Any) -> str:
    return "a Tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def validate_checkpoint(checkpoint: Any, path: str | Path, error: type[MammoError] = CheckpointError,
                        what: str | None = None) -> dict[str, Any]:
    """Raise `error` naming the file unless this is a mammo-tui checkpoint this version reads: a dict,
    a known format_version, every REQUIRED key of its type, a valid config (config.from_mapping),
    a state dict of tensors, a known arch and an img_size in range."""
    from mammo_tui import config as config_mod

    what = what or f"checkpoint {path}"
    if not isinstance(checkpoint, dict):
        raise error(f"{what}: not a mammo-tui checkpoint: it holds {_type_name(checkpoint)}, not a dict of "
                    f"{', '.join(REQUIRED)}")
    version = checkpoint.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        said = "no format_version" if version is None else f"format_version {version!r}"
        raise error(f"{what}: {said}; this mammo-tui reads format_version {FORMAT_VERSION} (a checkpoint "
                    "written by another mammo-tui version, or not by mammo-tui). Use the version that wrote it.")
    for key, kind in REQUIRED.items():
        if key not in checkpoint:
            raise error(f"{what}: not a complete mammo-tui checkpoint: no {key!r}")
        if not isinstance(checkpoint[key], kind) or isinstance(checkpoint[key], bool):
            raise error(f"{what}: {key} is {_type_name(checkpoint[key])}, expected a {kind.__name__}")
    _check_state(checkpoint["model"], what, error)
    source = f"{what}, its config"
    try:
        config_mod.from_mapping(checkpoint["config"], source=source)
        config_mod.coerce("arch", checkpoint["arch"], source=what)
        config_mod.coerce("img_size", checkpoint["img_size"], source=what)
    except MammoError as exc:
        raise error(str(exc)) from None
    if checkpoint["config"].get("arch", checkpoint["arch"]) != checkpoint["arch"]:
        raise error(f"{what}: arch {checkpoint['arch']!r} differs from its config's arch "
                    f"{checkpoint['config']['arch']!r}; the file was edited or mixed up")
    names = checkpoint["class_names"]
    if len(names) < 2 or len(set(map(str, names))) != len(names):
        raise error(f"{what}: class_names {names!r} must be two or more distinct names")
    _check_normalization(checkpoint.get("normalization"), what, error)
    if checkpoint["epoch"] < 0:
        raise error(f"{what}: epoch {checkpoint['epoch']} is negative")
    return checkpoint


def _check_normalization(norm: Any, what: str, error: type[MammoError]) -> None:
    """The mean/std the model was trained under (optional): finite numbers, std > 0."""
    if norm is None:
        return
    try:
        mean, std = float(norm["mean"]), float(norm["std"])
    except (TypeError, KeyError, ValueError, IndexError):
        mean = std = math.nan
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise error(f"{what}: normalization {norm!r} must hold a finite mean and a std > 0")


def _check_state(state: dict, what: str, error: type[MammoError]) -> None:
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise error(f"{what}: its model is not a state dict (layer names -> tensors)")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A validated mammo-tui checkpoint (see validate_checkpoint); every reader goes through here."""
    return validate_checkpoint(read_torch_file(path, f"checkpoint {path}"), path)


def load_weights(module: torch.nn.Module, state: dict[str, Any], path: str | Path, what: str = "") -> None:
    """module.load_state_dict(state) strictly; a mismatch (another architecture, another number of
    classes) is said naming the file and the first differing tensors."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        details = " ".join(line.strip() for line in str(exc).splitlines()[1:4])
        target = what or getattr(module, "arch", type(module).__name__)
        raise CheckpointError(
            f"checkpoint {path}: its weights do not fit {target} ({details[:400]}). It was written for "
            "another architecture or number of classes, or by another mammo-tui version.") from None
